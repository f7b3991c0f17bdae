//! An initramfs builder: an uncompressed newc cpio holding a static `/init`, the device nodes the
//! kernel needs before devtmpfs is mounted (`/dev/console`, `/dev/null`) and any extra files.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Errors building an initramfs.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// A source file cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// Path given.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A destination path is not absolute or climbs out of the root.
    #[error("invalid path in initramfs: {0:?} (must be absolute, without '..')")]
    BadPath(String),
    /// Two entries claim one path with different kinds.
    #[error("{0} is added twice")]
    Duplicate(String),
    /// The output cannot be written.
    #[error("cannot write initramfs {path}")]
    Write {
        /// Output path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    CharDev(u32, u32),
}

/// An initramfs being assembled; entries are written parents first, in path order.
#[derive(Debug, Clone)]
pub struct Initramfs {
    entries: BTreeMap<String, (Node, u32)>,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl Default for Initramfs {
    fn default() -> Self {
        Self::new()
    }
}

impl Initramfs {
    /// An image with `/dev/console`, `/dev/null` and the usual empty mount points.
    pub fn new() -> Self {
        let mut me = Self {
            entries: BTreeMap::new(),
        };
        for dir in ["/dev", "/proc", "/sys", "/run", "/tmp", "/mnt"] {
            me.entries.insert(dir.into(), (Node::Dir, 0o755));
        }
        me.entries
            .insert("/dev/console".into(), (Node::CharDev(5, 1), 0o600));
        me.entries
            .insert("/dev/null".into(), (Node::CharDev(1, 3), 0o666));
        me
    }

    /// Adds the program the kernel runs first, as `/init`.
    pub fn init(&mut self, binary: &Path) -> Result<&mut Self, InitramfsError> {
        self.file_from("/init", binary, 0o755)
    }

    /// Adds a file read from the host.
    pub fn file_from(
        &mut self,
        dst: &str,
        src: &Path,
        mode: u32,
    ) -> Result<&mut Self, InitramfsError> {
        let data = std::fs::read(src).map_err(|source| InitramfsError::Read {
            path: src.display().to_string(),
            source,
        })?;
        self.file(dst, data, mode)
    }

    /// Adds a file with the given contents.
    pub fn file(
        &mut self,
        dst: &str,
        data: Vec<u8>,
        mode: u32,
    ) -> Result<&mut Self, InitramfsError> {
        self.add(dst, Node::File(data), mode)
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, dst: &str, target: &str) -> Result<&mut Self, InitramfsError> {
        self.add(dst, Node::Symlink(target.into()), 0o777)
    }

    /// Adds a directory.
    pub fn dir(&mut self, dst: &str, mode: u32) -> Result<&mut Self, InitramfsError> {
        self.add(dst, Node::Dir, mode)
    }

    fn add(&mut self, dst: &str, node: Node, mode: u32) -> Result<&mut Self, InitramfsError> {
        let path = normalize(dst)?;
        let parts: Vec<&str> = path[1..].split('/').collect();
        for depth in 1..parts.len() {
            let parent = format!("/{}", parts[..depth].join("/"));
            match self.entries.get(&parent) {
                Some((Node::Dir, _)) => {}
                Some(_) => return Err(InitramfsError::Duplicate(parent)),
                None => {
                    self.entries.insert(parent, (Node::Dir, 0o755));
                }
            }
        }
        // A directory may be re-added and a file replaced, but a path never changes kind
        // between directory and non-directory.
        if let Some((old, _)) = self.entries.get(&path) {
            if (*old == Node::Dir) != (node == Node::Dir) {
                return Err(InitramfsError::Duplicate(path));
            }
        }
        self.entries.insert(path, (node, mode & 0o7777));
        Ok(self)
    }

    /// Writes the cpio archive.
    pub fn write<W: Write>(&self, mut out: W) -> std::io::Result<()> {
        for (ino, (path, (node, mode))) in (1u32..).zip(self.entries.iter()) {
            let name = path.trim_start_matches('/');
            let (kind, data, rdev): (u32, &[u8], (u32, u32)) = match node {
                Node::Dir => (S_IFDIR, &[], (0, 0)),
                Node::File(d) => (S_IFREG, d, (0, 0)),
                Node::Symlink(t) => (S_IFLNK, t.as_bytes(), (0, 0)),
                Node::CharDev(ma, mi) => (S_IFCHR, &[], (*ma, *mi)),
            };
            let nlink = if kind == S_IFDIR { 2 } else { 1 };
            entry(&mut out, ino, kind | mode, nlink, name, data, rdev)?;
        }
        entry(&mut out, 0, 0, 1, "TRAILER!!!", &[], (0, 0))?;
        out.flush()
    }

    /// Writes the archive to `path` atomically (temporary file, fsync, rename).
    pub fn write_file(&self, path: &Path) -> Result<(), InitramfsError> {
        let err = |source| InitramfsError::Write {
            path: path.display().to_string(),
            source,
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
        self.write(std::io::BufWriter::new(tmp.as_file_mut()))
            .map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(path).map_err(|e| err(e.error))?;
        Ok(())
    }
}

fn normalize(dst: &str) -> Result<String, InitramfsError> {
    if !dst.starts_with('/') || dst.split('/').any(|p| p == "..") || dst == "/" {
        return Err(InitramfsError::BadPath(dst.into()));
    }
    let parts: Vec<&str> = dst
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    Ok(format!("/{}", parts.join("/")))
}

fn entry<W: Write>(
    out: &mut W,
    ino: u32,
    mode: u32,
    nlink: u32,
    name: &str,
    data: &[u8],
    rdev: (u32, u32),
) -> std::io::Result<()> {
    let namesize = name.len() + 1;
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
        0, 0, 0, data.len(), 0, 0, rdev.0, rdev.1, 0
    );
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    out.write_all(&[0u8; 3][..pad4(110 + namesize)])?;
    out.write_all(data)?;
    out.write_all(&[0u8; 3][..pad4(data.len())])?;
    Ok(())
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn parents_are_created_and_paths_checked() {
        let mut i = Initramfs::new();
        i.file("/etc/kennel/x", b"1".to_vec(), 0o644).unwrap();
        assert!(i.entries.contains_key("/etc"));
        assert!(i.entries.contains_key("/etc/kennel"));
        assert!(matches!(
            i.file("etc/x", vec![], 0o644),
            Err(InitramfsError::BadPath(_))
        ));
        assert!(matches!(
            i.file("/a/../b", vec![], 0o644),
            Err(InitramfsError::BadPath(_))
        ));
        assert!(matches!(
            i.file("/etc", vec![], 0o644),
            Err(InitramfsError::Duplicate(_))
        ));
    }

    #[test]
    fn archive_is_aligned_and_ends_with_trailer() {
        let mut i = Initramfs::new();
        i.file("/init", b"#!/bin/sh\n".to_vec(), 0o755).unwrap();
        let mut buf = Vec::new();
        i.write(&mut buf).unwrap();
        assert_eq!(buf.len() % 4, 0);
        assert!(buf.starts_with(b"070701"));
        let tail = String::from_utf8_lossy(&buf[buf.len() - 140..]).into_owned();
        assert!(tail.contains("TRAILER!!!"));
    }

    /// The real cpio tool (Debian's `cpio`) lists and extracts what we wrote.
    #[test]
    fn cpio_extracts_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut i = Initramfs::new();
        i.file("/init", b"hello init".to_vec(), 0o755).unwrap();
        i.symlink("/bin/sh", "/init").unwrap();
        let archive = dir.path().join("initrd.cpio");
        i.write_file(&archive).unwrap();
        let out = Command::new("cpio")
            .args(["-it", "--quiet", "-F"])
            .arg(&archive)
            .output()
            .expect("cpio is installed");
        let list = String::from_utf8_lossy(&out.stdout);
        for name in ["init", "bin/sh", "dev/console", "proc"] {
            assert!(
                list.lines().any(|l| l == name),
                "{name} missing from {list}"
            );
        }
        let ex = dir.path().join("x");
        std::fs::create_dir(&ex).unwrap();
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cd {} && cpio -id --quiet --no-absolute-filenames -F {} init bin/sh",
                ex.display(),
                archive.display()
            ))
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(std::fs::read(ex.join("init")).unwrap(), b"hello init");
        assert_eq!(
            std::fs::read_link(ex.join("bin/sh")).unwrap(),
            Path::new("/init")
        );
    }
}
