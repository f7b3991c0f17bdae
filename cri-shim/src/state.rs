//! Sandbox and container records, persisted as one JSON file each under the state directory
//! (`sandboxes/<id>.json`, `containers/<id>.json`), written atomically (temp, fsync, rename,
//! fsync dir) and loaded on start. List calls are served from the in-memory copy.

use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Errors reading or writing state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file could not be read or written.
    #[error("{op} {path}")]
    Io {
        /// What was done.
        op: &'static str,
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A record could not be encoded or decoded.
    #[error("record {path}")]
    Json {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// An id prefix matched more than one record.
    #[error("id prefix {0:?} is ambiguous")]
    Ambiguous(String),
}

/// Lifecycle state of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    /// VM running and agent configured.
    Ready,
    /// Stopped, or its VM died.
    NotReady,
}

/// Lifecycle state of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Its process runs.
    Running,
    /// Its process ended (or its VM went away).
    Exited,
    /// Unknown (e.g. its agent unreachable).
    Unknown,
}

/// The VMM process of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmmInfo {
    /// Process id.
    pub pid: i32,
    /// Process start time (field 22 of /proc/PID/stat), to tell a reused pid apart.
    pub start_time: u64,
    /// Control API socket.
    pub api_socket: PathBuf,
    /// Hybrid vsock socket.
    pub vsock_socket: PathBuf,
    /// Guest console file.
    pub console: PathBuf,
    /// Guest RAM, MiB.
    pub mem_mib: u64,
    /// Restored from a template (false: cold boot).
    pub from_template: bool,
    /// Number of empty disk slots the VM was created with.
    pub disk_slots: usize,
    /// Number of empty read-write volume slots after them (0 for VMs started before they
    /// existed).
    #[serde(default)]
    pub volume_slots: usize,
}

/// An image disk attached to a sandbox VM and mounted in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachedImage {
    /// Slot index.
    pub slot: usize,
    /// Image id (config digest).
    pub image_id: String,
    /// Disk serial seen by the guest.
    pub serial: String,
    /// Guest mount point (overlay lower dir).
    pub mount_point: String,
}

/// A persistent volume's block image attached to a sandbox VM and mounted in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachedVolume {
    /// Slot index (a read-write volume slot, or a read-only image slot for a read-only claim).
    pub slot: usize,
    /// Host image file.
    pub image: PathBuf,
    /// Disk serial seen by the guest.
    pub serial: String,
    /// Guest mount point.
    pub mount_point: String,
    /// Filesystem type.
    pub fs_type: String,
    /// Attached and mounted read-only (a read-only claim).
    pub read_only: bool,
}

/// One pod sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxRecord {
    /// 64 hex chars.
    pub id: String,
    /// The CRI config as received (labels and annotations byte-for-byte).
    pub config: PodSandboxConfig,
    /// Runtime handler asked for.
    pub runtime_handler: String,
    /// State.
    pub state: SandboxState,
    /// Creation time, ns since the epoch.
    pub created_at: i64,
    /// Pod IP.
    pub ip: Option<String>,
    /// The VMM, while one runs.
    pub vmm: Option<VmmInfo>,
    /// Image disks attached.
    pub images: Vec<AttachedImage>,
    /// Persistent volume disks attached (absent in records written before they existed).
    #[serde(default)]
    pub volumes: Vec<AttachedVolume>,
}

/// One container.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerRecord {
    /// 64 hex chars.
    pub id: String,
    /// Its sandbox.
    pub sandbox_id: String,
    /// The CRI config as received.
    pub config: ContainerConfig,
    /// Image as requested.
    pub image: String,
    /// Image id (config digest).
    pub image_ref: String,
    /// State.
    pub state: ContainerState,
    /// ns since the epoch.
    pub created_at: i64,
    /// ns since the epoch (0 = not started).
    pub started_at: i64,
    /// ns since the epoch (0 = not finished).
    pub finished_at: i64,
    /// Exit code once exited.
    pub exit_code: i32,
    /// Completed, Error, OOMKilled.
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// Absolute log path, if the sandbox has a log directory.
    pub log_path: Option<PathBuf>,
}

/// The persisted records and their in-memory copy.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    sandboxes: Mutex<HashMap<String, SandboxRecord>>,
    containers: Mutex<HashMap<String, ContainerRecord>>,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `data` to `path` atomically: temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(data).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io("rename", path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))?;
    Ok(())
}

fn load_dir<T: for<'de> Deserialize<'de>>(dir: &Path) -> Result<Vec<T>, StateError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io("read", dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io("read", dir))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let data = std::fs::read(&path).map_err(io("read", &path))?;
        match serde_json::from_slice(&data) {
            Ok(rec) => out.push(rec),
            Err(source) => {
                // A record we cannot read is kept aside, not deleted, and not fatal.
                tracing::warn!("ignoring unreadable record {}: {source}", path.display());
            }
        }
    }
    Ok(out)
}

/// Finds the single key equal to or starting with `prefix`.
fn lookup<'a, V>(map: &'a HashMap<String, V>, prefix: &str) -> Result<Option<&'a V>, StateError> {
    if prefix.is_empty() {
        return Ok(None);
    }
    if let Some(v) = map.get(prefix) {
        return Ok(Some(v));
    }
    let mut found = map.iter().filter(|(k, _)| k.starts_with(prefix));
    match (found.next(), found.next()) {
        (Some((_, v)), None) => Ok(Some(v)),
        (None, _) => Ok(None),
        _ => Err(StateError::Ambiguous(prefix.to_string())),
    }
}

impl StateStore {
    /// Opens (creating) the state directory and loads every record.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StateError> {
        let dir = dir.into();
        for sub in ["sandboxes", "containers"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(io("create", &d))?;
        }
        let sandboxes = load_dir::<SandboxRecord>(&dir.join("sandboxes"))?
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        let containers = load_dir::<ContainerRecord>(&dir.join("containers"))?
            .into_iter()
            .map(|c| (c.id.clone(), c))
            .collect();
        Ok(Self {
            dir,
            sandboxes: Mutex::new(sandboxes),
            containers: Mutex::new(containers),
        })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Directory of one sandbox's runtime files (sockets, console).
    /// (Named by the first 16 hex digits of the id: socket paths must stay under 108 bytes.)
    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.dir.join("pods").join(&id[..16.min(id.len())])
    }

    fn sandbox_file(&self, id: &str) -> PathBuf {
        self.dir.join("sandboxes").join(format!("{id}.json"))
    }

    fn container_file(&self, id: &str) -> PathBuf {
        self.dir.join("containers").join(format!("{id}.json"))
    }

    /// Stores (persists, then caches) a sandbox record.
    pub fn put_sandbox(&self, rec: &SandboxRecord) -> Result<(), StateError> {
        let path = self.sandbox_file(&rec.id);
        let data = serde_json::to_vec_pretty(rec).map_err(|source| StateError::Json {
            path: path.clone(),
            source,
        })?;
        let mut map = self.sandboxes.lock().unwrap_or_else(|p| p.into_inner());
        write_atomic(&path, &data)?;
        map.insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    /// Stores a container record.
    pub fn put_container(&self, rec: &ContainerRecord) -> Result<(), StateError> {
        let path = self.container_file(&rec.id);
        let data = serde_json::to_vec_pretty(rec).map_err(|source| StateError::Json {
            path: path.clone(),
            source,
        })?;
        let mut map = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        write_atomic(&path, &data)?;
        map.insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    /// Updates a container record in place (no-op when it is gone).
    pub fn update_container(
        &self,
        id: &str,
        f: impl FnOnce(&mut ContainerRecord),
    ) -> Result<Option<ContainerRecord>, StateError> {
        let Some(mut rec) = self.container(id)? else {
            return Ok(None);
        };
        f(&mut rec);
        self.put_container(&rec)?;
        Ok(Some(rec))
    }

    /// Updates a sandbox record in place (no-op when it is gone).
    pub fn update_sandbox(
        &self,
        id: &str,
        f: impl FnOnce(&mut SandboxRecord),
    ) -> Result<Option<SandboxRecord>, StateError> {
        let Some(mut rec) = self.sandbox(id)? else {
            return Ok(None);
        };
        f(&mut rec);
        self.put_sandbox(&rec)?;
        Ok(Some(rec))
    }

    /// A sandbox by id or unique id prefix.
    pub fn sandbox(&self, id: &str) -> Result<Option<SandboxRecord>, StateError> {
        let map = self.sandboxes.lock().unwrap_or_else(|p| p.into_inner());
        Ok(lookup(&map, id)?.cloned())
    }

    /// A container by id or unique id prefix.
    pub fn container(&self, id: &str) -> Result<Option<ContainerRecord>, StateError> {
        let map = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        Ok(lookup(&map, id)?.cloned())
    }

    /// Every sandbox.
    pub fn sandboxes(&self) -> Vec<SandboxRecord> {
        let map = self.sandboxes.lock().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }

    /// Every container.
    pub fn containers(&self) -> Vec<ContainerRecord> {
        let map = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }

    /// Containers of one sandbox.
    pub fn containers_of(&self, sandbox_id: &str) -> Vec<ContainerRecord> {
        let map = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        map.values()
            .filter(|c| c.sandbox_id == sandbox_id)
            .cloned()
            .collect()
    }

    /// Whether a sandbox (other than `except`) uses this metadata name/namespace/uid/attempt.
    pub fn sandbox_name_taken(&self, name: &str) -> Option<String> {
        let map = self.sandboxes.lock().unwrap_or_else(|p| p.into_inner());
        map.values()
            .find(|s| sandbox_name(&s.config) == name)
            .map(|s| s.id.clone())
    }

    /// Deletes a sandbox record (and file); missing is fine.
    pub fn delete_sandbox(&self, id: &str) -> Result<(), StateError> {
        let path = self.sandbox_file(id);
        let mut map = self.sandboxes.lock().unwrap_or_else(|p| p.into_inner());
        remove_file(&path)?;
        map.remove(id);
        Ok(())
    }

    /// Deletes a container record (and file); missing is fine.
    pub fn delete_container(&self, id: &str) -> Result<(), StateError> {
        let path = self.container_file(id);
        let mut map = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        remove_file(&path)?;
        map.remove(id);
        Ok(())
    }
}

fn remove_file(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", path)(e)),
    }
}

/// containerd-style unique name of a sandbox: `name_namespace_uid_attempt`.
pub fn sandbox_name(config: &PodSandboxConfig) -> String {
    match &config.metadata {
        Some(m) => format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt),
        None => String::new(),
    }
}

/// A fresh random 64-hex-char id.
pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes);
    hex::encode(bytes)
}

/// Fills `buf` from the kernel's random pool.
pub fn fill_random(buf: &mut [u8]) {
    use std::io::Read;
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .is_ok();
    if !ok {
        // Fallback: time and pid mixed; ids only need to be unique on this node.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ u128::from(std::process::id());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed.rotate_left((i as u32 * 7) % 128) & 0xff) as u8;
        }
    }
}

/// Now, ns since the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::PodSandboxMetadata;

    fn sandbox(id: &str) -> SandboxRecord {
        let mut config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u1".into(),
                attempt: 0,
            }),
            ..Default::default()
        };
        config
            .labels
            .insert("weird key/é".into(), "value \"quoted\"\n\u{1F600}".into());
        config.annotations.insert("a".into(), "  spaced  ".into());
        SandboxRecord {
            id: id.into(),
            config,
            runtime_handler: String::new(),
            state: SandboxState::Ready,
            created_at: now_ns(),
            ip: Some("10.88.0.2".into()),
            vmm: None,
            images: vec![],
            volumes: vec![],
        }
    }

    #[test]
    fn volumes_persist_and_old_records_without_them_load() {
        let dir = tempfile::tempdir().unwrap();
        let id = new_id();
        let mut rec = sandbox(&id);
        rec.vmm = Some(VmmInfo {
            pid: 1,
            start_time: 2,
            api_socket: "/a".into(),
            vsock_socket: "/v".into(),
            console: "/c".into(),
            mem_mib: 128,
            from_template: true,
            disk_slots: 4,
            volume_slots: 4,
        });
        rec.volumes.push(AttachedVolume {
            slot: 4,
            image: "/pv/a.img".into(),
            serial: "pv-0123456789abcdef".into(),
            mount_point: "/run/kennel/pv/pv-0123456789abcdef".into(),
            fs_type: "ext4".into(),
            read_only: false,
        });
        {
            let s = StateStore::open(dir.path()).unwrap();
            s.put_sandbox(&rec).unwrap();
        }
        let got = StateStore::open(dir.path())
            .unwrap()
            .sandbox(&id)
            .unwrap()
            .unwrap();
        assert_eq!(got.volumes, rec.volumes);
        assert_eq!(got.vmm, rec.vmm);
        // A record written before volumes existed: no `volumes`, no `volume_slots`.
        let path = dir.path().join("sandboxes").join(format!("{id}.json"));
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("volumes");
        v["vmm"].as_object_mut().unwrap().remove("volume_slots");
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let old = StateStore::open(dir.path())
            .unwrap()
            .sandbox(&id)
            .unwrap()
            .expect("an old record still loads");
        assert!(old.volumes.is_empty());
        assert_eq!(old.vmm.unwrap().volume_slots, 0);
    }

    #[test]
    fn records_survive_a_reload_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let id = new_id();
        assert_eq!(id.len(), 64);
        {
            let s = StateStore::open(dir.path()).unwrap();
            s.put_sandbox(&sandbox(&id)).unwrap();
        }
        let s = StateStore::open(dir.path()).unwrap();
        let got = s.sandbox(&id).unwrap().unwrap();
        assert_eq!(got.config, sandbox(&id).config);
        assert_eq!(
            s.sandbox(&id[..12]).unwrap().unwrap().id,
            id,
            "prefix lookup"
        );
        assert!(s.sandbox("zz").unwrap().is_none());
        s.delete_sandbox(&id).unwrap();
        s.delete_sandbox(&id).unwrap();
        assert!(StateStore::open(dir.path())
            .unwrap()
            .sandbox(&id)
            .unwrap()
            .is_none());
        // No temp files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sandboxes"))
            .unwrap()
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn ambiguous_prefix_is_an_error_and_corrupt_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        s.put_sandbox(&sandbox(&format!("ab{}", "0".repeat(62))))
            .unwrap();
        s.put_sandbox(&sandbox(&format!("ab{}", "1".repeat(62))))
            .unwrap();
        assert!(matches!(s.sandbox("ab"), Err(StateError::Ambiguous(_))));
        std::fs::write(dir.path().join("sandboxes/bad.json"), b"{not json").unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        assert_eq!(s.sandboxes().len(), 2);
    }
}
