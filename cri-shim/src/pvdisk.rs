//! The contract with the node agent for persistent volumes: block images on the host, attached
//! to the pod VM read-write as virtio-blk disks (one attach per sandbox and image).
//!
//! For a pod volume backed by a PersistentVolume the node agent creates the directory
//! `<kubelet pods root>/<pod uid>/volumes/kubernetes.io~kennel-disk/<volume name>/` and writes
//! in it, atomically, [`DISK_FILE`]:
//! `{"image": "/abs/path/of/a/file/holding/a/filesystem", "fsType": "ext4", "readOnly": false}`.
//! The node agent creates and formats the image; kennel-cri never formats. Each CRI mount of
//! that volume has `host_path` = that directory, or `<that directory>/<subPath>` (the subPath
//! names a path inside the disk's filesystem, not on the host), and `readonly` set when the
//! mount or the claim is read-only.

use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

/// The node agent's volume plugin directory name for disk-backed volumes.
pub const DISK_PLUGIN: &str = "kubernetes.io~kennel-disk";
/// The descriptor the node agent writes in each volume directory.
pub const DISK_FILE: &str = "kennel-disk.json";
/// Where a volume disk is mounted in the guest: `<GUEST_ROOT>/<serial>`.
pub const GUEST_ROOT: &str = "/run/kennel/pv";

/// Errors reading a volume's descriptor.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PvDiskError {
    /// The descriptor is missing, unreadable or invalid; the message names the file and the
    /// field.
    #[error("{file}: {reason}")]
    Descriptor {
        /// The `kennel-disk.json` path.
        file: String,
        /// What is wrong (names the field).
        reason: String,
    },
    /// The host path's subPath is not a plain relative path.
    #[error("subPath {sub:?} of volume {volume:?} is not a plain relative path (no `..`)")]
    SubPath {
        /// Volume name.
        volume: String,
        /// The subPath.
        sub: String,
    },
}

/// `kennel-disk.json`, exactly as the node agent writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiskDescriptor {
    /// Absolute path of a regular file holding a filesystem.
    pub image: PathBuf,
    /// Filesystem type, e.g. `ext4`.
    pub fs_type: String,
    /// The claim is read-only: the disk is attached read-only (shared by VMs).
    pub read_only: bool,
}

/// A CRI mount that lies in a disk-backed volume directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskMount {
    /// Volume name (the directory under [`DISK_PLUGIN`]).
    pub volume: String,
    /// The volume directory (holding [`DISK_FILE`]).
    pub dir: PathBuf,
    /// Path inside the disk's filesystem (empty: its root).
    pub sub: PathBuf,
}

/// `Some` when `host_path` is a disk-backed volume directory or a path below one: walks up to
/// the `kubernetes.io~kennel-disk/<name>` directory.
pub fn locate(host_path: &Path) -> Result<Option<DiskMount>, PvDiskError> {
    let comps: Vec<Component> = host_path.components().collect();
    let Some(i) = comps.iter().rposition(|c| c.as_os_str() == DISK_PLUGIN) else {
        return Ok(None);
    };
    let Some(name) = comps.get(i + 1) else {
        return Ok(None);
    };
    let volume = name.as_os_str().to_string_lossy().into_owned();
    let dir: PathBuf = comps[..=i + 1].iter().collect();
    let rest = &comps[i + 2..];
    if rest.iter().any(|c| !matches!(c, Component::Normal(_))) || volume == ".." {
        let sub: PathBuf = rest.iter().collect();
        return Err(PvDiskError::SubPath {
            volume,
            sub: sub.display().to_string(),
        });
    }
    Ok(Some(DiskMount {
        volume,
        sub: rest.iter().collect(),
        dir,
    }))
}

/// Checks a descriptor's fields (`file` names it in errors).
pub fn validate(d: &DiskDescriptor, file: &Path) -> Result<(), PvDiskError> {
    let bad = |reason: String| PvDiskError::Descriptor {
        file: file.display().to_string(),
        reason,
    };
    if !d.image.is_absolute() {
        return Err(bad(format!(
            "field \"image\": {:?} is not an absolute path",
            d.image.display()
        )));
    }
    match std::fs::metadata(&d.image) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(bad(format!(
                "field \"image\": {} is not a regular file",
                d.image.display()
            )))
        }
        Err(e) => return Err(bad(format!("field \"image\": {}: {e}", d.image.display()))),
    }
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_';
    if d.fs_type.is_empty() || !d.fs_type.chars().all(ok) {
        return Err(bad(format!(
            "field \"fsType\": {:?} is not a filesystem type",
            d.fs_type
        )));
    }
    Ok(())
}

/// Reads and validates `<dir>/kennel-disk.json`.
pub fn read(dir: &Path) -> Result<DiskDescriptor, PvDiskError> {
    let file = dir.join(DISK_FILE);
    let bad = |reason: String| PvDiskError::Descriptor {
        file: file.display().to_string(),
        reason,
    };
    let data = std::fs::read(&file).map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value =
        serde_json::from_slice(&data).map_err(|e| bad(format!("not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    if let Some(k) = obj
        .keys()
        .find(|k| !["image", "fsType", "readOnly"].contains(&k.as_str()))
    {
        return Err(bad(format!(
            "unknown field {k:?} (expected image, fsType, readOnly)"
        )));
    }
    let field = |name: &str| {
        obj.get(name)
            .ok_or_else(|| bad(format!("field {name:?} is missing")))
    };
    let string = |name: &str| {
        field(name)?
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| bad(format!("field {name:?} must be a string")))
    };
    let d = DiskDescriptor {
        image: string("image")?.into(),
        fs_type: string("fsType")?,
        read_only: field("readOnly")?
            .as_bool()
            .ok_or_else(|| bad("field \"readOnly\" must be true or false".into()))?,
    };
    validate(&d, &file)?;
    Ok(d)
}

/// The disk serial of an image (at most 20 bytes: `pv-` + 16 hex of its path's FNV-1a hash).
pub fn serial_for(image: &Path) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in image.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("pv-{h:016x}")
}

/// The guest mount point of a volume disk.
pub fn guest_mount_point(serial: &str) -> String {
    format!("{GUEST_ROOT}/{serial}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(root: &Path, json: &str) -> PathBuf {
        let dir = root.join("pods/uid/volumes").join(DISK_PLUGIN).join("data");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(DISK_FILE), json).unwrap();
        dir
    }

    #[test]
    fn mounts_are_located_by_their_volume_directory() {
        let p = Path::new("/k/pods/u/volumes/kubernetes.io~kennel-disk/data");
        let m = locate(p).unwrap().unwrap();
        assert_eq!(m.volume, "data");
        assert_eq!(m.dir, p);
        assert_eq!(m.sub, PathBuf::new());
        let m = locate(&p.join("a/b")).unwrap().unwrap();
        assert_eq!((m.dir.as_path(), m.sub.as_path()), (p, Path::new("a/b")));
        assert_eq!(locate(Path::new("/k/pods/u/volumes/x/y")).unwrap(), None);
        assert_eq!(
            locate(Path::new("/k/volumes/kubernetes.io~kennel-disk")).unwrap(),
            None
        );
        let e = locate(&p.join("a/../../etc")).unwrap_err();
        assert!(e.to_string().contains("subPath"), "{e}");
    }

    #[test]
    fn a_good_descriptor_reads() {
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("disk.img");
        std::fs::write(&img, b"").unwrap();
        let json = format!(
            r#"{{"image": "{}", "fsType": "ext4", "readOnly": false}}"#,
            img.display()
        );
        let d = read(&volume(t.path(), &json)).unwrap();
        assert_eq!(
            d,
            DiskDescriptor {
                image: img,
                fs_type: "ext4".into(),
                read_only: false
            }
        );
    }

    #[test]
    fn bad_descriptors_name_the_file_and_the_field() {
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("disk.img");
        std::fs::write(&img, b"").unwrap();
        let i = img.display();
        for (json, field) in [
            (
                r#"{"fsType": "ext4", "readOnly": false}"#.to_string(),
                "image",
            ),
            ("[1]".to_string(), "object"),
            ("{".to_string(), "JSON"),
            (
                r#"{"image": 3, "fsType": "ext4", "readOnly": false}"#.into(),
                "image",
            ),
            (
                format!(r#"{{"image": "{i}", "readOnly": false}}"#),
                "fsType",
            ),
            (
                format!(r#"{{"image": "{i}", "fsType": "ext4"}}"#),
                "readOnly",
            ),
            (
                format!(r#"{{"image": "{i}", "fsType": "ext4", "readOnly": "no"}}"#),
                "readOnly",
            ),
            (
                r#"{"image": "rel.img", "fsType": "ext4", "readOnly": false}"#.into(),
                "image",
            ),
            (
                format!(
                    r#"{{"image": "{}", "fsType": "ext4", "readOnly": false}}"#,
                    t.path().display()
                ),
                "image",
            ),
            (
                format!(r#"{{"image": "{i}.missing", "fsType": "ext4", "readOnly": false}}"#),
                "image",
            ),
            (
                format!(r#"{{"image": "{i}", "fsType": "ext4,rw", "readOnly": false}}"#),
                "fsType",
            ),
            (
                format!(r#"{{"image": "{i}", "fsType": "ext4", "readOnly": false, "size": 1}}"#),
                "size",
            ),
        ] {
            let dir = volume(t.path(), &json);
            let e = read(&dir).unwrap_err().to_string();
            assert!(e.contains(DISK_FILE), "{json}: {e}");
            assert!(e.contains(field), "{json}: {e}");
        }
        let e = read(&t.path().join("nowhere")).unwrap_err().to_string();
        assert!(e.contains("nowhere/kennel-disk.json"), "{e}");
    }

    #[test]
    fn serials_fit_virtio_blk() {
        let s = serial_for(Path::new("/var/lib/kennel/pv/a.img"));
        assert!(s.len() <= 20 && s.starts_with("pv-"), "{s}");
        assert_ne!(s, serial_for(Path::new("/var/lib/kennel/pv/b.img")));
        assert_eq!(guest_mount_point(&s), format!("/run/kennel/pv/{s}"));
    }
}
