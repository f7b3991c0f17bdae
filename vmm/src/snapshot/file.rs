//! The snapshot on disk: a directory holding `state` (a header line naming the format version,
//! the length and CRC-32 of the JSON body that follows) and `memory` (guest RAM, byte for byte).
//! Both are written atomically (temporary file, fsync, rename).

use super::{SnapshotError, VmState, FORMAT, VERSION};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the state file.
pub const STATE_FILE: &str = "state";
/// Name of the memory file.
pub const MEMORY_FILE: &str = "memory";

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<(), SnapshotError> {
    let err = |source| SnapshotError::Io {
        path: path.display().to_string(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    write(tmp.as_file_mut()).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// Encodes a state file.
pub fn encode(state: &VmState) -> Result<Vec<u8>, SnapshotError> {
    let body = serde_json::to_vec(state).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
    let crc = crc32fast::hash(&body);
    let mut out = format!("{FORMAT} v{VERSION} len={} crc32={crc:08x}\n", body.len()).into_bytes();
    out.extend(body);
    Ok(out)
}

/// Decodes a state file, refusing another format or version, a truncated body or a bad checksum.
pub fn decode(bytes: &[u8], shown: &str) -> Result<VmState, SnapshotError> {
    let corrupt = |why: String| SnapshotError::Corrupt {
        path: shown.to_string(),
        why,
    };
    let nl = bytes
        .iter()
        .position(|b| *b == b'\n')
        .filter(|n| *n < 200)
        .ok_or_else(|| corrupt("no header line".into()))?;
    let header =
        std::str::from_utf8(&bytes[..nl]).map_err(|_| corrupt("header is not text".into()))?;
    let mut parts = header.split(' ');
    if parts.next() != Some(FORMAT) {
        return Err(corrupt(format!(
            "not a kennel snapshot (header {header:?})"
        )));
    }
    let version = parts
        .next()
        .and_then(|v| v.strip_prefix('v'))
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| corrupt("no version".into()))?;
    if version != VERSION {
        return Err(SnapshotError::Version {
            found: version,
            supported: VERSION,
        });
    }
    let field = |name: &str, p: Option<&str>| {
        p.and_then(|f| f.strip_prefix(name))
            .map(str::to_string)
            .ok_or_else(|| corrupt(format!("header lacks {name}")))
    };
    let len: usize = field("len=", parts.next())?
        .parse()
        .map_err(|_| corrupt("bad length".into()))?;
    let crc = u32::from_str_radix(&field("crc32=", parts.next())?, 16)
        .map_err(|_| corrupt("bad checksum field".into()))?;
    let body = &bytes[nl + 1..];
    if body.len() != len {
        return Err(corrupt(format!(
            "truncated or padded: {} bytes of state, header says {len}",
            body.len()
        )));
    }
    if crc32fast::hash(body) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    serde_json::from_slice(body).map_err(|e| corrupt(format!("state does not parse: {e}")))
}

/// Paths of a snapshot directory's files.
pub fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join(STATE_FILE), dir.join(MEMORY_FILE))
}

/// Writes the state file.
pub fn write_state(dir: &Path, state: &VmState) -> Result<(), SnapshotError> {
    let bytes = encode(state)?;
    write_atomic(&dir.join(STATE_FILE), |f| f.write_all(&bytes))
}
