//! Container log files, laid out and read as kubelet does (`kubectl logs`).
//!
//! Layout: `<root>/<namespace>_<pod>_<uid>/<container>/<restartCount>.log`, one file per container
//! run. Each line is a CRI log record:
//!
//! ```text
//! 2016-10-06T00:17:09.669794202Z stdout F a complete line
//! 2016-10-06T00:17:09.669794202Z stderr P the first piece of a longer line…
//! ```
//!
//! `P` records are pieces of a line continued by the next record (their content is written without
//! a newline, so the pieces join), `F` ends a line. Reading follows kubelet's `ReadLogs`:
//! `tailLines` counts records from the end of the file, `sinceSeconds`/`sinceTime` drop older
//! records, `timestamps` prefixes each line (not the continuation of a partial one) with its
//! RFC3339Nano timestamp, `limitBytes` cuts the output, and `follow` keeps reading as the file
//! grows until a newer `<restartCount>.log` of the container appears (the container exited and
//! was restarted) or the pod's directory goes away, or the client stops reading. Malformed records
//! are skipped. A file renamed away by log rotation is read to its end, then the new file at the
//! same path is followed.
#![forbid(unsafe_code)]

use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, FixedOffset, Utc};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// How often a followed log file is checked for new content.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Output is sent in chunks of at most about this many bytes (and at least at every end of file).
const CHUNK: usize = 32 * 1024;
/// Block size of the backwards scan for `tailLines`.
const TAIL_BLOCK: u64 = 8 * 1024;

/// Errors finding or reading container logs.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// No log directory for the pod.
    #[error("pod \"{pod}\" in namespace \"{namespace}\" does not exist")]
    PodNotFound {
        /// Namespace.
        namespace: String,
        /// Pod name.
        pod: String,
    },
    /// No log file for the container.
    #[error("container \"{container}\" not found in pod \"{pod}\"")]
    ContainerNotFound {
        /// Container name.
        container: String,
        /// Pod name.
        pod: String,
    },
    /// `previous` was asked for a container that has run only once (kubelet's message).
    #[error("previous terminated container \"{container}\" in pod \"{pod}\" not found")]
    PreviousNotFound {
        /// Container name.
        container: String,
        /// Pod name.
        pod: String,
    },
    /// Reading the log directory or file failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Name of a pod's log directory: `<namespace>_<pod>_<uid>`.
pub fn pod_dir_name(namespace: &str, pod: &str, uid: &str) -> String {
    format!("{namespace}_{pod}_{uid}")
}

/// Path of one container run's log: `<root>/<namespace>_<pod>_<uid>/<container>/<restart>.log`.
pub fn container_log_path(
    root: &Path,
    namespace: &str,
    pod: &str,
    uid: &str,
    container: &str,
    restart_count: u32,
) -> PathBuf {
    root.join(pod_dir_name(namespace, pod, uid))
        .join(container)
        .join(format!("{restart_count}.log"))
}

/// Whether `name` is a single path component (names arrive percent-decoded from URLs, so
/// `..` and `/` must not reach a path join).
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// The log directory of pod `namespace/pod` under `root`; with several (a pod recreated under the
/// same name has a new uid), the most recently modified one.
pub fn find_pod_dir(root: &Path, namespace: &str, pod: &str) -> Result<PathBuf, LogError> {
    let prefix = format!("{namespace}_{pod}_");
    let not_found = || LogError::PodNotFound {
        namespace: namespace.to_string(),
        pod: pod.to_string(),
    };
    if !is_plain_name(namespace) || !is_plain_name(pod) {
        return Err(not_found());
    }
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => return Err(io_err(root)(e)),
    };
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(uid) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        if uid.is_empty() || uid.contains('_') {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_dir() {
            continue;
        }
        let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        if best.as_ref().is_none_or(|(t, _)| mtime > *t) {
            best = Some((mtime, entry.path()));
        }
    }
    best.map(|(_, p)| p).ok_or_else(not_found)
}

/// Restart counts of the `<n>.log` files in a container's log directory, ascending (rotated files
/// such as `0.log.20240101-000000` are not counted).
pub fn restart_counts(container_dir: &Path) -> io::Result<Vec<u32>> {
    let mut out: Vec<u32> = std::fs::read_dir(container_dir)?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let n = name.to_str()?.strip_suffix(".log")?;
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            n.parse().ok()
        })
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// One container run's log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLog {
    /// The file.
    pub path: PathBuf,
    /// Its restart count.
    pub restart_count: u32,
    /// The pod's name (for messages).
    pub pod: String,
    /// The container's name.
    pub container: String,
}

/// The current log of `container` in the pod directory `pod_dir` (highest restart count), or with
/// `previous` the one before it.
pub fn container_log(
    pod_dir: &Path,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<ContainerLog, LogError> {
    if !is_plain_name(container) {
        return Err(LogError::ContainerNotFound {
            container: container.to_string(),
            pod: pod.to_string(),
        });
    }
    let dir = pod_dir.join(container);
    let counts = match restart_counts(&dir) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Vec::new()
        }
        Err(e) => return Err(io_err(&dir)(e)),
    };
    let not_found = || LogError::ContainerNotFound {
        container: container.to_string(),
        pod: pod.to_string(),
    };
    let restart_count = match (previous, counts.as_slice()) {
        (_, []) => return Err(not_found()),
        (false, [.., last]) => *last,
        (true, [.., before, _]) => *before,
        (true, [_]) => {
            return Err(LogError::PreviousNotFound {
                container: container.to_string(),
                pod: pod.to_string(),
            })
        }
    };
    Ok(ContainerLog {
        path: dir.join(format!("{restart_count}.log")),
        restart_count,
        pod: pod.to_string(),
        container: container.to_string(),
    })
}

/// [`find_pod_dir`] then [`container_log`].
pub fn locate(
    root: &Path,
    namespace: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<ContainerLog, LogError> {
    let dir = find_pod_dir(root, namespace, pod)?;
    container_log(&dir, pod, container, previous)
}

/// The stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// `stdout`.
    Stdout,
    /// `stderr`.
    Stderr,
}

/// One parsed CRI log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord<'a> {
    /// When the runtime read it.
    pub timestamp: DateTime<FixedOffset>,
    /// Which stream.
    pub stream: LogStream,
    /// `P`: continued by the next record.
    pub partial: bool,
    /// The content as kubelet writes it: a full record keeps its newline, a partial one does not.
    pub content: &'a [u8],
}

/// Parses one record (a line with or without its newline); `None` when it is malformed.
pub fn parse_record(line: &[u8]) -> Option<LogRecord<'_>> {
    let sp = line.iter().position(|b| *b == b' ')?;
    let ts = std::str::from_utf8(&line[..sp]).ok()?;
    let timestamp = DateTime::parse_from_rfc3339(ts).ok()?;
    let rest = &line[sp + 1..];
    let sp = rest.iter().position(|b| *b == b' ')?;
    let stream = match &rest[..sp] {
        b"stdout" => LogStream::Stdout,
        b"stderr" => LogStream::Stderr,
        _ => return None,
    };
    let rest = &rest[sp + 1..];
    // the tag ends at a space, or at the end of an empty record (`<ts> stdout F\n`)
    let end = rest
        .iter()
        .position(|b| *b == b' ' || *b == b'\n')
        .unwrap_or(rest.len());
    // tags may carry `:`-separated extensions; the first one is P or F
    let partial = match rest[..end].split(|b| *b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return None,
    };
    let mut content = match rest.get(end) {
        Some(b' ') => &rest[end + 1..],
        _ => &rest[end..],
    };
    if partial {
        content = content.strip_suffix(b"\n").unwrap_or(content);
    }
    Some(LogRecord {
        timestamp,
        stream,
        partial,
        content,
    })
}

/// Formats a time as Go's `time.RFC3339Nano` (what kubelet prints with `timestamps=true`): trailing
/// zeros of the fraction (and a zero fraction) dropped, `Z` for UTC, else `±hh:mm`.
pub fn format_timestamp(t: &DateTime<FixedOffset>) -> String {
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos() % 1_000_000_000;
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    if t.offset().local_minus_utc() == 0 {
        s.push('Z');
    } else {
        s.push_str(&t.format("%:z").to_string());
    }
    s
}

/// Where the last `n` lines of a file start (kubelet's `FindTailLineStartIndex`): just after the
/// `n+1`-th newline from the end, or 0. An unterminated last line is not counted.
pub fn tail_start<F: Read + Seek>(f: &mut F, n: u64) -> io::Result<u64> {
    let size = f.seek(SeekFrom::End(0))?;
    let mut seen = 0u64;
    let mut right = size;
    let mut buf = vec![0u8; TAIL_BLOCK as usize];
    while right > 0 {
        let left = right.saturating_sub(TAIL_BLOCK);
        let block = &mut buf[..(right - left) as usize];
        f.seek(SeekFrom::Start(left))?;
        f.read_exact(block)?;
        for (i, b) in block.iter().enumerate().rev() {
            if *b == b'\n' {
                seen += 1;
                if seen == n + 1 {
                    return Ok(left + i as u64 + 1);
                }
            }
        }
        right = left;
    }
    Ok(0)
}

/// kubelet's log options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep reading as the file grows.
    pub follow: bool,
    /// Start this many records before the end (without `follow`, also stop after that many).
    pub tail_lines: Option<u64>,
    /// Skip records older than this.
    pub since: Option<DateTime<Utc>>,
    /// Prefix each line with its timestamp.
    pub timestamps: bool,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<u64>,
}

impl LogOptions {
    /// kubelet's `since`: the later of `now - since_seconds` and `since_time`.
    pub fn since_from(
        now: DateTime<Utc>,
        since_seconds: Option<i64>,
        since_time: Option<DateTime<Utc>>,
    ) -> Option<DateTime<Utc>> {
        let from_seconds = since_seconds.map(|s| now - chrono::Duration::seconds(s));
        match (from_seconds, since_time) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What ended a wait for more log content.
enum Wake {
    /// The file has more bytes.
    Grew,
    /// The path now names another file (rotation); or the file shrank (truncation).
    Replaced,
    /// The container has a newer run, or its directory is gone: read to the end, then stop.
    Ended,
    /// The receiver was dropped.
    ClientGone,
}

/// The output side: the limit, the timestamp prefix and chunking into the channel.
struct Output {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    remain: u64,
    timestamps: bool,
    since: Option<DateTime<Utc>>,
}

/// Whether output may continue.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

impl Output {
    /// kubelet's `logWriter.write`.
    async fn write(&mut self, rec: &LogRecord<'_>, new_line: bool) -> Flow {
        if self.since.is_some_and(|s| rec.timestamp < s) {
            return Flow::Continue;
        }
        let mut line = Vec::new();
        if self.timestamps && new_line {
            line.extend_from_slice(format_timestamp(&rec.timestamp).as_bytes());
            line.push(b' ');
        }
        line.extend_from_slice(rec.content);
        let n = line
            .len()
            .min(usize::try_from(self.remain).unwrap_or(usize::MAX));
        self.buf.extend_from_slice(&line[..n]);
        self.remain -= n as u64;
        if self.buf.len() >= CHUNK && self.flush().await == Flow::Stop {
            return Flow::Stop;
        }
        if self.remain == 0 {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    /// Sends what is buffered; `Stop` when the receiver is gone.
    async fn flush(&mut self) -> Flow {
        if self.buf.is_empty() {
            return Flow::Continue;
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        match self.tx.send(chunk).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Stop,
        }
    }
}

/// An open container log positioned for reading with some [`LogOptions`].
pub struct LogReader {
    path: PathBuf,
    container_dir: PathBuf,
    restart_count: u32,
    reader: BufReader<tokio::fs::File>,
    ino: u64,
    /// Bytes of the current file consumed (including an unterminated last line).
    pos: u64,
    opts: LogOptions,
}

impl LogReader {
    /// Opens `log` and seeks to where `opts.tail_lines` says reading starts.
    pub async fn open(log: &ContainerLog, opts: LogOptions) -> Result<Self, LogError> {
        let path = log.path.clone();
        let tail = opts.tail_lines;
        let p = path.clone();
        let opened = tokio::task::spawn_blocking(move || -> io::Result<(std::fs::File, u64)> {
            let mut f = std::fs::File::open(&p)?;
            let start = match tail {
                Some(n) => tail_start(&mut f, n)?,
                None => 0,
            };
            f.seek(SeekFrom::Start(start))?;
            Ok((f, start))
        })
        .await
        .map_err(|e| io_err(&path)(io::Error::other(e)))?;
        let (file, start) = match opened {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LogError::ContainerNotFound {
                    container: log.container.clone(),
                    pod: log.pod.clone(),
                })
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let ino = file.metadata().map_err(io_err(&path))?.ino();
        Ok(Self {
            container_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            path,
            restart_count: log.restart_count,
            reader: BufReader::with_capacity(64 * 1024, tokio::fs::File::from_std(file)),
            ino,
            pos: start,
            opts,
        })
    }

    /// Streams the log into `tx` in chunks until it is done (end of file without `follow`, the
    /// byte or line limit, the container's run ended) or the receiver is dropped.
    pub async fn run(mut self, tx: mpsc::Sender<Bytes>) -> Result<(), LogError> {
        let follow = self.opts.follow;
        let mut out = Output {
            tx,
            buf: Vec::with_capacity(CHUNK),
            remain: self.opts.limit_bytes.unwrap_or(u64::MAX),
            timestamps: self.opts.timestamps,
            since: self.opts.since,
        };
        let limited = !follow && self.opts.tail_lines.is_some();
        let mut left = self.opts.tail_lines.unwrap_or(0);
        let mut new_line = true;
        let mut current = true; // the container has no newer run
        let mut reopen_at_eof = false;
        let mut stop = false;
        let mut line = Vec::new();
        loop {
            if stop || (limited && left == 0) {
                break;
            }
            let n = self
                .reader
                .read_until(b'\n', &mut line)
                .await
                .map_err(io_err(&self.path))?;
            self.pos += n as u64;
            if !line.ends_with(b"\n") {
                // end of file (possibly after an unterminated line, kept in `line`)
                if follow {
                    if reopen_at_eof {
                        // runtimes write whole records; a torn one at a rotation is dropped
                        reopen_at_eof = false;
                        line.clear();
                        self.reopen().await?;
                        continue;
                    }
                    if !current {
                        break;
                    }
                    if out.flush().await == Flow::Stop {
                        return Ok(());
                    }
                    match self.wait(&out.tx).await {
                        Wake::Grew => {}
                        Wake::Replaced => reopen_at_eof = true,
                        Wake::Ended => current = false,
                        Wake::ClientGone => return Ok(()),
                    }
                    continue;
                }
                stop = true;
                if line.is_empty() {
                    continue;
                }
            }
            let Some(rec) = parse_record(&line) else {
                tracing::debug!(path = %self.path.display(), "skipping malformed log record");
                line.clear();
                continue;
            };
            if out.write(&rec, new_line).await == Flow::Stop {
                break;
            }
            if limited {
                left -= 1;
            }
            new_line = rec.content.last().is_none_or(|b| *b == b'\n');
            line.clear();
        }
        out.flush().await;
        Ok(())
    }

    /// Opens the file now at the path from its start (after rotation or truncation).
    async fn reopen(&mut self) -> Result<(), LogError> {
        let file = match tokio::fs::File::open(&self.path).await {
            Ok(f) => f,
            // renamed away and not yet recreated: keep the old file
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&self.path)(e)),
        };
        self.ino = file.metadata().await.map_err(io_err(&self.path))?.ino();
        self.reader = BufReader::with_capacity(64 * 1024, file);
        self.pos = 0;
        Ok(())
    }

    /// Whether the container has a run newer than ours, or its directory is gone.
    async fn superseded(&self) -> bool {
        let dir = self.container_dir.clone();
        let ours = self.restart_count;
        tokio::task::spawn_blocking(move || match restart_counts(&dir) {
            Ok(counts) => counts.last().is_some_and(|n| *n > ours),
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        })
        .await
        .unwrap_or(false)
    }

    async fn wait(&mut self, tx: &mpsc::Sender<Bytes>) -> Wake {
        loop {
            tokio::select! {
                _ = tx.closed() => return Wake::ClientGone,
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
            if let Ok(meta) = self.reader.get_ref().metadata().await {
                if meta.len() > self.pos {
                    return Wake::Grew;
                }
                if meta.len() < self.pos {
                    return Wake::Replaced;
                }
            }
            if self.superseded().await {
                return Wake::Ended;
            }
            if let Ok(meta) = tokio::fs::metadata(&self.path).await {
                if meta.ino() != self.ino {
                    return Wake::Replaced;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    const T1: &str = "2024-05-01T10:00:00.100000000Z";
    const T2: &str = "2024-05-01T10:00:01.5Z";
    const T3: &str = "2024-05-01T10:00:02Z";

    fn ts(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    #[test]
    fn records_parse_as_kubelet_reads_them() {
        let l = format!("{T1} stdout F hello world\n");
        let r = parse_record(l.as_bytes()).unwrap();
        assert_eq!(r.stream, LogStream::Stdout);
        assert!(!r.partial);
        assert_eq!(r.content, b"hello world\n");
        assert_eq!(r.timestamp, ts(T1));
        let l = format!("{T2} stderr P piece \n");
        let r = parse_record(l.as_bytes()).unwrap();
        assert_eq!(
            (r.stream, r.partial, r.content),
            (LogStream::Stderr, true, &b"piece "[..])
        );
        // empty lines, with and without the separating space; tag extensions
        for l in [format!("{T3} stdout F \n"), format!("{T3} stdout F\n")] {
            assert_eq!(parse_record(l.as_bytes()).unwrap().content, b"\n");
        }
        assert!(
            !parse_record(format!("{T3} stdout F:x y\n").as_bytes())
                .unwrap()
                .partial
        );
        // unterminated last line
        assert_eq!(
            parse_record(format!("{T3} stdout F end").as_bytes())
                .unwrap()
                .content,
            b"end"
        );
        // an offset timestamp
        let r = parse_record(b"2024-05-01T12:00:00.25+02:00 stdout F x\n").unwrap();
        assert_eq!(r.timestamp, ts("2024-05-01T10:00:00.25Z"));
        for bad in [
            "yesterday stdout F x\n".to_string(),
            format!("{T1} stdin F x\n"),
            format!("{T1} stdout X x\n"),
            format!("{T1} stdout\n"),
            format!("{T1}\n"),
            String::new(),
        ] {
            assert!(parse_record(bad.as_bytes()).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn timestamps_print_as_go_rfc3339nano() {
        assert_eq!(format_timestamp(&ts(T1)), "2024-05-01T10:00:00.1Z");
        assert_eq!(format_timestamp(&ts(T2)), "2024-05-01T10:00:01.5Z");
        assert_eq!(format_timestamp(&ts(T3)), "2024-05-01T10:00:02Z");
        assert_eq!(
            format_timestamp(&ts("2016-10-06T00:17:09.669794202Z")),
            "2016-10-06T00:17:09.669794202Z"
        );
        assert_eq!(
            format_timestamp(&ts("2024-05-01T12:00:00.000001+02:00")),
            "2024-05-01T12:00:00.000001+02:00"
        );
    }

    #[test]
    fn tail_start_counts_lines_from_the_end() {
        let start = |data: &[u8], n| tail_start(&mut io::Cursor::new(data.to_vec()), n).unwrap();
        assert_eq!(start(b"a\nb\nc", 1), 2);
        assert_eq!(start(b"a\nb\n", 1), 2);
        assert_eq!(start(b"a\nb\n", 0), 4);
        assert_eq!(start(b"a\nb\n", 2), 0);
        assert_eq!(start(b"a\nb\n", 9), 0);
        assert_eq!(start(b"", 3), 0);
        // across scan blocks
        let big: Vec<u8> = (0..5000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let s = start(&big, 3) as usize;
        assert_eq!(&big[s..], b"line 4997\nline 4998\nline 4999\n");
        assert_eq!(start(&big, 5000), 0);
    }

    fn write_file(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn finds_the_newest_pod_dir_and_the_current_and_previous_runs() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write_file(&container_log_path(r, "ns", "web", "old", "app", 0), "");
        let newer = container_log_path(r, "ns", "web", "new", "app", 0);
        write_file(&newer, "");
        write_file(&container_log_path(r, "ns", "web", "new", "app", 1), "");
        write_file(&container_log_path(r, "ns", "web", "new", "app", 3), "");
        write_file(&r.join("ns_web_new/app/0.log.20240501-100000"), "");
        write_file(&r.join("ns_web_new/app/9.log.tmp"), "");
        write_file(&container_log_path(r, "ns", "web2", "x", "app", 7), "");
        write_file(&r.join("ns_web_file"), "not a directory");
        // make the "old" directory older
        let old = std::fs::File::open(r.join("ns_web_old")).unwrap();
        old.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        let dir = find_pod_dir(r, "ns", "web").unwrap();
        assert_eq!(dir, r.join("ns_web_new"));
        assert_eq!(restart_counts(&dir.join("app")).unwrap(), vec![0, 1, 3]);
        let cur = container_log(&dir, "web", "app", false).unwrap();
        assert_eq!(
            (cur.restart_count, cur.path.clone()),
            (3, dir.join("app/3.log"))
        );
        assert_eq!(
            container_log(&dir, "web", "app", true)
                .unwrap()
                .restart_count,
            1
        );
        assert_eq!(
            locate(r, "ns", "web2", "app", false).unwrap().restart_count,
            7
        );
        let e = locate(r, "ns", "web2", "app", true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "previous terminated container \"app\" in pod \"web2\" not found"
        );
        assert!(matches!(
            locate(r, "ns", "web", "db", false),
            Err(LogError::ContainerNotFound { .. })
        ));
        for bad in ["..", ".", "", "../web2/app", "a/b"] {
            assert!(
                matches!(
                    container_log(&dir, "web", bad, false),
                    Err(LogError::ContainerNotFound { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            locate(r, "..", "x", "app", false),
            Err(LogError::PodNotFound { .. })
        ));
        assert!(matches!(
            locate(r, "ns", "nope", "app", false),
            Err(LogError::PodNotFound { .. })
        ));
        assert!(matches!(
            locate(&r.join("missing"), "ns", "web", "app", false),
            Err(LogError::PodNotFound { .. })
        ));
    }

    async fn read(path: &Path, opts: LogOptions) -> String {
        let log = ContainerLog {
            path: path.to_path_buf(),
            restart_count: 0,
            pod: "web".into(),
            container: "app".into(),
        };
        let reader = LogReader::open(&log, opts).await.unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(reader.run(tx));
        let mut out = Vec::new();
        while let Some(chunk) = rx.recv().await {
            out.extend_from_slice(&chunk);
        }
        task.await.unwrap().unwrap();
        String::from_utf8(out).unwrap()
    }

    fn sample() -> String {
        [
            format!("{T1} stdout F one\n"),
            format!("{T1} stderr F err one\n"),
            "garbage that is not a record\n".to_string(),
            format!("{T2} stdout P tw"),
            "\n".to_string(),
            format!("{T2} stdout P o-"),
            "\n".to_string(),
            format!("{T2} stdout F joined\n"),
            format!("{T3} stdout F three\n"),
        ]
        .concat()
    }

    #[tokio::test]
    async fn reads_with_kubelet_options() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app/0.log");
        write_file(&path, &sample());
        let all = read(&path, LogOptions::default()).await;
        assert_eq!(all, "one\nerr one\ntwo-joined\nthree\n");
        let stamped = read(
            &path,
            LogOptions {
                timestamps: true,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(
            stamped,
            "2024-05-01T10:00:00.1Z one\n2024-05-01T10:00:00.1Z err one\n\
             2024-05-01T10:00:01.5Z two-joined\n2024-05-01T10:00:02Z three\n"
        );
        let tail = |n| LogOptions {
            tail_lines: Some(n),
            ..Default::default()
        };
        assert_eq!(read(&path, tail(1)).await, "three\n");
        assert_eq!(read(&path, tail(2)).await, "joined\nthree\n");
        assert_eq!(read(&path, tail(0)).await, "");
        assert_eq!(read(&path, tail(100)).await, all);
        let since = LogOptions {
            since: Some(ts(T2).with_timezone(&Utc)),
            ..Default::default()
        };
        assert_eq!(read(&path, since).await, "two-joined\nthree\n");
        let limit = LogOptions {
            limit_bytes: Some(6),
            ..Default::default()
        };
        assert_eq!(read(&path, limit).await, "one\ner");
        let limit_stamped = LogOptions {
            limit_bytes: Some(30),
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            read(&path, limit_stamped).await,
            "2024-05-01T10:00:00.1Z one\n202"
        );
        // an unterminated last record is still shown without follow
        append(&path, &format!("{T3} stdout F no newline"));
        assert!(read(&path, LogOptions::default())
            .await
            .ends_with("three\nno newline"));
    }

    #[test]
    fn since_is_the_later_bound() {
        let now = ts("2024-05-01T10:00:00Z").with_timezone(&Utc);
        let t = ts("2024-05-01T09:59:58Z").with_timezone(&Utc);
        assert_eq!(LogOptions::since_from(now, None, None), None);
        assert_eq!(
            LogOptions::since_from(now, Some(10), None),
            Some(ts("2024-05-01T09:59:50Z").with_timezone(&Utc))
        );
        assert_eq!(LogOptions::since_from(now, Some(10), Some(t)), Some(t));
        assert_eq!(LogOptions::since_from(now, None, Some(t)), Some(t));
    }

    async fn next_text(rx: &mut mpsc::Receiver<Bytes>) -> String {
        let chunk = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("output in time")
            .expect("stream open");
        String::from_utf8(chunk.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn follow_until_a_newer_run_appears() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app/0.log");
        write_file(&path, &format!("{T1} stdout F first\n"));
        let log = ContainerLog {
            path: path.clone(),
            restart_count: 0,
            pod: "web".into(),
            container: "app".into(),
        };
        let opts = LogOptions {
            follow: true,
            tail_lines: Some(5),
            ..Default::default()
        };
        let reader = LogReader::open(&log, opts).await.unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(reader.run(tx));
        assert_eq!(next_text(&mut rx).await, "first\n");
        // a record written in two pieces arrives once complete
        append(&path, &format!("{T2} stdout F sec"));
        tokio::time::sleep(POLL_INTERVAL * 3).await;
        append(&path, "ond\n");
        assert_eq!(next_text(&mut rx).await, "second\n");
        // rotation: the old file is renamed, a new one takes the path
        append(&path, &format!("{T2} stdout F before rotation\n"));
        assert_eq!(next_text(&mut rx).await, "before rotation\n");
        std::fs::rename(&path, dir.path().join("app/0.log.20240501-100001")).unwrap();
        write_file(&path, &format!("{T3} stdout F after rotation\n"));
        assert_eq!(next_text(&mut rx).await, "after rotation\n");
        // the container restarts: the rest of this run is read, then the stream ends
        append(&path, &format!("{T3} stdout F last words\n"));
        write_file(
            &dir.path().join("app/1.log"),
            &format!("{T3} stdout F next run\n"),
        );
        let mut rest = String::new();
        while let Some(c) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("stream ends in time")
        {
            rest.push_str(std::str::from_utf8(&c).unwrap());
        }
        assert_eq!(rest, "last words\n");
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn follow_stops_when_the_client_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app/0.log");
        write_file(&path, &format!("{T1} stdout F first\n"));
        let log = ContainerLog {
            path,
            restart_count: 0,
            pod: "web".into(),
            container: "app".into(),
        };
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let reader = LogReader::open(&log, opts).await.unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(reader.run(tx));
        assert_eq!(next_text(&mut rx).await, "first\n");
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("reader ends")
            .unwrap()
            .unwrap();
    }
}
