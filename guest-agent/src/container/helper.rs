//! The container helper processes: `kennel-agent init-container PLAN` and
//! `kennel-agent exec-container PLAN`. The agent clones a child (with new namespaces for
//! init) that re-executes the agent binary in one of these modes; being a fresh,
//! single-threaded process it can set up mounts, pivot_root, join namespaces and then
//! `execve` the container's program.
//!
//! Descriptors: 0/1/2 = the process's stdio, 3 = status pipe (lines `ready`, `pid N`,
//! `error MSG`; EOF after a successful exec), 4 = start pipe (init only: one byte = go).

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, CloneFlags};
use nix::unistd::{chdir, pivot_root, setgid, setgroups, sethostname, setsid, setuid, Gid, Uid};

use super::plan::{ExecPlan, InitPlan, MountPlan, ProcessPlan};
use crate::sys::{ioctl, spawn};

const STATUS_FD: i32 = 3;
const START_FD: i32 = 4;
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn status_pipe() -> Option<File> {
    let fd = spawn::inherited_fd(STATUS_FD).ok()?;
    let _ = spawn::set_cloexec(STATUS_FD, true);
    Some(File::from(fd))
}

fn fail(status: &mut Option<File>, err: &anyhow::Error, code: i32) -> ! {
    let msg = format!("{err:#}").replace('\n', " ");
    if let Some(s) = status.as_mut() {
        // One write per line: the exec helper and its child share this pipe.
        let _ = s.write_all(format!("error {msg}\n").as_bytes());
    } else {
        eprintln!("kennel-agent helper: {msg}");
    }
    std::process::exit(code)
}

fn read_plan<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// Entry point of `init-container`: never returns.
pub fn run_init(plan_path: &Path) -> ! {
    spawn::reset_signals();
    let mut status = status_pipe();
    let plan: InitPlan = match read_plan(plan_path) {
        Ok(p) => p,
        Err(e) => fail(&mut status, &e, 1),
    };
    if let Err(e) = setup_init(&plan) {
        fail(&mut status, &e, 1);
    }
    if let Some(s) = status.as_mut() {
        let _ = s.write_all(b"ready\n");
    }
    // Wait for StartContainer (one byte) or removal (EOF).
    let go = spawn::inherited_fd(START_FD)
        .map(File::from)
        .and_then(|mut f| {
            let _ = spawn::set_cloexec(START_FD, true);
            let mut b = [0u8; 1];
            f.read(&mut b)
        });
    if !matches!(go, Ok(1)) {
        std::process::exit(1);
    }
    let e = exec_process(&plan.process);
    fail(&mut status, &e, 127)
}

/// Entry point of `exec-container`: never returns.
pub fn run_exec(plan_path: &Path) -> ! {
    spawn::reset_signals();
    let mut status = status_pipe();
    let plan: ExecPlan = match read_plan(plan_path) {
        Ok(p) => p,
        Err(e) => fail(&mut status, &e, 1),
    };
    if let Err(e) = join_container(&plan) {
        fail(&mut status, &e, 1);
    }
    match spawn::fork_sibling() {
        Err(e) => fail(&mut status, &anyhow::Error::new(e).context("clone"), 1),
        Ok(0) => {
            let e = exec_process(&plan.process);
            fail(&mut status, &e, 127)
        }
        Ok(pid) => {
            if let Some(s) = status.as_mut() {
                let _ = s.write_all(format!("pid {pid}\n").as_bytes());
            }
            std::process::exit(0)
        }
    }
}

fn join_cgroup(procs: &[PathBuf]) -> Result<()> {
    for f in procs {
        fs::write(f, "0").with_context(|| format!("joining cgroup {}", f.display()))?;
    }
    Ok(())
}

fn join_container(plan: &ExecPlan) -> Result<()> {
    join_cgroup(&plan.cgroup_procs)?;
    // Open every namespace first: /proc of the agent disappears once the mount ns changes.
    let mut files = Vec::new();
    for (name, flag) in [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let p = format!("/proc/{}/ns/{name}", plan.target_pid);
        files.push((
            File::open(&p).with_context(|| format!("opening {p}"))?,
            flag,
            name,
        ));
    }
    for (f, flag, name) in files {
        setns(&f, flag).with_context(|| format!("joining {name} namespace"))?;
    }
    Ok(())
}

fn mnt(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(src, target, fstype, flags, data).with_context(|| {
        format!(
            "mounting {} ({}) on {}",
            src.unwrap_or("none"),
            fstype.unwrap_or("-"),
            target.display()
        )
    })
}

fn inside(rootfs: &Path, dest: &str) -> PathBuf {
    rootfs.join(dest.trim_start_matches('/'))
}

fn setup_init(plan: &InitPlan) -> Result<()> {
    join_cgroup(&plan.cgroup_procs)?;
    // Nothing mounted here may propagate back to the agent's namespace.
    mnt(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    let root = &plan.rootfs;
    for d in [root, &plan.upper_dir, &plan.work_dir] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    setup_rootfs(plan)?;
    let mut dev_is_tmpfs = false;
    for m in &plan.mounts {
        mount_one(root, m)?;
        if m.destination.trim_end_matches('/') == "/dev" && !m.bind {
            dev_is_tmpfs = true;
        }
    }
    if dev_is_tmpfs {
        populate_dev(root)?;
    }
    if let Some(h) = &plan.hostname {
        sethostname(h).context("setting the hostname")?;
    }
    chdir(root).context("chdir to rootfs")?;
    match pivot_root(".", ".") {
        Ok(()) => {
            umount2(".", MntFlags::MNT_DETACH).context("detaching the old root")?;
        }
        // The agent's root is the initramfs rootfs, which cannot be pivoted away from:
        // move the new root over it and chroot (what runc does with --no-pivot).
        Err(nix::errno::Errno::EINVAL) => {
            mnt(Some("."), Path::new("/"), None, MsFlags::MS_MOVE, None)?;
            nix::unistd::chroot(".").context("chroot")?;
        }
        Err(e) => return Err(e).context("pivot_root"),
    }
    chdir("/").context("chdir /")?;
    for p in &plan.masked_paths {
        mask_path(p)?;
    }
    for p in &plan.readonly_paths {
        let path = Path::new(p);
        if path.exists() {
            mnt(
                Some(p),
                path,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            let f = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            mnt(None, path, None, f, None)?;
        }
    }
    if plan.readonly_root {
        let f = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mnt(None, Path::new("/"), None, f, None)?;
    }
    Ok(())
}

fn setup_rootfs(plan: &InitPlan) -> Result<()> {
    let root = &plan.rootfs;
    let bind_ro = |src: &Path| -> Result<()> {
        let s = src.to_string_lossy();
        mnt(
            Some(&s),
            root,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        if plan.readonly_root {
            let f = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            mnt(None, root, None, f, None)?;
        }
        Ok(())
    };
    match (&plan.root_path, plan.lower_dirs.as_slice()) {
        (Some(p), []) => bind_ro(p),
        (None, []) => bail!("no root filesystem"),
        (_, [single]) if plan.readonly_root => bind_ro(single),
        (_, lowers) => {
            let lower: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
            let data = if plan.readonly_root {
                format!("lowerdir={}", lower.join(":"))
            } else {
                format!(
                    "lowerdir={},upperdir={},workdir={}",
                    lower.join(":"),
                    plan.upper_dir.display(),
                    plan.work_dir.display()
                )
            };
            mnt(
                Some("overlay"),
                root,
                Some("overlay"),
                MsFlags::empty(),
                Some(&data),
            )
        }
    }
}

fn mount_one(root: &Path, m: &MountPlan) -> Result<()> {
    let target = inside(root, &m.destination);
    let flags = MsFlags::from_bits_truncate(m.flags);
    if m.bind {
        let src = Path::new(&m.source);
        if src.is_dir() {
            fs::create_dir_all(&target)
        } else {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            File::options()
                .create(true)
                .append(true)
                .open(&target)
                .map(|_| ())
        }
        .with_context(|| format!("creating mount point {}", target.display()))?;
        let rec = flags & MsFlags::MS_REC;
        mnt(Some(&m.source), &target, None, MsFlags::MS_BIND | rec, None)?;
        let extra = flags - MsFlags::MS_REC;
        if !extra.is_empty() {
            let f = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra;
            mnt(None, &target, None, f, None)?;
        }
    } else {
        fs::create_dir_all(&target)
            .with_context(|| format!("creating mount point {}", target.display()))?;
        let data = (!m.data.is_empty()).then_some(m.data.as_str());
        let res = mnt(Some(&m.source), &target, Some(&m.fstype), flags, data);
        if let Err(e) = res {
            // A cgroup mount can fail on hosts where controllers live in v1 hierarchies;
            // the container still runs, only without a view of its cgroup.
            if m.fstype.starts_with("cgroup") {
                eprintln!("kennel-agent helper: skipping {}: {e:#}", m.destination);
            } else {
                return Err(e);
            }
        }
    }
    if m.propagation != 0 {
        let p = MsFlags::from_bits_truncate(m.propagation);
        mnt(None, &target, None, p, None)?;
    }
    Ok(())
}

fn populate_dev(root: &Path) -> Result<()> {
    let dev = root.join("dev");
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let target = dev.join(name);
        File::create(&target).with_context(|| format!("creating {}", target.display()))?;
        let src = host.to_string_lossy();
        mnt(Some(&src), &target, None, MsFlags::MS_BIND, None)?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let p = dev.join(link);
        if fs::symlink_metadata(&p).is_err() {
            symlink(to, &p).with_context(|| format!("linking {}", p.display()))?;
        }
    }
    Ok(())
}

fn mask_path(p: &str) -> Result<()> {
    let path = Path::new(p);
    match fs::metadata(path) {
        Err(_) => Ok(()),
        Ok(md) if md.is_dir() => mnt(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_RDONLY, None),
        Ok(_) => mnt(Some("/dev/null"), path, None, MsFlags::MS_BIND, None),
    }
}

fn find_program(p: &ProcessPlan) -> Result<PathBuf> {
    let arg0 = &p.args[0];
    if arg0.contains('/') {
        return Ok(PathBuf::from(arg0));
    }
    let path = p
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let cand = Path::new(dir).join(arg0);
        if cand.is_file() {
            return Ok(cand);
        }
    }
    bail!("executable {arg0:?} not found in PATH {path:?}")
}

fn cstrings(v: &[String]) -> Result<Vec<CString>> {
    v.iter()
        .map(|s| CString::new(s.as_str()).context("NUL byte in argument"))
        .collect()
}

/// Becomes the container process: terminal, cwd, credentials, then execve. Only returns
/// on failure.
fn exec_process(p: &ProcessPlan) -> anyhow::Error {
    let r: Result<std::convert::Infallible> = (|| {
        if p.tty {
            setsid().context("setsid")?;
            ioctl::set_controlling_tty(std::io::stdin().as_raw_fd())
                .context("setting the controlling terminal")?;
        }
        chdir(Path::new(&p.cwd)).with_context(|| format!("chdir {}", p.cwd))?;
        let groups: Vec<Gid> = p
            .additional_gids
            .iter()
            .map(|g| Gid::from_raw(*g))
            .collect();
        setgroups(&groups).context("setgroups")?;
        setgid(Gid::from_raw(p.gid)).context("setgid")?;
        setuid(Uid::from_raw(p.uid)).context("setuid")?;
        let prog = find_program(p)?;
        let prog_c = CString::new(prog.to_string_lossy().as_bytes()).context("program path")?;
        let argv = cstrings(&p.args)?;
        let env = cstrings(&p.env)?;
        nix::unistd::execve(&prog_c, &argv, &env)
            .with_context(|| format!("executing {}", prog.display()))
    })();
    match r {
        Err(e) => e,
        Ok(never) => match never {},
    }
}
