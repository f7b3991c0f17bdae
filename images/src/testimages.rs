//! The project's own test images, built without internet:
//! - `busybox`: Debian's static `/bin/busybox` with a symlink per applet;
//! - `kubia`: busybox plus the static `kubia` server (*Kubernetes in Action*'s example app);
//! - `kubia-pet`: busybox plus `kubia-pet`, which keeps POSTed data under `/var/data`.
//!
//! The two kubia images share the busybox layer, so pulls exercise blob sharing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::build::{BuildError, BuiltImage, Layer, LayerBuilder};
use crate::spec::ContainerConfig;

/// Where Debian's busybox-static installs the binary.
pub const HOST_BUSYBOX: &str = "/bin/busybox";
/// Target triple the kubia binaries are built for (static glibc).
pub const KUBIA_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Errors building the test images.
#[derive(Debug, thiserror::Error)]
pub enum TestImageError {
    /// Building an image failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Running busybox or cargo failed.
    #[error("running {cmd}: {detail}")]
    Command {
        /// The command.
        cmd: String,
        /// Error or stderr.
        detail: String,
    },
}

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The relative symlink target from `link` (root-relative) to `bin/busybox`.
fn applet_target(link: &str) -> String {
    let depth = link.matches('/').count();
    if depth == 1 && link.starts_with("bin/") {
        "busybox".to_string()
    } else {
        format!("{}bin/busybox", "../".repeat(depth))
    }
}

/// The busybox root filesystem layer built from the host's static busybox.
pub fn busybox_layer(busybox: &Path) -> Result<Layer, TestImageError> {
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| TestImageError::Command {
            cmd: format!("{} --list-full", busybox.display()),
            detail: format!("{e} (install busybox-static)"),
        })?;
    if !out.status.success() {
        return Err(TestImageError::Command {
            cmd: format!("{} --list-full", busybox.display()),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let applets = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut l = LayerBuilder::new();
    for d in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "home", "proc", "sys", "dev", "run",
        "var", "var/log",
    ] {
        l.dir(d, 0o755)?;
    }
    l.dir("root", 0o700)?
        .dir("tmp", 0o1777)?
        .dir("var/tmp", 0o1777)?;
    l.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    l.file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")?;
    l.file_from("bin/busybox", 0o755, busybox)?;
    let mut seen = std::collections::BTreeSet::new();
    for a in applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "bin/busybox")
    {
        if a.contains("..") || a.starts_with('/') || !seen.insert(a.to_string()) {
            continue;
        }
        l.symlink(a, &applet_target(a))?;
    }
    Ok(l.finish()?)
}

/// The `busybox` image.
pub fn busybox_image(base: &Layer) -> BuiltImage {
    BuiltImage::new(
        vec![base.clone()],
        ContainerConfig {
            env: Some(vec![PATH_ENV.into()]),
            cmd: Some(vec!["sh".into()]),
            ..Default::default()
        },
    )
}

/// An app image: busybox plus `/app/<name>` as entrypoint listening on 8080; `data_dir` is declared a volume.
pub fn app_image(
    base: &Layer,
    name: &str,
    binary: &Path,
    data_dir: Option<&str>,
) -> Result<BuiltImage, TestImageError> {
    let mut l = LayerBuilder::new();
    l.dir("app", 0o755)?
        .file_from(&format!("app/{name}"), 0o755, binary)?;
    if let Some(d) = data_dir {
        l.dir(d.trim_start_matches('/'), 0o755)?;
    }
    let app = l.finish()?;
    let cfg = ContainerConfig {
        env: Some(vec![PATH_ENV.into()]),
        entrypoint: Some(vec![format!("/app/{name}")]),
        exposed_ports: Some(BTreeMap::from([(
            "8080/tcp".to_string(),
            serde_json::json!({}),
        )])),
        volumes: data_dir.map(|d| BTreeMap::from([(d.to_string(), serde_json::json!({}))])),
        working_dir: Some("/".into()),
        ..Default::default()
    };
    Ok(BuiltImage::new(vec![base.clone(), app], cfg))
}

fn static_rustflags() -> String {
    let outer = std::env::var("RUSTFLAGS").unwrap_or_default();
    format!("{outer} -C target-feature=+crt-static")
        .trim()
        .to_string()
}

/// True when the ELF file has no program interpreter (`PT_INTERP`), i.e. it is statically linked.
pub fn is_static_elf(data: &[u8]) -> bool {
    let u16_at = |o: usize| {
        data.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u64_at = |o: usize| {
        data.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if !data.starts_with(b"\x7fELF") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..phnum).all(|i| {
        let o = phoff as usize + i * phentsize;
        data.get(o..o + 4)
            .is_some_and(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) != 3)
    })
}

/// Builds the static `kubia` and `kubia-pet` binaries with cargo; returns their paths.
/// `workspace` is the repository root; `cargo` the cargo binary to run.
pub fn build_kubia_binaries(
    cargo: &Path,
    workspace: &Path,
) -> Result<(PathBuf, PathBuf), TestImageError> {
    let cmd = format!(
        "{} build --release -p kubia --target {KUBIA_TARGET}",
        cargo.display()
    );
    let out = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "build",
            "--release",
            "-p",
            "kubia",
            "--target",
            KUBIA_TARGET,
            "--message-format",
            "short",
        ])
        // RUSTFLAGS beats per-target flags, so extend it rather than set those
        .env("RUSTFLAGS", static_rustflags())
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .map_err(|e| TestImageError::Command {
            cmd: cmd.clone(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(TestImageError::Command {
            cmd,
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let dir = target_dir.join(KUBIA_TARGET).join("release");
    Ok((dir.join("kubia"), dir.join("kubia-pet")))
}

/// The three test images, named `busybox:latest`, `kubia:latest`, `kubia-pet:latest`.
pub fn test_images(
    busybox: &Path,
    kubia: &Path,
    kubia_pet: &Path,
) -> Result<Vec<(&'static str, BuiltImage)>, TestImageError> {
    let base = busybox_layer(busybox)?;
    Ok(vec![
        ("busybox:latest", busybox_image(&base)),
        ("kubia:latest", app_image(&base, "kubia", kubia, None)?),
        (
            "kubia-pet:latest",
            app_image(&base, "kubia-pet", kubia_pet, Some("/var/data"))?,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applet_links_point_at_busybox() {
        assert_eq!(applet_target("bin/sh"), "busybox");
        assert_eq!(applet_target("sbin/init"), "../bin/busybox");
        assert_eq!(applet_target("usr/bin/wget"), "../../bin/busybox");
    }

    #[test]
    fn detects_dynamic_elf() {
        let sh = std::fs::read("/bin/sh").unwrap();
        assert!(!is_static_elf(&sh));
        assert!(is_static_elf(&std::fs::read(HOST_BUSYBOX).unwrap()));
        assert!(!is_static_elf(b"not elf"));
    }
}
