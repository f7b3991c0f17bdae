//! Pod templates: a VM booted once per (kernel, initramfs, memory size, vCPUs, device layout),
//! paused when its guest signals readiness (a boot marker) and snapshotted; every pod sandbox
//! is then a restore of it. Cached under `<cache>/<key>/`, where the key hashes every input.

use super::{file_sha256, SnapshotError, VERSION};
use crate::config::{Console, DiskConfig, NetConfig, VmConfig, VsockConfig};
use crate::devices::StopReason;
use crate::profile::Profile;
use crate::vm::{Vm, VmError};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// File with a template's description, beside its snapshot.
pub const INFO_FILE: &str = "template.json";
/// The CID the template VM boots with (each restore gets its own).
pub const TEMPLATE_CID: u64 = 3;

/// Errors building or managing templates.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The VM could not boot.
    #[error("template VM")]
    Vm(#[from] VmError),
    /// Saving failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The guest stopped or never signalled readiness.
    #[error("template guest did not become ready: {0}")]
    NotReady(String),
    /// A disk slot of a template must be empty.
    #[error("template disk slots must be empty (got a path for slot {0})")]
    DiskWithPath(usize),
    /// File system trouble in the cache.
    #[error("template cache {path}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// No such template.
    #[error("no template {0} in the cache")]
    Unknown(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TemplateError + '_ {
    move |source| TemplateError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What a template is built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Initramfs whose init signals readiness with `ready_marker`.
    pub initrd: PathBuf,
    /// Guest RAM in MiB (a template per size keeps the pod's limit exact).
    pub mem_mib: u64,
    /// vCPUs.
    pub vcpus: u8,
    /// Empty disk slots (read-only or not) that pods fill after restore.
    pub disks: Vec<DiskConfig>,
    /// Unplugged NICs (after the disks) that each restore plugs into its pod's tap.
    #[serde(default)]
    pub nics: u8,
    /// Marker value the guest writes when it is ready to be snapshotted.
    pub ready_marker: u8,
    /// Extra kernel arguments.
    pub cmdline: Vec<String>,
    /// Host profile.
    pub profile: Profile,
}

/// A cached template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateInfo {
    /// Cache key.
    pub key: String,
    /// Inputs.
    pub spec: TemplateSpec,
    /// Seconds from VMM start to readiness when it was built (the cold boot).
    pub boot_seconds: f64,
}

impl TemplateSpec {
    /// The cache key: a hash of the kernel and initramfs contents and every other input.
    pub fn key(&self) -> Result<String, TemplateError> {
        let mut h = sha2::Sha256::new();
        h.update(format!("kennel-template v{VERSION}\n"));
        h.update(file_sha256(&self.kernel)?);
        h.update(file_sha256(&self.initrd)?);
        let mut spec = self.clone();
        spec.kernel = PathBuf::new();
        spec.initrd = PathBuf::new();
        spec.profile = spec.profile.resolve();
        h.update(serde_json::to_vec(&spec).expect("plain data serializes"));
        Ok(hex::encode(h.finalize())[..16].to_string())
    }
}

/// The template for `spec`, built now if the cache lacks it. Returns its directory.
pub fn ensure(
    spec: &TemplateSpec,
    cache: &Path,
    timeout: Duration,
) -> Result<PathBuf, TemplateError> {
    let key = spec.key()?;
    let dir = cache.join(&key);
    if dir.join(INFO_FILE).is_file() {
        return Ok(dir);
    }
    build(spec, cache, &key, timeout)?;
    Ok(dir)
}

fn build(
    spec: &TemplateSpec,
    cache: &Path,
    key: &str,
    timeout: Duration,
) -> Result<(), TemplateError> {
    if let Some(i) = spec.disks.iter().position(|d| d.path.is_some()) {
        return Err(TemplateError::DiskWithPath(i));
    }
    std::fs::create_dir_all(cache).map_err(io(cache))?;
    let work = tempfile::Builder::new()
        .prefix(&format!(".build-{key}-"))
        .tempdir_in(cache)
        .map_err(io(cache))?;
    let started = Instant::now();
    let config = VmConfig {
        kernel: spec.kernel.clone(),
        initrd: Some(spec.initrd.clone()),
        cmdline: spec.cmdline.clone(),
        mem_mib: spec.mem_mib,
        vcpus: spec.vcpus,
        console: Console::File(work.path().join("console.log")),
        profile: spec.profile,
        disks: spec.disks.clone(),
        vsock: Some(VsockConfig {
            cid: TEMPLATE_CID,
            socket: work.path().join("vsock.sock"),
        }),
        api_socket: None,
        net: (0..spec.nics)
            .map(|_| NetConfig::unplugged(crate::vm::TEMPLATE_MAC))
            .collect(),
    };
    let vm = Vm::boot(&config, started)?;
    let ready = wait_for_marker(&vm, spec.ready_marker, timeout).map_err(|why| {
        let console = std::fs::read_to_string(work.path().join("console.log")).unwrap_or_default();
        let tail: Vec<&str> = console.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        TemplateError::NotReady(format!("{why}; console ends with:\n{}", tail.join("\n")))
    })?;
    let snap = vm.snapshotter();
    if !snap.vcpus.pause(snap.vcpu_count) {
        return Err(TemplateError::NotReady("vCPUs did not pause".into()));
    }
    let out = work.path().join("snapshot");
    snap.save(&out)?;
    let info = TemplateInfo {
        key: key.to_string(),
        spec: spec.clone(),
        boot_seconds: ready.as_secs_f64(),
    };
    let info_bytes = serde_json::to_vec_pretty(&info).expect("plain data serializes");
    super::file::write_atomic(&out.join(INFO_FILE), |f| {
        std::io::Write::write_all(f, &info_bytes)
    })?;
    let dir = cache.join(key);
    if dir.exists() {
        // Someone else built it meanwhile; theirs is as good.
        return Ok(());
    }
    std::fs::rename(&out, &dir).map_err(io(&dir))?;
    Ok(())
}

/// Waits until the guest writes `marker`; fails if the VM stops first or `timeout` passes.
fn wait_for_marker(vm: &Vm, marker: u8, timeout: Duration) -> Result<Duration, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some((_, at)) = vm.marks().into_iter().find(|(v, _)| *v == marker) {
            return Ok(at);
        }
        if let Some(reason) = vm.try_stopped() {
            return Err(format!("the VM stopped: {}", describe(&reason)));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no marker {marker:#x} within {} s",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn describe(r: &StopReason) -> String {
    format!("{r:?}")
}

/// Every template in the cache.
pub fn list(cache: &Path) -> Result<Vec<TemplateInfo>, TemplateError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(cache) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(cache)(e)),
    };
    for entry in entries.flatten() {
        let info = entry.path().join(INFO_FILE);
        if let Ok(bytes) = std::fs::read(&info) {
            if let Ok(t) = serde_json::from_slice::<TemplateInfo>(&bytes) {
                out.push(t);
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Deletes a template.
pub fn remove(cache: &Path, key: &str) -> Result<(), TemplateError> {
    if key.is_empty() || key.contains('/') || key.starts_with('.') {
        return Err(TemplateError::Unknown(key.into()));
    }
    let dir = cache.join(key);
    if !dir.join(INFO_FILE).is_file() {
        return Err(TemplateError::Unknown(key.into()));
    }
    std::fs::remove_dir_all(&dir).map_err(io(&dir))
}
