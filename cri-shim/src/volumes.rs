//! CRI mounts into the pod VM (Kata's `shared_fs=none` model: no shared filesystem).
//!
//! Each CRI `Mount` of a container becomes, by its host path:
//! - a **copied volume** — a kubelet volume directory (configMap, secret, downwardAPI,
//!   projected: the `..data` atomic-writer layout) or any other existing host file/directory
//!   mounted read-only: its current content (symlinks resolved) is sent with the agent's
//!   PutFiles into the guest's tmpfs volume root, and bind-mounted at the container path;
//! - an **emptyDir** — a host path `…/volumes/kubernetes.io~empty-dir/<name>[/<subPath>]`: a
//!   pod-wide directory in the guest (EnsureEmptyDir), shared by the pod's containers;
//! - a **persistent volume disk** — a host path in `…/volumes/kubernetes.io~kennel-disk/<name>`
//!   ([`crate::pvdisk`]): the volume's block image attached to the VM (once per sandbox) and
//!   mounted in the guest, bound at the container path (at its subPath inside the disk);
//! - **skipped** — kubelet's own `etc-hosts` (the sandbox writes the guest's /etc/hosts) and
//!   the termination-log file (the guest's /dev is a container-private tmpfs);
//! - **refused** — any other read-write host path: it would need a shared filesystem.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use agent_proto::pb;
use k8s_cri::v1::Mount;
use serde_json::{json, Value};

/// Most bytes copied for one mount (the agent's PutFiles limit).
pub const MAX_COPY_BYTES: usize = 3 << 20;
/// Most files copied for one mount.
pub const MAX_COPY_FILES: usize = 1024;

/// Kubelet's emptyDir plugin directory.
const EMPTY_DIR_PLUGIN: &str = "kubernetes.io~empty-dir";

/// Errors mapping a CRI mount.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VolumeError {
    /// The mount cannot be given to a pod VM; the message names the path.
    #[error("{0}")]
    Refused(String),
    /// Reading the host side failed.
    #[error("{0}")]
    Read(String),
}

/// What a CRI mount becomes in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestMount {
    /// Files copied into the guest volume directory `dir`; `file` is set when the host path
    /// is one file (a subPath), which is then the bind source inside the directory.
    Copy {
        /// Volume directory name in the guest.
        dir: String,
        /// The files (paths relative to the volume directory).
        files: Vec<pb::VolumeFile>,
        /// Single-file mount: the file's name in `dir`.
        file: Option<String>,
        /// Where the container sees it.
        container_path: String,
        /// Read-only bind.
        readonly: bool,
    },
    /// A pod-wide emptyDir `name`, at `sub` inside it.
    EmptyDir {
        /// emptyDir volume name.
        name: String,
        /// subPath inside the emptyDir (empty = its root).
        sub: PathBuf,
        /// Where the container sees it.
        container_path: String,
        /// Read-only bind.
        readonly: bool,
    },
    /// A persistent volume's block image, at `sub` inside its filesystem.
    Disk {
        /// Volume name.
        volume: String,
        /// The validated descriptor.
        disk: crate::pvdisk::DiskDescriptor,
        /// subPath inside the disk's filesystem (empty = its root).
        sub: PathBuf,
        /// Where the container sees it.
        container_path: String,
        /// Read-only bind.
        readonly: bool,
    },
    /// Not passed in (why).
    Skip(String),
}

/// A stable short name for a host path (FNV-1a 64).
pub fn dir_name(host_path: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in host_path.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("v-{h:016x}")
}

/// `(name, subPath)` when `path` lies in kubelet's emptyDir plugin directory.
fn empty_dir_of(path: &Path) -> Option<(String, PathBuf)> {
    let comps: Vec<Component> = path.components().collect();
    let i = comps
        .iter()
        .position(|c| c.as_os_str() == EMPTY_DIR_PLUGIN)?;
    let name = comps.get(i + 1)?.as_os_str().to_string_lossy().into_owned();
    let sub: PathBuf = comps[i + 2..].iter().collect();
    Some((name, sub))
}

/// Kubelet-managed files that are not volumes.
fn kubelet_file(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_string_lossy();
    if name == "etc-hosts" {
        return Some("kubelet's etc-hosts: the sandbox writes the guest's /etc/hosts".into());
    }
    let parent2 = path.parent()?.parent()?;
    if parent2.file_name().is_some_and(|n| n == "containers")
        && parent2
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
            .is_some_and(|n| n == "pods")
    {
        return Some("termination-log file: kept in the container's /dev tmpfs".into());
    }
    None
}

fn mode_of(meta: &fs::Metadata) -> u32 {
    meta.permissions().mode() & 0o7777
}

/// Collects the visible files under `dir` (names starting with `..` are the atomic writer's
/// own), following symlinks, as paths relative to `root`.
fn collect(
    root: &Path,
    dir: &Path,
    out: &mut Vec<pb::VolumeFile>,
    total: &mut usize,
) -> Result<(), VolumeError> {
    let read = |e: std::io::Error, p: &Path| VolumeError::Read(format!("{}: {e}", p.display()));
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|e| read(e, dir))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        if name.to_string_lossy().starts_with("..") {
            continue;
        }
        let path = e.path();
        let meta = fs::metadata(&path).map_err(|err| read(err, &path))?;
        if meta.is_dir() {
            collect(root, &path, out, total)?;
        } else if meta.is_file() {
            let data = fs::read(&path).map_err(|err| read(err, &path))?;
            *total += data.len();
            if *total > MAX_COPY_BYTES || out.len() >= MAX_COPY_FILES {
                return Err(VolumeError::Refused(format!(
                    "{}: more than {MAX_COPY_BYTES} bytes or {MAX_COPY_FILES} files to copy into the pod VM",
                    root.display()
                )));
            }
            let rel = path.strip_prefix(root).unwrap_or(&path);
            out.push(pb::VolumeFile {
                path: rel.to_string_lossy().into_owned(),
                mode: mode_of(&meta),
                data,
            });
        }
    }
    Ok(())
}

/// Maps one CRI mount (reads the host side for copies).
pub fn plan(m: &Mount) -> Result<GuestMount, VolumeError> {
    if m.container_path.is_empty() || !Path::new(&m.container_path).is_absolute() {
        return Err(VolumeError::Refused(format!(
            "mount container_path {:?} is not absolute",
            m.container_path
        )));
    }
    let host = Path::new(&m.host_path);
    if !host.is_absolute() {
        return Err(VolumeError::Refused(format!(
            "mount host_path {:?} is not absolute",
            m.host_path
        )));
    }
    if let Some(d) = crate::pvdisk::locate(host).map_err(|e| VolumeError::Refused(e.to_string()))? {
        let disk = crate::pvdisk::read(&d.dir).map_err(|e| VolumeError::Refused(e.to_string()))?;
        return Ok(GuestMount::Disk {
            volume: d.volume,
            // A read-only claim is a read-only bind whatever the mount says.
            readonly: m.readonly || disk.read_only,
            disk,
            sub: d.sub,
            container_path: m.container_path.clone(),
        });
    }
    if let Some((name, sub)) = empty_dir_of(host) {
        if sub.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(VolumeError::Refused(format!(
                "emptyDir subPath in {:?} is not a plain relative path",
                m.host_path
            )));
        }
        return Ok(GuestMount::EmptyDir {
            name,
            sub,
            container_path: m.container_path.clone(),
            readonly: m.readonly,
        });
    }
    if let Some(why) = kubelet_file(host) {
        return Ok(GuestMount::Skip(why));
    }
    if !m.readonly {
        return Err(VolumeError::Refused(format!(
            "read-write host path {:?} cannot be mounted into a pod VM (no shared filesystem yet): mount it read-only",
            m.host_path
        )));
    }
    let meta = fs::metadata(host)
        .map_err(|e| VolumeError::Refused(format!("mount host_path {:?}: {e}", m.host_path)))?;
    let mut files = Vec::new();
    let file = if meta.is_dir() {
        collect(host, host, &mut files, &mut 0)?;
        None
    } else if meta.is_file() {
        let data =
            fs::read(host).map_err(|e| VolumeError::Read(format!("{}: {e}", m.host_path)))?;
        if data.len() > MAX_COPY_BYTES {
            return Err(VolumeError::Refused(format!(
                "{}: more than {MAX_COPY_BYTES} bytes to copy into the pod VM",
                m.host_path
            )));
        }
        let name = host
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(".."))
            .unwrap_or_else(|| "file".into());
        files.push(pb::VolumeFile {
            path: name.clone(),
            mode: mode_of(&meta),
            data,
        });
        Some(name)
    } else {
        return Err(VolumeError::Refused(format!(
            "mount host_path {:?} is neither a file nor a directory (devices need a shared filesystem)",
            m.host_path
        )));
    };
    Ok(GuestMount::Copy {
        dir: dir_name(&m.host_path),
        files,
        file,
        container_path: m.container_path.clone(),
        readonly: m.readonly,
    })
}

/// The OCI bind mount of `source` (a guest path) at `destination`.
pub fn oci_bind(source: &str, destination: &str, readonly: bool) -> Value {
    json!({
        "destination": destination,
        "type": "bind",
        "source": source,
        "options": ["rbind", if readonly { "ro" } else { "rw" }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(host: &Path, container: &str, readonly: bool) -> Mount {
        Mount {
            host_path: host.display().to_string(),
            container_path: container.into(),
            readonly,
            ..Default::default()
        }
    }

    /// A kubelet atomic-writer directory with `color` (0440) and `sub/x`.
    fn kubelet_dir(root: &Path) -> PathBuf {
        let vol = root.join("pods/uid/volumes/kubernetes.io~configmap/cfg");
        let v = vol.join("..2026_12_03_16_00_00.123");
        fs::create_dir_all(v.join("sub")).unwrap();
        fs::write(v.join("color"), "blue").unwrap();
        fs::set_permissions(v.join("color"), fs::Permissions::from_mode(0o440)).unwrap();
        fs::write(v.join("sub/x"), "x").unwrap();
        std::os::unix::fs::symlink("..2026_12_03_16_00_00.123", vol.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/color", vol.join("color")).unwrap();
        std::os::unix::fs::symlink("..data/sub", vol.join("sub")).unwrap();
        vol
    }

    #[test]
    fn a_kubelet_volume_is_copied_through_its_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let vol = kubelet_dir(t.path());
        let GuestMount::Copy {
            dir,
            files,
            file,
            container_path,
            readonly,
        } = plan(&mount(&vol, "/etc/cfg", true)).unwrap()
        else {
            panic!("not a copy")
        };
        assert_eq!(dir, dir_name(&vol.display().to_string()));
        assert_eq!(file, None);
        assert_eq!(container_path, "/etc/cfg");
        assert!(readonly);
        let got: Vec<(&str, &[u8])> = files
            .iter()
            .map(|f| (f.path.as_str(), f.data.as_slice()))
            .collect();
        assert_eq!(got, [("color", &b"blue"[..]), ("sub/x", &b"x"[..])]);
        assert_eq!(files[0].mode, 0o440);
    }

    #[test]
    fn a_sub_path_file_is_one_file() {
        let t = tempfile::tempdir().unwrap();
        let vol = kubelet_dir(t.path());
        let GuestMount::Copy { files, file, .. } =
            plan(&mount(&vol.join("color"), "/color", true)).unwrap()
        else {
            panic!("not a copy")
        };
        assert_eq!(file.as_deref(), Some("color"));
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].data, b"blue");
    }

    #[test]
    fn empty_dirs_map_by_name_and_sub_path() {
        let p = Path::new("/d/pods/u/volumes/kubernetes.io~empty-dir/scratch/a/b");
        assert_eq!(
            plan(&mount(p, "/data", false)).unwrap(),
            GuestMount::EmptyDir {
                name: "scratch".into(),
                sub: PathBuf::from("a/b"),
                container_path: "/data".into(),
                readonly: false,
            }
        );
    }

    #[test]
    fn read_write_host_paths_are_refused_by_path() {
        let t = tempfile::tempdir().unwrap();
        let err = plan(&mount(t.path(), "/host", false)).unwrap_err();
        assert!(
            err.to_string().contains(&t.path().display().to_string()),
            "{err}"
        );
        assert!(err.to_string().contains("read-write"), "{err}");
        let missing = plan(&mount(&t.path().join("nope"), "/x", true)).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
        assert!(plan(&mount(t.path(), "rel", true)).is_err());
    }

    #[test]
    fn persistent_volume_mounts_become_disks() {
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("pv.img");
        fs::write(&img, b"").unwrap();
        let dir = t
            .path()
            .join("pods/u/volumes")
            .join(crate::pvdisk::DISK_PLUGIN)
            .join("data");
        fs::create_dir_all(&dir).unwrap();
        let write = |ro: bool| {
            fs::write(
                dir.join(crate::pvdisk::DISK_FILE),
                format!(
                    r#"{{"image":"{}","fsType":"ext4","readOnly":{ro}}}"#,
                    img.display()
                ),
            )
            .unwrap()
        };
        write(false);
        let GuestMount::Disk {
            volume,
            disk,
            sub,
            readonly,
            ..
        } = plan(&mount(&dir.join("logs/app"), "/logs", false)).unwrap()
        else {
            panic!("not a disk")
        };
        assert_eq!(volume, "data");
        assert_eq!(disk.image, img);
        assert_eq!(sub, PathBuf::from("logs/app"));
        assert!(!readonly);
        write(true);
        let GuestMount::Disk { readonly, .. } = plan(&mount(&dir, "/data", false)).unwrap() else {
            panic!("not a disk")
        };
        assert!(readonly, "a read-only claim binds read-only");
        fs::remove_file(dir.join(crate::pvdisk::DISK_FILE)).unwrap();
        let e = plan(&mount(&dir, "/data", false)).unwrap_err().to_string();
        assert!(e.contains("kennel-disk.json"), "{e}");
    }

    #[test]
    fn kubelet_files_are_skipped() {
        let hosts = Path::new("/var/lib/kubelet/pods/u/etc-hosts");
        assert!(matches!(
            plan(&mount(hosts, "/etc/hosts", false)),
            Ok(GuestMount::Skip(_))
        ));
        let term = Path::new("/var/lib/kubelet/pods/u/containers/main/1234abcd");
        assert!(matches!(
            plan(&mount(term, "/dev/termination-log", false)),
            Ok(GuestMount::Skip(_))
        ));
    }
}
