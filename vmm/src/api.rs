//! The control API of a running kennel-vmm: JSON requests, one per line, on a Unix socket; each
//! gets one JSON line back. Bad requests get `{"ok": false, "error": "..."}` naming the problem.
//!
//! ```text
//! {"op": "status"}
//! {"op": "attach_disk", "slot": 2, "path": "/var/lib/kennel/images/abc.ext4", "serial": "img-abc"}
//! {"op": "detach_disk", "slot": 2}
//! {"op": "pause"}   {"op": "resume"}   {"op": "shutdown"}
//! {"op": "snapshot", "dir": "/var/lib/kennel/snap"}     (the VM must be paused)
//! ```

use crate::devices::{StopReason, StopSender};
use crate::vcpu::VcpuControl;
use crate::virtio::block::BlockHandle;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Longest request line accepted.
const MAX_LINE: usize = 64 * 1024;

/// A request.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// VM state and disks.
    Status,
    /// Sets (or replaces) the backing file of a disk slot and tells the guest.
    AttachDisk {
        /// Slot index (order of `--disk`).
        slot: usize,
        /// Image file.
        path: PathBuf,
        /// Serial the guest sees (at most 20 bytes).
        #[serde(default)]
        serial: String,
    },
    /// Empties a disk slot.
    DetachDisk {
        /// Slot index.
        slot: usize,
    },
    /// Stops the vCPUs.
    Pause,
    /// Restarts the vCPUs.
    Resume,
    /// Stops the VM; the VMM exits with status 0.
    Shutdown,
    /// Saves the paused VM into a directory.
    Snapshot {
        /// Target directory (created if needed).
        dir: PathBuf,
    },
}

/// One disk in a status reply.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskStatus {
    /// Slot index.
    pub slot: usize,
    /// Backing file.
    pub path: Option<PathBuf>,
    /// Serial.
    pub serial: String,
    /// Read-only slot.
    pub read_only: bool,
    /// Capacity in 512-byte sectors.
    pub sectors: u64,
}

/// A reply.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `running` or `paused` (status only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Milliseconds since the VMM started (status only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<u64>,
    /// Disk slots (status only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskStatus>,
}

impl Response {
    fn ok() -> Self {
        Self {
            ok: true,
            ..Default::default()
        }
    }
    fn error(msg: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(msg.into()),
            ..Default::default()
        }
    }
}

/// What the API acts on.
#[derive(Clone)]
pub struct Control {
    /// Disk slots.
    pub disks: Vec<BlockHandle>,
    /// vCPU pause/resume.
    pub vcpus: Arc<VcpuControl>,
    /// Number of vCPUs.
    pub vcpu_count: usize,
    /// Stops the VM.
    pub stop: StopSender,
    /// VMM start.
    pub started: Instant,
    /// Snapshot access.
    pub snapshotter: crate::snapshot::Snapshotter,
}

impl Control {
    /// Executes one request.
    pub fn handle(&self, req: Request) -> Response {
        match req {
            Request::Status => {
                let disks = self
                    .disks
                    .iter()
                    .enumerate()
                    .map(|(slot, h)| {
                        h.with(|d| DiskStatus {
                            slot,
                            path: d.path().map(Path::to_path_buf),
                            serial: d.serial(),
                            read_only: d.read_only(),
                            sectors: d.sectors(),
                        })
                    })
                    .collect();
                let state = if self.vcpus.is_paused() {
                    "paused"
                } else {
                    "running"
                };
                Response {
                    state: Some(state.into()),
                    uptime_ms: Some(self.started.elapsed().as_millis() as u64),
                    disks,
                    ..Response::ok()
                }
            }
            Request::AttachDisk { slot, path, serial } => match self.disks.get(slot) {
                None => Response::error(format!(
                    "no disk slot {slot} (the VM has {} slots)",
                    self.disks.len()
                )),
                Some(h) => match h.update(|d| d.set_backing(&path, &serial)) {
                    Ok(()) => Response::ok(),
                    Err(e) => Response::error(error_chain(&e)),
                },
            },
            Request::DetachDisk { slot } => match self.disks.get(slot) {
                None => Response::error(format!("no disk slot {slot}")),
                Some(h) => {
                    h.update(|d| d.clear());
                    Response::ok()
                }
            },
            Request::Pause => {
                if self.vcpus.pause(self.vcpu_count) {
                    Response::ok()
                } else {
                    Response::error("vCPUs did not stop within 5 s")
                }
            }
            Request::Resume => {
                self.vcpus.resume();
                Response::ok()
            }
            Request::Snapshot { dir } => {
                if !self.vcpus.is_paused() {
                    return Response::error("pause the VM before taking a snapshot");
                }
                match self.snapshotter.save(&dir) {
                    Ok(()) => Response::ok(),
                    Err(e) => Response::error(error_chain(&e)),
                }
            }
            Request::Shutdown => {
                let _ = self
                    .stop
                    .send(StopReason::Host("shutdown requested over the API".into()));
                Response::ok()
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        cur = s.source();
    }
    msg
}

/// Parses one request line into a reply (for bad input) or a request.
pub fn parse(line: &str) -> Result<Request, Response> {
    serde_json::from_str(line).map_err(|e| Response::error(format!("invalid request: {e}")))
}

/// Serves the API on `path` (replacing a stale socket) from a background thread.
pub fn serve(path: &Path, control: Control) -> std::io::Result<()> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            // Connection threads inherit the filter.
            if let Err(e) = crate::seccomp::install(crate::seccomp::ThreadKind::Api) {
                tracing::error!("control API stops: {}", e.chain());
                return;
            }
            for stream in listener.incoming().flatten() {
                let control = control.clone();
                let _ = std::thread::Builder::new()
                    .name("api-conn".into())
                    .spawn(move || serve_conn(stream, &control));
            }
        })?;
    Ok(())
}

fn serve_conn(stream: UnixStream, control: &Control) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE as u64).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let reply = if !line.ends_with('\n') && line.len() >= MAX_LINE {
            Response::error(format!("request longer than {MAX_LINE} bytes"))
        } else if line.trim().is_empty() {
            continue;
        } else {
            match parse(line.trim()) {
                Ok(req) => control.handle(req),
                Err(reply) => reply,
            }
        };
        let mut text = serde_json::to_string(&reply).unwrap_or_else(|_| "{\"ok\":false}".into());
        text.push('\n');
        if out.write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_are_named() {
        assert_eq!(parse(r#"{"op":"status"}"#).unwrap(), Request::Status);
        assert_eq!(
            parse(r#"{"op":"attach_disk","slot":1,"path":"/x"}"#).unwrap(),
            Request::AttachDisk {
                slot: 1,
                path: "/x".into(),
                serial: String::new()
            }
        );
        let e = parse(r#"{"op":"attach_disk","slot":1}"#).unwrap_err();
        assert!(e.error.unwrap().contains("path"));
        let e = parse(r#"{"op":"explode"}"#).unwrap_err();
        assert!(e.error.unwrap().contains("explode"));
        let e = parse("not json").unwrap_err();
        assert!(e.error.unwrap().starts_with("invalid request"));
    }

    /// A snapshotter over a real (never started) KVM VM.
    fn snapshotter() -> crate::snapshot::Snapshotter {
        use crate::devices::serial::SerialConsole;
        use std::sync::Mutex;
        let vm = kvm_ioctls::Kvm::new().unwrap().create_vm().unwrap();
        let irq = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
        crate::snapshot::Snapshotter {
            vm: Arc::new(vm),
            mem: crate::memory::create(16).unwrap(),
            vcpus: Arc::new(VcpuControl::default()),
            vcpu_count: 0,
            transports: vec![],
            console: Arc::new(Mutex::new(SerialConsole::new(
                irq,
                Box::new(std::io::sink()),
            ))),
            msrs: vec![],
            kernel: crate::snapshot::KernelIdentity::Sha256(String::new()),
            mem_mib: 16,
            profile: crate::profile::Profile::Full,
            cmdline: String::new(),
        }
    }

    #[test]
    fn snapshot_needs_a_paused_vm() {
        let (tx, _rx) = std::sync::mpsc::channel();
        let c = Control {
            disks: vec![],
            vcpus: Arc::new(VcpuControl::default()),
            vcpu_count: 0,
            stop: tx,
            started: Instant::now(),
            snapshotter: snapshotter(),
        };
        let r = c.handle(Request::Snapshot {
            dir: "/tmp/x".into(),
        });
        assert!(r.error.unwrap().contains("pause"));
    }

    #[test]
    fn attach_to_a_missing_slot_or_file_is_an_error() {
        use crate::virtio::block::{Block, Disk};
        let block = Block::new(Disk::empty(true));
        let (tx, _rx) = std::sync::mpsc::channel();
        let c = Control {
            disks: vec![block.handle()],
            vcpus: Arc::new(VcpuControl::default()),
            vcpu_count: 0,
            stop: tx,
            started: Instant::now(),
            snapshotter: snapshotter(),
        };
        let r = c.handle(Request::AttachDisk {
            slot: 5,
            path: "/x".into(),
            serial: String::new(),
        });
        assert!(r.error.unwrap().contains("no disk slot 5"));
        let r = c.handle(Request::AttachDisk {
            slot: 0,
            path: "/nonexistent.img".into(),
            serial: String::new(),
        });
        assert!(r.error.unwrap().contains("/nonexistent.img"));
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![0u8; 4096]).unwrap();
        let r = c.handle(Request::AttachDisk {
            slot: 0,
            path: f.path().into(),
            serial: "img".into(),
        });
        assert!(r.ok, "{r:?}");
        let s = c.handle(Request::Status);
        assert_eq!(s.disks[0].sectors, 8);
        assert_eq!(s.disks[0].serial, "img");
        assert_eq!(s.state.as_deref(), Some("running"));
    }
}
