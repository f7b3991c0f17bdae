//! Turns an OCI runtime spec into the plain setup plan the container helpers execute,
//! validating every field on the way (errors name the field).

use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;
use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Process, Spec};
use serde::{Deserialize, Serialize};

use crate::cgroup::Limits;

/// A spec field that cannot be used, named.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PlanError {
    /// Dotted path of the offending field.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn bad(field: impl Into<String>, reason: impl Into<String>) -> PlanError {
    PlanError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The process to execute (init or exec).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProcessPlan {
    /// argv; args[0] is looked up in PATH when it has no slash.
    pub args: Vec<String>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    /// Absolute working directory inside the container.
    pub cwd: String,
    /// User and group ids.
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Attach a terminal (stdio is a pty slave).
    pub tty: bool,
}

/// One mount inside the container rootfs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MountPlan {
    /// Source (device, directory or pseudo name).
    pub source: String,
    /// Absolute destination inside the container.
    pub destination: String,
    /// Filesystem type ("bind" for bind mounts).
    pub fstype: String,
    /// MS_* flags.
    pub flags: u64,
    /// Filesystem-specific data.
    pub data: String,
    /// Bind mount.
    pub bind: bool,
    /// Propagation flags applied after mounting (MS_PRIVATE, MS_SLAVE, ...).
    pub propagation: u64,
}

/// Everything the init helper does before executing the container's process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InitPlan {
    /// `cgroup.procs` files to join.
    pub cgroup_procs: Vec<PathBuf>,
    /// Overlay lower directories (topmost first); empty means bind `root_path`.
    pub lower_dirs: Vec<PathBuf>,
    /// Used when `lower_dirs` is empty.
    pub root_path: Option<PathBuf>,
    /// Overlay upper/work directories (private writable layer).
    pub upper_dir: PathBuf,
    /// Overlay work directory.
    pub work_dir: PathBuf,
    /// Where the root filesystem is assembled.
    pub rootfs: PathBuf,
    /// Root is read-only.
    pub readonly_root: bool,
    /// Mounts in spec order.
    pub mounts: Vec<MountPlan>,
    /// UTS hostname.
    pub hostname: Option<String>,
    /// Paths to hide (masked) and to make read-only.
    pub masked_paths: Vec<String>,
    /// Paths remounted read-only.
    pub readonly_paths: Vec<String>,
    /// The process.
    pub process: ProcessPlan,
}

/// What the exec helper does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExecPlan {
    /// PID of the container's init (agent namespace) whose namespaces are joined.
    pub target_pid: i32,
    /// `cgroup.procs` files to join.
    pub cgroup_procs: Vec<PathBuf>,
    /// The process.
    pub process: ProcessPlan,
}

/// Checks a container or exec id: 1–128 of `[A-Za-z0-9_.-]`, not starting with a dot.
pub fn check_id(field: &str, id: &str) -> Result<(), PlanError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(bad(
            field,
            format!("{id:?} must be 1-128 characters of [A-Za-z0-9_.-] not starting with '.'"),
        ))
    }
}

fn check_abs(field: &str, p: &str) -> Result<(), PlanError> {
    let path = Path::new(p);
    if !path.is_absolute() {
        return Err(bad(field, format!("{p:?} is not absolute")));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(bad(field, format!("{p:?} contains '..'")));
    }
    Ok(())
}

/// Parses and checks a spec.process JSON (ExecProcess).
pub fn process_from_json(json: &[u8]) -> Result<ProcessPlan, PlanError> {
    let p: Process = serde_json::from_slice(json)
        .map_err(|e| bad("oci_process_json", format!("not an OCI process: {e}")))?;
    process_plan("process", &p)
}

/// The glibc tunables the VMM gives the agent on hosts whose guest kernel cannot save AVX state
/// (kennel-vmm's compat profile); every container process inherits them unless it sets its own.
const GLIBC_TUNABLES: &str = "GLIBC_TUNABLES";

/// Adds `key=value` to `env` unless `env` already sets `key`.
fn inherit_var(env: &mut Vec<String>, key: &str, value: &str) {
    let prefix = format!("{key}=");
    if !env.iter().any(|e| e.starts_with(&prefix)) {
        env.push(format!("{prefix}{value}"));
    }
}

/// Converts an OCI process.
pub fn process_plan(field: &str, p: &Process) -> Result<ProcessPlan, PlanError> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(bad(format!("{field}.args"), "must name a program"));
    }
    if args.iter().any(|a| a.contains('\0')) {
        return Err(bad(format!("{field}.args"), "contains a NUL byte"));
    }
    let mut env = p.env().clone().unwrap_or_default();
    if let Some(e) = env.iter().find(|e| !e.contains('=') || e.contains('\0')) {
        return Err(bad(
            format!("{field}.env"),
            format!("{e:?} is not KEY=VALUE"),
        ));
    }
    if let Ok(t) = std::env::var(GLIBC_TUNABLES) {
        inherit_var(&mut env, GLIBC_TUNABLES, &t);
    }
    let cwd = p.cwd().to_string_lossy().into_owned();
    check_abs(&format!("{field}.cwd"), &cwd)?;
    let user = p.user();
    Ok(ProcessPlan {
        args,
        env,
        cwd,
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        tty: p.terminal().unwrap_or(false),
    })
}

/// Parses mount options into (flags, propagation, data, bind).
pub fn parse_options(options: &[String]) -> (u64, u64, String, bool) {
    let mut flags = MsFlags::empty();
    let mut prop = MsFlags::empty();
    let mut data: Vec<&str> = Vec::new();
    let mut bind = false;
    for o in options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "suid" => flags &= !MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "dev" => flags &= !MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "exec" => flags &= !MsFlags::MS_NOEXEC,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "async" => flags &= !MsFlags::MS_SYNCHRONOUS,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "bind" => bind = true,
            "rbind" => {
                bind = true;
                flags |= MsFlags::MS_REC;
            }
            "private" => prop |= MsFlags::MS_PRIVATE,
            "rprivate" => prop |= MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            "slave" => prop |= MsFlags::MS_SLAVE,
            "rslave" => prop |= MsFlags::MS_SLAVE | MsFlags::MS_REC,
            "shared" => prop |= MsFlags::MS_SHARED,
            "rshared" => prop |= MsFlags::MS_SHARED | MsFlags::MS_REC,
            other => data.push(other),
        }
    }
    (flags.bits(), prop.bits(), data.join(","), bind)
}

/// Lower/upper layout supplied next to the spec.
#[derive(Debug, Clone, Default)]
pub struct RootfsInput {
    /// Overlay lower dirs (topmost first).
    pub lower_dirs: Vec<PathBuf>,
    /// Force a read-only root.
    pub readonly: bool,
}

/// Builds the init plan from a spec; `state` is the container's private state directory.
pub fn init_plan(
    spec: &Spec,
    rootfs: &RootfsInput,
    state: &Path,
    cgroup_procs: Vec<PathBuf>,
    tty_override: bool,
) -> Result<(InitPlan, Limits), PlanError> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| bad("process", "missing"))?;
    let mut process = process_plan("process", process)?;
    process.tty |= tty_override;

    for (i, d) in rootfs.lower_dirs.iter().enumerate() {
        if !d.is_absolute() || !d.is_dir() {
            return Err(bad(
                format!("rootfs.lower_dirs[{i}]"),
                format!("{} is not an existing absolute directory", d.display()),
            ));
        }
        if d.to_string_lossy().contains([',', ':']) {
            return Err(bad(
                format!("rootfs.lower_dirs[{i}]"),
                "contains ',' or ':'",
            ));
        }
    }
    let root_path = if rootfs.lower_dirs.is_empty() {
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| bad("root.path", "missing and no rootfs.lower_dirs given"))?;
        let p = root.path().clone();
        if !p.is_absolute() || !p.is_dir() {
            return Err(bad(
                "root.path",
                format!("{} is not an existing absolute directory", p.display()),
            ));
        }
        Some(p)
    } else {
        None
    };
    let readonly_root = rootfs.readonly
        || spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false);

    let mut mounts = Vec::new();
    for (i, m) in spec.mounts().clone().unwrap_or_default().iter().enumerate() {
        let dest = m.destination().to_string_lossy().into_owned();
        check_abs(&format!("mounts[{i}].destination"), &dest)?;
        let (flags, propagation, data, bind_opt) =
            parse_options(&m.options().clone().unwrap_or_default());
        let fstype = m.typ().clone().unwrap_or_default();
        let bind = bind_opt || fstype == "bind";
        let source = m
            .source()
            .as_ref()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if bind && !Path::new(&source).is_absolute() {
            return Err(bad(
                format!("mounts[{i}].source"),
                format!("bind source {source:?} is not absolute"),
            ));
        }
        if !bind && fstype.is_empty() {
            return Err(bad(format!("mounts[{i}].type"), "missing"));
        }
        mounts.push(MountPlan {
            source,
            destination: dest,
            fstype,
            flags,
            data,
            bind,
            propagation,
        });
    }

    let mut limits = Limits::default();
    let linux = spec.linux().as_ref();
    if let Some(linux) = linux {
        if let Some(ns) = linux.namespaces() {
            for n in ns {
                if n.typ() == LinuxNamespaceType::User {
                    return Err(bad("linux.namespaces", "user namespaces are not supported"));
                }
            }
        }
        if let Some(r) = linux.resources() {
            limits = limits_from_resources(r)?;
        }
    }
    let masked_paths = linux
        .and_then(|l| l.masked_paths().clone())
        .unwrap_or_default();
    let readonly_paths = linux
        .and_then(|l| l.readonly_paths().clone())
        .unwrap_or_default();
    for (name, list) in [
        ("linux.maskedPaths", &masked_paths),
        ("linux.readonlyPaths", &readonly_paths),
    ] {
        for p in list {
            check_abs(name, p)?;
        }
    }
    let hostname = spec.hostname().clone().filter(|h| !h.is_empty());

    Ok((
        InitPlan {
            cgroup_procs,
            lower_dirs: rootfs.lower_dirs.clone(),
            root_path,
            upper_dir: state.join("upper"),
            work_dir: state.join("work"),
            rootfs: state.join("rootfs"),
            readonly_root,
            mounts,
            hostname,
            masked_paths,
            readonly_paths,
            process,
        },
        limits,
    ))
}

/// Cgroup limits from OCI `linux.resources` (memory limit, CPU quota/period, pids); also used
/// for UpdateContainer.
pub fn limits_from_resources(r: &LinuxResources) -> Result<Limits, PlanError> {
    let mut limits = Limits::default();
    if let Some(m) = r.memory().as_ref().and_then(|m| m.limit()) {
        if m <= 0 {
            return Err(bad("linux.resources.memory.limit", "must be positive"));
        }
        limits.memory_bytes = Some(m as u64);
    }
    if let Some(cpu) = r.cpu() {
        if let Some(q) = cpu.quota() {
            if q > 0 {
                let period = cpu.period().unwrap_or(100_000);
                if period == 0 {
                    return Err(bad("linux.resources.cpu.period", "must be positive"));
                }
                limits.cpu_quota_period = Some((q as u64, period));
            }
        }
    }
    if let Some(p) = r.pids().as_ref().map(|p| p.limit()) {
        if p > 0 {
            limits.pids = Some(p as u64);
        }
    }
    Ok(limits)
}

/// Parses OCI `LinuxResources` JSON (UpdateContainer) into limits.
pub fn limits_from_json(json: &[u8]) -> Result<Limits, PlanError> {
    let r: LinuxResources = serde_json::from_slice(json).map_err(|e| PlanError {
        field: "resources".into(),
        reason: format!("not an OCI linux.resources object: {e}"),
    })?;
    limits_from_resources(&r)
}

#[cfg(test)]
mod tests {
    #[test]
    fn inherited_variables_never_override_the_spec() {
        let mut env = vec!["PATH=/bin".to_string()];
        inherit_var(&mut env, "GLIBC_TUNABLES", "a=1");
        assert_eq!(env, ["PATH=/bin", "GLIBC_TUNABLES=a=1"]);
        let mut own = vec!["GLIBC_TUNABLES=mine".to_string()];
        inherit_var(&mut own, "GLIBC_TUNABLES", "a=1");
        assert_eq!(own, ["GLIBC_TUNABLES=mine"]);
    }

    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_id("container_id", "abc-1.2_x").is_ok());
        for bad in ["", ".x", "a/b", "a b", &"x".repeat(129)] {
            let e = check_id("container_id", bad).unwrap_err();
            assert_eq!(e.field, "container_id");
        }
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let (flags, prop, data, bind) = parse_options(&[
            "nosuid".into(),
            "mode=755".into(),
            "ro".into(),
            "rbind".into(),
            "rslave".into(),
            "size=65536k".into(),
        ]);
        let f = MsFlags::from_bits_truncate(flags);
        assert!(f.contains(MsFlags::MS_NOSUID | MsFlags::MS_RDONLY | MsFlags::MS_REC));
        assert_eq!(prop, (MsFlags::MS_SLAVE | MsFlags::MS_REC).bits());
        assert_eq!(data, "mode=755,size=65536k");
        assert!(bind);
    }

    #[test]
    fn bad_fields_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let input = RootfsInput {
            lower_dirs: vec![dir.path().to_path_buf()],
            readonly: false,
        };
        let cases = [
            (serde_json::json!({"ociVersion": "1.0.2"}), "process"),
            (
                serde_json::json!({"ociVersion": "1.0.2", "process": {"cwd": "/", "args": [], "user": {"uid": 0, "gid": 0}}}),
                "process.args",
            ),
            (
                serde_json::json!({"ociVersion": "1.0.2", "process": {"cwd": "rel", "args": ["sh"], "user": {"uid": 0, "gid": 0}}}),
                "process.cwd",
            ),
            (
                serde_json::json!({"ociVersion": "1.0.2", "process": {"cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0}},
                    "mounts": [{"destination": "/a/../../etc", "type": "tmpfs", "source": "tmpfs"}]}),
                "mounts[0].destination",
            ),
            (
                serde_json::json!({"ociVersion": "1.0.2", "process": {"cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0}},
                    "linux": {"resources": {"memory": {"limit": -5}}}}),
                "linux.resources.memory.limit",
            ),
        ];
        for (json, field) in cases {
            let e = init_plan(&spec(json), &input, dir.path(), vec![], false).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn good_spec_becomes_a_plan() {
        let dir = tempfile::tempdir().unwrap();
        let input = RootfsInput {
            lower_dirs: vec![dir.path().to_path_buf()],
            readonly: false,
        };
        let s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "hostname": "web",
            "process": {"cwd": "/tmp", "args": ["echo", "hi"], "env": ["PATH=/bin"],
                        "user": {"uid": 1000, "gid": 1000, "additionalGids": [10]}},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {"resources": {"memory": {"limit": 16777216}, "cpu": {"quota": 50000, "period": 100000}, "pids": {"limit": 64}}}
        }));
        let (plan, limits) = init_plan(&s, &input, dir.path(), vec![], false).unwrap();
        assert_eq!(plan.process.args, ["echo", "hi"]);
        assert_eq!(plan.process.uid, 1000);
        assert_eq!(plan.process.additional_gids, [10]);
        assert_eq!(plan.hostname.as_deref(), Some("web"));
        assert_eq!(plan.mounts[0].fstype, "proc");
        assert_eq!(limits.memory_bytes, Some(16 << 20));
        assert_eq!(limits.cpu_quota_period, Some((50000, 100000)));
        assert_eq!(limits.pids, Some(64));
    }
}
