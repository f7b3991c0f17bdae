//! Kubelet's atomic writer: a volume directory whose visible names are symlinks into
//! `..data`, itself a symlink to one timestamped `..<version>` directory that is swapped with
//! rename(2), so readers see either the old or the new payload, never a mix.
//!
//! ```text
//! <dir>/..2026_12_03_16_00_00.123456789/<files>
//! <dir>/..data -> ..2026_12_03_16_00_00.123456789
//! <dir>/<name> -> ..data/<name>
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// One file of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    /// Content.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// A volume's content: relative path → file.
pub type Payload = BTreeMap<String, FileProjection>;

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Errors writing a payload.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// A payload path is not a plain relative path.
    #[error("invalid path {0:?}: must be relative without `..`")]
    BadPath(String),
    /// A file system operation failed.
    #[error("{op}: {source}")]
    Io {
        /// What was attempted.
        op: String,
        /// Cause.
        source: std::io::Error,
    },
}

fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> WriterError {
    let op = op.into();
    move |source| WriterError::Io { op, source }
}

fn check(path: &str) -> Result<PathBuf, WriterError> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(n) if !n.to_string_lossy().starts_with("..")));
    if ok {
        Ok(p.to_path_buf())
    } else {
        Err(WriterError::BadPath(path.to_string()))
    }
}

/// What `..data` holds now (None when there is no readable version).
fn current(dir: &Path) -> Option<Payload> {
    let data = dir.join(DATA);
    fs::read_link(&data).ok()?;
    let mut out = Payload::new();
    fn walk(root: &Path, d: &Path, out: &mut Payload) -> Option<()> {
        for e in fs::read_dir(d).ok()?.flatten() {
            let p = e.path();
            let meta = fs::symlink_metadata(&p).ok()?;
            if meta.is_dir() {
                walk(root, &p, out)?;
            } else {
                let rel = p.strip_prefix(root).ok()?.to_string_lossy().into_owned();
                let mode = meta.permissions().mode() & 0o7777;
                out.insert(
                    rel,
                    FileProjection {
                        data: fs::read(&p).ok()?,
                        mode,
                    },
                );
            }
        }
        Some(())
    }
    walk(&data, &data, &mut out)?;
    Some(out)
}

fn version_name() -> String {
    let now = chrono::Utc::now();
    format!("..{}", now.format("%Y_%m_%d_%H_%M_%S.%9f"))
}

fn fsync_dir(d: &Path) -> Result<(), WriterError> {
    fs::File::open(d)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("syncing {}", d.display())))
}

fn swap_symlink(dir: &Path, tmp: &str, link: &str, target: &str) -> Result<(), WriterError> {
    let tmp = dir.join(tmp);
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(io(format!("linking {}", tmp.display())))?;
    fs::rename(&tmp, dir.join(link)).map_err(io(format!("renaming to {link}")))
}

/// Writes `payload` as the new content of `dir` (created as needed); returns false when the
/// content was already that (nothing written).
pub fn write(dir: &Path, payload: &Payload) -> Result<bool, WriterError> {
    let paths: Vec<PathBuf> = payload.keys().map(|k| check(k)).collect::<Result<_, _>>()?;
    if current(dir).as_ref() == Some(payload) {
        return Ok(false);
    }
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let old = fs::read_link(dir.join(DATA)).ok();
    let version = version_name();
    let vdir = dir.join(&version);
    fs::create_dir(&vdir).map_err(io(format!("creating {}", vdir.display())))?;
    for (rel, f) in paths.iter().zip(payload.values()) {
        let target = vdir.join(rel);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
        }
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(f.mode)
            .open(&target)
            .map_err(io(format!("creating {}", target.display())))?;
        out.write_all(&f.data)
            .and_then(|()| out.set_permissions(fs::Permissions::from_mode(f.mode)))
            .and_then(|()| out.sync_all())
            .map_err(io(format!("writing {}", target.display())))?;
    }
    fsync_dir(&vdir)?;
    swap_symlink(dir, DATA_TMP, DATA, &version)?;
    let top: BTreeSet<String> = paths
        .iter()
        .filter_map(|p| p.components().next())
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    for name in &top {
        let want = format!("{DATA}/{name}");
        if fs::read_link(dir.join(name)).is_ok_and(|t| t == Path::new(&want)) {
            continue;
        }
        swap_symlink(dir, &format!("..{name}.tmp"), name, &want)?;
    }
    // Names no longer in the payload, then the old version.
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !top.contains(&name) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    if let Some(old) = old.filter(|o| o != Path::new(&version)) {
        let _ = fs::remove_dir_all(dir.join(old));
    }
    fsync_dir(dir)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(items: &[(&str, &str, u32)]) -> Payload {
        items
            .iter()
            .map(|(p, d, m)| {
                (
                    p.to_string(),
                    FileProjection {
                        data: d.as_bytes().to_vec(),
                        mode: *m,
                    },
                )
            })
            .collect()
    }

    fn hidden(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != DATA)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn lays_out_versions_data_and_visible_symlinks_with_modes() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("vol");
        assert!(write(
            &dir,
            &payload(&[("color", "blue", 0o400), ("conf/a", "x", 0o644)])
        )
        .unwrap());
        assert_eq!(
            fs::read_link(dir.join("color")).unwrap(),
            Path::new("..data/color")
        );
        assert_eq!(
            fs::read_link(dir.join("conf")).unwrap(),
            Path::new("..data/conf")
        );
        let v = fs::read_link(dir.join(DATA)).unwrap();
        assert!(v.to_string_lossy().starts_with("..20"), "{v:?}");
        assert_eq!(fs::read_to_string(dir.join("color")).unwrap(), "blue");
        assert_eq!(fs::read_to_string(dir.join("conf/a")).unwrap(), "x");
        let mode = fs::metadata(dir.join("color"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o400);
        assert_eq!(hidden(&dir).len(), 1);
    }

    #[test]
    fn an_unchanged_payload_writes_nothing_and_a_change_swaps() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("vol");
        let p1 = payload(&[("a", "1", 0o644), ("b", "1", 0o644)]);
        write(&dir, &p1).unwrap();
        let first = fs::read_link(dir.join(DATA)).unwrap();
        assert!(!write(&dir, &p1).unwrap());
        assert_eq!(fs::read_link(dir.join(DATA)).unwrap(), first);
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(write(&dir, &payload(&[("a", "2", 0o600)])).unwrap());
        assert_ne!(fs::read_link(dir.join(DATA)).unwrap(), first);
        assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "2");
        assert!(fs::symlink_metadata(dir.join("b")).is_err());
        assert_eq!(hidden(&dir).len(), 1, "old version removed");
        let mode = fs::metadata(dir.join("a")).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "a mode change is a change");
    }

    #[test]
    fn bad_paths_are_refused_before_anything_is_written() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("vol");
        for p in ["../x", "/abs", "a/../../b", "..data", ""] {
            assert!(
                matches!(
                    write(&dir, &payload(&[(p, "", 0o644)])),
                    Err(WriterError::BadPath(_))
                ),
                "{p}"
            );
        }
        assert!(!dir.exists());
    }
}
