//! Copied volumes (PutFiles) and pod-wide emptyDirs (EnsureEmptyDir).
//!
//! A copied volume is written in kubelet's atomic-writer layout, so a container that has the
//! volume directory bind-mounted sees every update as one swap:
//!
//! ```text
//! <root>/<dir>/..<version>/<files>       the content of one version
//! <root>/<dir>/..data -> ..<version>     swapped with rename(2)
//! <root>/<dir>/<name> -> ..data/<name>   one symlink per top-level name
//! ```
//!
//! A new version is written into a fresh hidden directory and fsynced before `..data` is
//! renamed over; a crash at any point leaves the old version whole. Old versions are removed
//! after the swap.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use agent_proto::pb;

/// Most bytes of file data one PutFiles may carry (the gRPC message limit is 4 MiB;
/// a ConfigMap or Secret holds at most 1 MiB).
pub const MAX_TOTAL_BYTES: usize = 3 << 20;
/// Most files one PutFiles may carry.
pub const MAX_FILES: usize = 1024;

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Errors writing volume files.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A request field is invalid.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// Offending field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A file system operation failed.
    #[error("{op}")]
    Io {
        /// What was attempted.
        op: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn bad(field: impl Into<String>, reason: impl Into<String>) -> FilesError {
    FilesError::InvalidArgument {
        field: field.into(),
        reason: reason.into(),
    }
}

fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> FilesError {
    let op = op.into();
    move |source| FilesError::Io { op, source }
}

/// Where volumes live in the guest (both on tmpfs under the agent's state dir, `/run/kennel`).
#[derive(Debug, Clone)]
pub struct Roots {
    /// Copied volumes.
    pub volumes: PathBuf,
    /// emptyDirs.
    pub empty_dirs: PathBuf,
}

impl Roots {
    /// The roots under a state directory.
    pub fn under(state_dir: &Path) -> Self {
        Self {
            volumes: state_dir.join("volumes"),
            empty_dirs: state_dir.join("empty-dir"),
        }
    }
}

/// Checks a one-component name (volume dir, emptyDir name).
fn check_name(field: &str, name: &str) -> Result<(), FilesError> {
    if name.is_empty() || name.len() > 255 {
        return Err(bad(field, "must be 1 to 255 bytes"));
    }
    if name.contains('/') || name.contains('\0') || name.starts_with("..") || name == "." {
        return Err(bad(field, format!("{name:?} is not a plain name")));
    }
    Ok(())
}

/// Checks a file's relative path: normal components only, none hidden as `..*`.
fn check_path(field: &str, path: &str) -> Result<PathBuf, FilesError> {
    if path.is_empty() || path.len() > 4096 || path.contains('\0') {
        return Err(bad(field, "must be a non-empty relative path"));
    }
    let p = Path::new(path);
    if p.is_absolute() {
        return Err(bad(field, format!("{path:?} is absolute")));
    }
    let mut clean = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) if !n.to_string_lossy().starts_with("..") => clean.push(n),
            _ => return Err(bad(field, format!("{path:?} must not contain `..` or `.`"))),
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(bad(field, format!("{path:?} names no file")));
    }
    Ok(clean)
}

/// Validates a request; returns the clean paths in request order.
fn validate(req: &pb::PutFilesRequest) -> Result<Vec<PathBuf>, FilesError> {
    check_name("dir", &req.dir)?;
    if req.files.len() > MAX_FILES {
        return Err(bad("files", format!("more than {MAX_FILES} files")));
    }
    let total: usize = req.files.iter().map(|f| f.data.len()).sum();
    if total > MAX_TOTAL_BYTES {
        return Err(bad(
            "files",
            format!("{total} bytes exceed the {MAX_TOTAL_BYTES}-byte limit"),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(req.files.len());
    for (i, f) in req.files.iter().enumerate() {
        let p = check_path(&format!("files[{i}].path"), &f.path)?;
        if f.mode > 0o7777 {
            return Err(bad(
                format!("files[{i}].mode"),
                format!("{:#o} is not a permission mode", f.mode),
            ));
        }
        if !seen.insert(p.clone()) {
            return Err(bad(
                format!("files[{i}].path"),
                format!("{:?} is given twice", f.path),
            ));
        }
        out.push(p);
    }
    // A path that is both a file and a directory ("a" and "a/b") cannot be laid out.
    for p in &out {
        let mut parent = p.parent();
        while let Some(d) = parent.filter(|d| !d.as_os_str().is_empty()) {
            if seen.contains(d) {
                return Err(bad(
                    "files",
                    format!("{} is both a file and a directory", d.display()),
                ));
            }
            parent = d.parent();
        }
    }
    Ok(out)
}

fn fsync_dir(dir: &Path) -> Result<(), FilesError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("syncing {}", dir.display())))
}

fn version_name() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("..{}.{:09}", now.as_secs(), now.subsec_nanos())
}

/// Replaces `link` with a symlink to `target` atomically (symlink beside it, then rename).
fn swap_symlink(dir: &Path, tmp: &str, link: &str, target: &str) -> Result<(), FilesError> {
    let tmp = dir.join(tmp);
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(io(format!("linking {}", tmp.display())))?;
    fs::rename(&tmp, dir.join(link)).map_err(io(format!("renaming {link}")))
}

/// PutFiles: writes the request's files as the new version of `<root>/<dir>`; returns the
/// volume directory.
pub fn put_files(roots: &Roots, req: &pb::PutFilesRequest) -> Result<PathBuf, FilesError> {
    let paths = validate(req)?;
    let vol = roots.volumes.join(&req.dir);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&vol)
        .map_err(io(format!("creating {}", vol.display())))?;
    let version = version_name();
    let vdir = vol.join(&version);
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&vdir)
        .map_err(io(format!("creating {}", vdir.display())))?;
    let mut dirs = BTreeSet::from([vdir.clone()]);
    for (f, rel) in req.files.iter().zip(&paths) {
        let target = vdir.join(rel);
        if let Some(parent) = target.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(io(format!("creating {}", parent.display())))?;
            dirs.insert(parent.to_path_buf());
        }
        let mode = if f.mode == 0 { 0o644 } else { f.mode };
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&target)
            .map_err(io(format!("creating {}", target.display())))?;
        out.write_all(&f.data)
            .and_then(|()| out.set_permissions(fs::Permissions::from_mode(mode)))
            .and_then(|()| out.sync_all())
            .map_err(io(format!("writing {}", target.display())))?;
    }
    for d in dirs.iter().rev() {
        fsync_dir(d)?;
    }
    // The swap: from here on readers see the new version.
    swap_symlink(&vol, DATA_TMP, DATA, &version)?;
    let top: BTreeSet<String> = paths
        .iter()
        .filter_map(|p| p.components().next())
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    for name in &top {
        let link = vol.join(name);
        let want = format!("{DATA}/{name}");
        if fs::read_link(&link).is_ok_and(|t| t == Path::new(&want)) {
            continue;
        }
        swap_symlink(&vol, &format!("..{name}.tmp"), name, &want)?;
    }
    fsync_dir(&vol)?;
    // Old versions and names that are gone.
    let entries = fs::read_dir(&vol).map_err(io(format!("listing {}", vol.display())))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == DATA || name == version {
            continue;
        }
        let res = if name.starts_with("..") {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(e.path())
            } else {
                fs::remove_file(e.path())
            }
        } else if !top.contains(&name) {
            fs::remove_file(e.path())
        } else {
            Ok(())
        };
        if let Err(err) = res {
            tracing::warn!("volume {}: removing {name}: {err}", req.dir);
        }
    }
    Ok(vol)
}

/// EnsureEmptyDir: `<empty_dirs>/<name>`, mode 0777 as kubelet makes it; kept when it exists.
pub fn ensure_empty_dir(roots: &Roots, name: &str) -> Result<PathBuf, FilesError> {
    check_name("name", name)?;
    let dir = roots.empty_dirs.join(name);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&roots.empty_dirs)
        .map_err(io(format!("creating {}", roots.empty_dirs.display())))?;
    match fs::DirBuilder::new().mode(0o777).create(&dir) {
        Ok(()) => fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))
            .map_err(io(format!("chmod {}", dir.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(format!("creating {}", dir.display()))(e)),
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, mode: u32, data: &str) -> pb::VolumeFile {
        pb::VolumeFile {
            path: path.into(),
            mode,
            data: data.as_bytes().to_vec(),
        }
    }

    fn req(dir: &str, files: Vec<pb::VolumeFile>) -> pb::PutFilesRequest {
        pb::PutFilesRequest {
            dir: dir.into(),
            files,
        }
    }

    fn roots(t: &tempfile::TempDir) -> Roots {
        Roots::under(t.path())
    }

    fn versions(vol: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(vol)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != DATA)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_the_atomic_writer_layout_with_modes() {
        let t = tempfile::tempdir().unwrap();
        let r = roots(&t);
        let vol = put_files(
            &r,
            &req(
                "cfg",
                vec![file("color", 0o400, "blue"), file("sub/x.conf", 0, "x")],
            ),
        )
        .unwrap();
        assert_eq!(fs::read_to_string(vol.join("color")).unwrap(), "blue");
        assert_eq!(fs::read_to_string(vol.join("sub/x.conf")).unwrap(), "x");
        assert_eq!(
            fs::read_link(vol.join("color")).unwrap(),
            Path::new("..data/color")
        );
        let mode = fs::metadata(vol.join("color"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o400);
        let mode = fs::metadata(vol.join("sub/x.conf"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o644);
        assert_eq!(versions(&vol).len(), 1);
    }

    #[test]
    fn a_new_version_swaps_and_drops_the_old_one() {
        let t = tempfile::tempdir().unwrap();
        let r = roots(&t);
        let vol = put_files(&r, &req("cfg", vec![file("a", 0, "1"), file("b", 0, "1")])).unwrap();
        let first = versions(&vol);
        let vol = put_files(&r, &req("cfg", vec![file("a", 0, "2")])).unwrap();
        assert_eq!(fs::read_to_string(vol.join("a")).unwrap(), "2");
        assert!(fs::symlink_metadata(vol.join("b")).is_err(), "b is gone");
        let second = versions(&vol);
        assert_eq!(second.len(), 1);
        assert_ne!(first, second);
    }

    #[test]
    fn a_failed_write_keeps_the_old_version() {
        let t = tempfile::tempdir().unwrap();
        let r = roots(&t);
        let vol = put_files(&r, &req("cfg", vec![file("a", 0, "old")])).unwrap();
        // A crash after the new version's directory was half-written: a stray `..<v>` dir.
        fs::create_dir(vol.join("..9999.half")).unwrap();
        fs::write(vol.join("..9999.half/a"), "half").unwrap();
        assert_eq!(fs::read_to_string(vol.join("a")).unwrap(), "old");
        // A refused request changes nothing.
        assert!(put_files(&r, &req("cfg", vec![file("../a", 0, "x")])).is_err());
        assert_eq!(fs::read_to_string(vol.join("a")).unwrap(), "old");
        // The next good write cleans the leftover.
        put_files(&r, &req("cfg", vec![file("a", 0, "new")])).unwrap();
        assert_eq!(fs::read_to_string(vol.join("a")).unwrap(), "new");
        assert_eq!(versions(&vol).len(), 1);
    }

    #[test]
    fn bad_input_is_refused_by_field() {
        let t = tempfile::tempdir().unwrap();
        let r = roots(&t);
        let cases = [
            (req("", vec![]), "dir"),
            (req("a/b", vec![]), "dir"),
            (req("..x", vec![]), "dir"),
            (req("v", vec![file("/etc/passwd", 0, "")]), "files[0].path"),
            (req("v", vec![file("a/../../b", 0, "")]), "files[0].path"),
            (req("v", vec![file("..data", 0, "")]), "files[0].path"),
            (req("v", vec![file("a", 0o17777, "")]), "files[0].mode"),
            (
                req("v", vec![file("a", 0, ""), file("a", 0, "")]),
                "files[1].path",
            ),
            (
                req("v", vec![file("a", 0, ""), file("a/b", 0, "")]),
                "files",
            ),
        ];
        for (rq, field) in cases {
            match put_files(&r, &rq) {
                Err(FilesError::InvalidArgument { field: f, .. }) => assert_eq!(f, field, "{rq:?}"),
                other => panic!("{rq:?}: {other:?}"),
            }
        }
        let big = pb::VolumeFile {
            path: "big".into(),
            mode: 0,
            data: vec![0; MAX_TOTAL_BYTES + 1],
        };
        assert!(put_files(&r, &req("v", vec![big])).is_err());
        assert!(
            !r.volumes.join("v").exists(),
            "nothing written for refused input"
        );
    }

    #[test]
    fn empty_dirs_are_shared_and_kept() {
        let t = tempfile::tempdir().unwrap();
        let r = roots(&t);
        let d = ensure_empty_dir(&r, "scratch").unwrap();
        fs::write(d.join("f"), "x").unwrap();
        assert_eq!(ensure_empty_dir(&r, "scratch").unwrap(), d);
        assert!(d.join("f").exists());
        let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o777);
        assert!(ensure_empty_dir(&r, "../x").is_err());
    }
}
