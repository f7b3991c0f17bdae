//! CRI container log files, in the format the kubelet reads (`kubectl logs`), as containerd and
//! CRI-O write them:
//!
//! ```text
//! 2016-10-06T00:17:09.669794202Z stdout F a complete line
//! 2016-10-06T00:17:09.669794202Z stderr P the first 16 KiB of a longer line…
//! ```
//!
//! - the timestamp is UTC in Go's `time.RFC3339Nano` layout (trailing zeros of the fraction dropped,
//!   exactly what containerd writes; [`parse_line`] accepts 0–9 fraction digits);
//! - the tag is `F` for the last (or only) piece of a line and `P` for a piece that continues; the
//!   kubelet joins `P…P F` back into one line. Lines longer than [`MAX_LINE`] bytes are split into
//!   `P` pieces of [`MAX_LINE`] bytes and a final `F` piece, like containerd's 16 KiB line buffer;
//! - the newline (and a `\r` before it, as containerd's `ReadLine` drops) is not part of the content;
//!   an empty line is `<ts> stdout F ` (with the separating space).
//!
//! Each stream keeps its own buffer of an unterminated line, so interleaved stdout/stderr output never
//! mixes pieces of two lines. [`CriLogWriter::flush_partial`] writes those pending pieces as `P` (the
//! bytes were not followed by a newline, so the kubelet prints them without one).
//! [`CriLogWriter::reopen`] implements `ReopenContainerLog`: after logrotate renamed the file, new
//! output goes to a fresh file at the original path.
#![forbid(unsafe_code)]

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest piece of a line written as one log entry (containerd's buffer size).
pub const MAX_LINE: usize = 16 * 1024;

/// Errors writing or parsing CRI log files.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Filesystem error on the log path.
    #[error("{op} {path}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A log line that is not `<timestamp> <stream> <P|F> <content>`.
    #[error("malformed CRI log line ({reason}): {line:?}")]
    Parse {
        /// What is wrong.
        reason: &'static str,
        /// The line (truncated).
        line: String,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A container output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl LogStream {
    /// The name used in log lines: `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            LogStream::Stdout => 0,
            LogStream::Stderr => 1,
        }
    }
}

impl fmt::Display for LogStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One parsed log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the runtime received the output.
    pub timestamp: SystemTime,
    /// Which stream it came from.
    pub stream: LogStream,
    /// True for a `P` (partial) piece that continues in the next entry of the same stream.
    pub partial: bool,
    /// The content, without the newline.
    pub content: String,
}

/// Writes a container's output to a CRI log file. Not thread-safe by itself: wrap it in a mutex.
#[derive(Debug)]
pub struct CriLogWriter {
    path: PathBuf,
    file: File,
    pending: [Vec<u8>; 2],
}

fn open_append(path: &Path) -> Result<File, LogError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_err("create directory for", path))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err("open", path))
}

impl CriLogWriter {
    /// Opens `path` for appending (creating it and its parent directories).
    pub fn open(path: &Path) -> Result<Self, LogError> {
        Ok(Self {
            file: open_append(path)?,
            path: path.to_path_buf(),
            pending: [Vec::new(), Vec::new()],
        })
    }

    /// The log file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logs `data` read from `stream`: every completed line becomes an `F` entry (after `P` pieces when
    /// it is longer than [`MAX_LINE`]); an unterminated tail waits for more data unless it exceeds
    /// [`MAX_LINE`], whose full pieces are written as `P` right away.
    pub fn write(&mut self, stream: LogStream, data: &[u8]) -> Result<(), LogError> {
        if data.is_empty() {
            return Ok(());
        }
        let ts = format_timestamp(SystemTime::now());
        let mut out = Vec::new();
        let buf = &mut self.pending[stream.index()];
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
            let mut line = &buf[start..start + nl];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            encode_line(&mut out, &ts, stream, line, true);
            start += nl + 1;
        }
        buf.drain(..start);
        // pieces of an overlong unterminated line; the rest (≤ MAX_LINE) waits for its newline
        let mut taken = 0;
        while buf.len() - taken > MAX_LINE {
            encode(&mut out, &ts, stream, true, &buf[taken..taken + MAX_LINE]);
            taken += MAX_LINE;
        }
        buf.drain(..taken);
        self.append(&out)
    }

    /// Writes the pending unterminated lines of both streams as `P` entries (at the end of a stream, or
    /// to show a prompt that never gets its newline).
    pub fn flush_partial(&mut self) -> Result<(), LogError> {
        let ts = format_timestamp(SystemTime::now());
        let mut out = Vec::new();
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            let buf = std::mem::take(&mut self.pending[stream.index()]);
            if !buf.is_empty() {
                encode_line(&mut out, &ts, stream, &buf, false);
            }
        }
        self.append(&out)
    }

    /// Closes and reopens the path (`ReopenContainerLog`: after the file was renamed or removed, new
    /// entries go to a new file at the same path). Pending unterminated lines are kept.
    pub fn reopen(&mut self) -> Result<(), LogError> {
        self.file.flush().map_err(io_err("flush", &self.path))?;
        self.file = open_append(&self.path)?;
        Ok(())
    }

    fn append(&mut self, out: &[u8]) -> Result<(), LogError> {
        if out.is_empty() {
            return Ok(());
        }
        // one write per call, so concurrent readers see whole entries
        self.file
            .write_all(out)
            .map_err(io_err("write", &self.path))
    }
}

/// Appends `line` as entries: `P` pieces of [`MAX_LINE`] bytes while more than that remains, then the
/// last piece tagged `F` when `complete`, else `P`.
fn encode_line(out: &mut Vec<u8>, ts: &str, stream: LogStream, line: &[u8], complete: bool) {
    let mut rest = line;
    while rest.len() > MAX_LINE {
        encode(out, ts, stream, true, &rest[..MAX_LINE]);
        rest = &rest[MAX_LINE..];
    }
    encode(out, ts, stream, !complete, rest);
}

fn encode(out: &mut Vec<u8>, ts: &str, stream: LogStream, partial: bool, content: &[u8]) {
    out.extend_from_slice(ts.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// Formats a time as Go's `time.RFC3339Nano` in UTC (`2016-10-06T00:17:09.669794202Z`; trailing zeros
/// of the fraction, and the dot when it is zero, are dropped). Times before 1970 print as the epoch.
pub fn format_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    let mut s = format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    let nanos = d.subsec_nanos();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Parses an RFC 3339 timestamp as written in CRI logs (`…Z` or a `±hh:mm` offset, 0–9 fraction digits).
pub fn parse_timestamp(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let f = s.get(r)?;
        (!f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()))
            .then(|| f.parse().ok())
            .flatten()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() || digits.len() > 9 {
            return None;
        }
        nanos = format!("{digits:0<9}").parse().ok()?;
    }
    let offset: i64 = match &s[i..] {
        "Z" | "z" => 0,
        tz if tz.len() == 6
            && matches!(tz.as_bytes()[0], b'+' | b'-')
            && tz.as_bytes()[3] == b':' =>
        {
            let oh = num(i + 1..i + 3)? as i64;
            let om = num(i + 4..i + 6)? as i64;
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(y as i64, mo as u32, d as u32);
    let secs = days * 86_400 + (h * 3600 + mi * 60 + se) as i64 - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Parses one log line (with or without its trailing newline).
pub fn parse_line(line: &str) -> Result<LogLine, LogError> {
    let bad = |reason| LogError::Parse {
        reason,
        line: line.chars().take(200).collect(),
    };
    let line_body = line.strip_suffix('\n').unwrap_or(line);
    let mut parts = line_body.splitn(4, ' ');
    let ts = parts.next().ok_or_else(|| bad("no timestamp"))?;
    let timestamp = parse_timestamp(ts).ok_or_else(|| bad("bad timestamp"))?;
    let stream = match parts.next() {
        Some("stdout") => LogStream::Stdout,
        Some("stderr") => LogStream::Stderr,
        _ => return Err(bad("stream is not stdout or stderr")),
    };
    let partial = match parts.next() {
        Some("P") => true,
        Some("F") => false,
        _ => return Err(bad("tag is not P or F")),
    };
    let content = parts.next().unwrap_or("").to_string();
    Ok(LogLine {
        timestamp,
        stream,
        partial,
        content,
    })
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) → days since 1970-01-01 (inverse of [`civil_from_days`]).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn timestamps_like_go_rfc3339nano() {
        // 2016-10-06T00:17:09Z = 1475713029
        assert_eq!(
            format_timestamp(at(1_475_713_029, 669_794_202)),
            "2016-10-06T00:17:09.669794202Z"
        );
        assert_eq!(
            format_timestamp(at(1_475_713_029, 500_000_000)),
            "2016-10-06T00:17:09.5Z"
        );
        assert_eq!(
            format_timestamp(at(1_475_713_029, 0)),
            "2016-10-06T00:17:09Z"
        );
        assert_eq!(format_timestamp(at(0, 1)), "1970-01-01T00:00:00.000000001Z");
        // leap day, end of year
        assert_eq!(format_timestamp(at(951_782_400, 0)), "2000-02-29T00:00:00Z");
        assert_eq!(
            format_timestamp(at(1_704_067_199, 0)),
            "2023-12-31T23:59:59Z"
        );
    }

    #[test]
    fn timestamps_round_trip() {
        for (s, n) in [
            (0, 0),
            (1, 10),
            (951_782_400, 999_999_999),
            (4_102_444_800, 123_000_000),
            (1_475_713_029, 669_794_202),
        ] {
            let t = at(s, n);
            assert_eq!(parse_timestamp(&format_timestamp(t)), Some(t));
        }
        for day in (0..200_000).step_by(97) {
            let t = at(day * 86_400 + 3_661, 0);
            assert_eq!(parse_timestamp(&format_timestamp(t)), Some(t), "day {day}");
        }
        assert_eq!(
            parse_timestamp("2016-10-06T02:17:09.669+02:00"),
            Some(at(1_475_713_029, 669_000_000))
        );
        for bad in [
            "",
            "2016-10-06",
            "2016-13-06T00:17:09Z",
            "2016-10-06T00:17:09",
            "2016-10-06T00:17:09.Z",
            "2016-10-06T00:17:09.1234567890Z",
            "2016-10-06 00:17:09Z",
            "2016-10-06T00:17:09+0200",
            "x016-10-06T00:17:09Z",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parse_lines() {
        let l = parse_line("2016-10-06T00:17:09.669794202Z stdout F hello world\n").unwrap();
        assert_eq!(l.stream, LogStream::Stdout);
        assert!(!l.partial);
        assert_eq!(l.content, "hello world");
        assert_eq!(l.timestamp, at(1_475_713_029, 669_794_202));
        let l = parse_line("2016-10-06T00:17:09Z stderr P  two  spaces ").unwrap();
        assert!(l.partial);
        assert_eq!(l.content, " two  spaces ");
        assert_eq!(
            parse_line("2016-10-06T00:17:09Z stdout F ")
                .unwrap()
                .content,
            ""
        );
        assert_eq!(
            parse_line("2016-10-06T00:17:09Z stdout F").unwrap().content,
            ""
        );
        for bad in [
            "",
            "garbage",
            "2016-10-06T00:17:09Z stdin F x",
            "2016-10-06T00:17:09Z stdout X x",
            "yesterday stdout F x",
        ] {
            assert!(
                matches!(parse_line(bad), Err(LogError::Parse { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn encodes_long_lines_as_pieces() {
        let mut out = Vec::new();
        let line = vec![b'a'; 2 * MAX_LINE + 5];
        encode_line(&mut out, "T", LogStream::Stdout, &line, true);
        let text = String::from_utf8(out).unwrap();
        let tags: Vec<_> = text.lines().map(|l| &l[..10]).collect();
        assert_eq!(tags, ["T stdout P", "T stdout P", "T stdout F"]);
        assert_eq!(text.lines().last().unwrap(), "T stdout F aaaaa");
        // exactly MAX_LINE is one entry
        let mut out = Vec::new();
        encode_line(&mut out, "T", LogStream::Stderr, &line[..MAX_LINE], true);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
    }
}
