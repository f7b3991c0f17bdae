//! Guest artifacts for tests that boot a VM. `scripts/test` builds them and exports their paths;
//! a test run without them fails with a message saying how to get them.

use std::path::{Path, PathBuf};

/// Errors locating artifacts.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// An environment variable is missing or points nowhere.
    #[error("{var} is not set to an existing file ({why}); run `bash scripts/test`, which builds the guest kernel and static guest binaries and exports their paths")]
    Missing {
        /// Variable name.
        var: &'static str,
        /// What was wrong.
        why: String,
    },
}

fn from_env(var: &'static str) -> Result<PathBuf, ArtifactError> {
    let value = std::env::var_os(var).ok_or(ArtifactError::Missing {
        var,
        why: "unset".into(),
    })?;
    let path = PathBuf::from(value);
    if !path.is_file() {
        return Err(ArtifactError::Missing {
            var,
            why: format!("{} does not exist", path.display()),
        });
    }
    Ok(path)
}

/// The guest kernel (`KENNEL_VMLINUX`).
pub fn vmlinux() -> Result<PathBuf, ArtifactError> {
    from_env("KENNEL_VMLINUX")
}

/// The static test init (`KENNEL_TEST_INIT`).
pub fn test_init() -> Result<PathBuf, ArtifactError> {
    from_env("KENNEL_TEST_INIT")
}

/// The static guest agent (`KENNEL_AGENT`).
pub fn agent() -> Result<PathBuf, ArtifactError> {
    from_env("KENNEL_AGENT")
}

/// Packs `init` as `/init` of an initramfs `name` in `dir`; returns its path.
pub fn initramfs(dir: &Path, name: &str, init: &Path) -> PathBuf {
    let path = dir.join(name);
    images::initramfs::Initramfs::new()
        .init(init)
        .expect("init binary readable")
        .write_file(&path)
        .expect("initramfs written");
    path
}

/// Runs `kennel-vmm template build` (128 MiB, one empty read-only disk slot, the given extra
/// kernel arguments) with its cache in `cache`; panics with the VMM's stderr on failure and
/// returns the template directory.
pub fn build_template(vmlinux: &Path, initrd: &Path, cmdline: &[&str], cache: &Path) -> PathBuf {
    let mut cmd = std::process::Command::new(workspace_bin("kennel-vmm"));
    cmd.args(["template", "build", "--mem", "128", "--disk", "empty,ro"])
        .args(["--timeout", "600", "--kernel"])
        .arg(vmlinux)
        .arg("--initrd")
        .arg(initrd)
        .arg("--cache")
        .arg(cache);
    for arg in cmdline {
        cmd.args(["--cmdline", arg]);
    }
    let out = cmd.output().expect("kennel-vmm runs");
    assert!(
        out.status.success(),
        "template build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The template cache shared by test binaries and runs (`KENNEL_TEMPLATE_CACHE`, else
/// `$KENNEL_CACHE/templates`, else `/var/cache/kennel/templates`): templates are keyed by every
/// input, so a second run or a second binary with the same kernel, initramfs and layout restores
/// instead of cold-booting.
pub fn template_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("KENNEL_TEMPLATE_CACHE") {
        return dir.into();
    }
    std::env::var_os("KENNEL_CACHE")
        .map(|c| PathBuf::from(c).join("templates"))
        .unwrap_or_else(|| "/var/cache/kennel/templates".into())
}

/// A binary of this workspace built beside the test executable (target/<profile>/NAME).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    profile_dir.join(name)
}
