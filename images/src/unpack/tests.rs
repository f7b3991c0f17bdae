use super::*;
use std::os::unix::fs::MetadataExt as _;

/// Builds a tar with raw names (so malicious paths can be written).
struct T(tar::Builder<Vec<u8>>);

impl T {
    fn new() -> Self {
        T(tar::Builder::new(Vec::new()))
    }
    fn raw(mut self, name: &str, kind: tar::EntryType, link: &str, data: &[u8], mode: u32) -> Self {
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(1234);
        h.set_gid(4321);
        h.set_mtime(1_000_000);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }
    fn file(self, name: &str, data: &str) -> Self {
        self.raw(name, tar::EntryType::Regular, "", data.as_bytes(), 0o644)
    }
    fn dir(self, name: &str) -> Self {
        self.raw(name, tar::EntryType::Directory, "", b"", 0o755)
    }
    fn symlink(self, name: &str, target: &str) -> Self {
        self.raw(name, tar::EntryType::Symlink, target, b"", 0o777)
    }
    fn link(self, name: &str, target: &str) -> Self {
        self.raw(name, tar::EntryType::Link, target, b"", 0o644)
    }
    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
    fn gz(self) -> Vec<u8> {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&self.bytes()).unwrap();
        e.finish().unwrap()
    }
}

/// A sandbox: `outside/` sits next to `root/` so escapes are observable.
fn sandbox() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    let outside = d.path().join("outside");
    fs::create_dir(&root).unwrap();
    fs::create_dir(&outside).unwrap();
    (d, root, outside)
}

fn empty(p: &Path) -> bool {
    fs::read_dir(p).unwrap().next().is_none()
}

#[test]
fn layers_apply_with_whiteouts_links_and_modes() {
    let (_d, root, _) = sandbox();
    let l1 = T::new()
        .dir("etc/")
        .file("etc/passwd", "root:x:0:0")
        .file("etc/gone", "x")
        .dir("var/cache/")
        .file("var/cache/a", "a")
        .file("var/cache/b", "b")
        .raw("bin/tool", tar::EntryType::Regular, "", b"#!", 0o4755)
        .link("bin/tool2", "bin/tool")
        .symlink("bin/sh", "tool")
        .raw("dev/null", tar::EntryType::Char, "", b"", 0o666)
        .gz();
    let s = unpack_layer(&l1[..], &root).unwrap();
    assert_eq!((s.files, s.hardlinks, s.symlinks, s.skipped), (5, 1, 1, 1));
    let l2 = T::new()
        .file("etc/.wh.gone", "")
        .file("var/cache/c", "c")
        .file("var/cache/.wh..wh..opq", "")
        .bytes();
    let s = unpack_layer(&l2[..], &root).unwrap();
    assert_eq!(s.whiteouts, 2);
    assert!(!root.join("etc/gone").exists());
    assert_eq!(
        fs::read_to_string(root.join("etc/passwd")).unwrap(),
        "root:x:0:0"
    );
    let mut cache: Vec<_> = fs::read_dir(root.join("var/cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    cache.sort();
    assert_eq!(cache, vec![OsString::from("c")]);
    let md = fs::metadata(root.join("bin/tool")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o4755);
    assert_eq!(md.nlink(), 2);
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        PathBuf::from("tool")
    );
    assert!(!root.join("dev/null").exists());
    if effective_uid() == 0 {
        assert_eq!((md.uid(), md.gid()), (1234, 4321));
    }
}

#[test]
fn file_replaces_dir_and_symlink_is_replaced_not_followed() {
    let (_d, root, outside) = sandbox();
    let l1 = T::new()
        .dir("a/")
        .file("a/x", "x")
        .symlink("s", "/etc/hostname")
        .bytes();
    unpack_layer(&l1[..], &root).unwrap();
    let l2 = T::new().file("a", "now a file").file("s", "plain").bytes();
    unpack_layer(&l2[..], &root).unwrap();
    assert_eq!(fs::read_to_string(root.join("a")).unwrap(), "now a file");
    assert!(!fs::symlink_metadata(root.join("s"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(empty(&outside));
}

#[test]
fn absolute_symlinks_in_parents_resolve_inside_root() {
    let (_d, root, _) = sandbox();
    // usr-merge style: lib -> /usr/lib; writing lib/x must land in root/usr/lib/x
    let l = T::new()
        .dir("usr/lib/")
        .symlink("lib", "/usr/lib")
        .file("lib/x", "x")
        .bytes();
    unpack_layer(&l[..], &root).unwrap();
    assert_eq!(fs::read_to_string(root.join("usr/lib/x")).unwrap(), "x");
}

#[test]
fn rejects_dotdot_entries() {
    let (_d, root, outside) = sandbox();
    let l = T::new().file("../outside/evil", "pwned").bytes();
    let e = unpack_layer(&l[..], &root).unwrap_err();
    assert!(matches!(e, UnpackError::Traversal(_)), "{e}");
    assert!(e.to_string().contains("path traversal"));
    assert!(empty(&outside));
}

#[test]
fn rejects_absolute_entries() {
    let (_d, root, outside) = sandbox();
    let evil = format!("{}/evil", outside.display());
    let l = T::new().file(&evil, "pwned").bytes();
    assert!(matches!(
        unpack_layer(&l[..], &root),
        Err(UnpackError::Absolute(_))
    ));
    assert!(empty(&outside));
}

#[test]
fn rejects_escaping_symlink_entry() {
    let (_d, root, outside) = sandbox();
    let l = T::new()
        .symlink("esc", "../outside")
        .file("esc/evil", "pwned")
        .bytes();
    let e = unpack_layer(&l[..], &root).unwrap_err();
    assert!(matches!(e, UnpackError::EscapingSymlink { .. }), "{e}");
    assert!(empty(&outside));
    assert!(!root.join("esc").exists());
}

#[test]
fn pre_existing_escaping_symlink_is_not_followed() {
    let (_d, root, outside) = sandbox();
    // a symlink smuggled in by other means (e.g. a lower layer built elsewhere)
    std::os::unix::fs::symlink("../../outside", root.join("esc")).unwrap();
    let l = T::new().file("esc/evil", "pwned").bytes();
    assert!(matches!(
        unpack_layer(&l[..], &root),
        Err(UnpackError::EscapingSymlink { .. })
    ));
    // absolute symlink to the host path: interpreted inside the root
    std::os::unix::fs::symlink(&outside, root.join("abs")).unwrap();
    let l = T::new().file("abs/evil", "contained").bytes();
    unpack_layer(&l[..], &root).unwrap();
    assert!(empty(&outside));
    assert!(root
        .join(outside.strip_prefix("/").unwrap())
        .join("evil")
        .exists());
}

#[test]
fn rejects_bad_hardlinks_and_whiteouts() {
    let (_d, root, outside) = sandbox();
    fs::write(outside.join("secret"), "s").unwrap();
    let l = T::new().link("h", "../outside/secret").bytes();
    assert!(matches!(
        unpack_layer(&l[..], &root),
        Err(UnpackError::Traversal(_))
    ));
    let l = T::new().link("h", "missing").bytes();
    assert!(matches!(
        unpack_layer(&l[..], &root),
        Err(UnpackError::Hardlink { .. })
    ));
    let l = T::new().file(".wh...", "").bytes();
    assert!(unpack_layer(&l[..], &root).is_err());
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
}

#[test]
fn symlink_loop_is_an_error() {
    let (_d, root, _) = sandbox();
    let l = T::new()
        .symlink("a", "b")
        .symlink("b", "a")
        .file("a/x", "x")
        .bytes();
    assert!(matches!(
        unpack_layer(&l[..], &root),
        Err(UnpackError::SymlinkLoop(_))
    ));
}

#[test]
fn garbage_is_a_clear_error() {
    let (_d, root, _) = sandbox();
    assert!(matches!(
        unpack_layer(&[0x28, 0xb5, 0x2f, 0xfd, 0][..], &root),
        Err(UnpackError::Compression("zstd"))
    ));
    let e = unpack_layer(&[0x1f, 0x8b, 1, 2, 3][..], &root).unwrap_err();
    assert!(matches!(e, UnpackError::Archive(_)), "{e}");
}
