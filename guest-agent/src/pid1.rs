//! Duties of PID 1 in the guest: early mounts, console, power-off, the boot marker.

use std::fs;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

/// Guest-physical address of kennel-vmm's boot marker (an MMIO page; see `vmm::layout`).
pub const MARKER_ADDR: u64 = 0xd000_0000;
/// Marker value meaning "agent ready" (a VM is snapshotted into a template at this point).
pub const MARK_AGENT_READY: u8 = 2;

/// Errors of the early mounts.
#[derive(Debug, thiserror::Error)]
pub enum Pid1Error {
    /// A mount failed.
    #[error("mounting {fstype} on {target}")]
    Mount {
        /// Filesystem type.
        fstype: &'static str,
        /// Mount point.
        target: &'static str,
        /// Cause.
        #[source]
        source: Errno,
    },
}

/// Mounts /proc, /sys, /dev, /dev/pts, /dev/shm, /run and cgroup2 (already mounted = fine).
pub fn mount_basics() -> Result<(), Pid1Error> {
    let nosuid_noexec_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    let table: [(&'static str, &'static str, MsFlags, Option<&str>); 7] = [
        ("proc", "/proc", nosuid_noexec_nodev, None),
        ("sysfs", "/sys", nosuid_noexec_nodev, None),
        ("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755")),
        (
            "devpts",
            "/dev/pts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        ),
        (
            "tmpfs",
            "/dev/shm",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
        (
            "tmpfs",
            "/run",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
        ("cgroup2", "/sys/fs/cgroup", nosuid_noexec_nodev, None),
    ];
    for (fstype, target, flags, data) in table {
        let _ = fs::create_dir_all(target);
        match mount(Some(fstype), target, Some(fstype), flags, data) {
            Ok(()) | Err(Errno::EBUSY) => {}
            Err(source) => {
                return Err(Pid1Error::Mount {
                    fstype,
                    target,
                    source,
                })
            }
        }
    }
    if fs::symlink_metadata("/dev/ptmx").is_err() {
        let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    }
    Ok(())
}

/// True when `/` is the namespace's root mount (the initramfs "rootfs"), which
/// `pivot_root(2)` refuses to leave: mountinfo lists it as its own parent.
fn root_is_rootfs() -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 4 && f[4] == "/" && f[0] == f[1]
    })
}

/// When running from the initramfs, moves a bind mount of it over `/` and chroots into it
/// (what switch_root does) so container helpers can `pivot_root`. Call after /proc is
/// mounted; failures only cost the helpers their fallback (MS_MOVE + chroot).
pub fn leave_rootfs() {
    if !root_is_rootfs() {
        return;
    }
    let r = (|| -> Result<(), Errno> {
        let dir = Path::new("/.kennel-root");
        let _ = fs::create_dir(dir);
        mount(
            Some("/"),
            dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )?;
        nix::unistd::chdir(dir)?;
        mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)?;
        nix::unistd::chroot(".")?;
        nix::unistd::chdir("/")
    })();
    match r {
        Ok(()) => eprintln!("kennel-agent: left the initramfs root mount"),
        Err(e) => eprintln!("kennel-agent: leaving the initramfs root mount: {e}"),
    }
}

/// Sends stdout/stderr to the console (the kernel may have started us without one).
pub fn console_logging(console: &Path) {
    if let Ok(f) = fs::OpenOptions::new().write(true).open(console) {
        crate::sys::spawn::redirect_stdio(&f);
    }
}

/// Writes the "agent ready" marker: one byte at the VMM's marker address through `mem_dev`
/// (`/dev/mem` in the guest; tests pass a plain file).
pub fn signal_ready(mem_dev: &Path) {
    match crate::sys::marker::write_byte(mem_dev, MARKER_ADDR, MARK_AGENT_READY) {
        Ok(_) => tracing::info!("ready marker written at {MARKER_ADDR:#x}"),
        Err(e) => tracing::warn!("no ready marker ({}): {e}", mem_dev.display()),
    }
}

/// Syncs and resets the VM (the VMM ends the VM on a guest reset). Never returns.
/// Only PID 1 (of the VM, or of a test's PID namespace, where the kernel turns the reboot
/// into ending the namespace) reboots; anything else just exits.
pub fn power_off() -> ! {
    nix::unistd::sync();
    if std::process::id() == 1 {
        let e = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
        eprintln!("kennel-agent: reboot failed: {e:?}");
    }
    std::process::exit(1)
}
