//! CRI log files as the kubelet reads them: real files in a temp dir, parsed back with `parse_line`
//! and reassembled the way `kubectl logs` does (P pieces joined up to the next F of the same stream).

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cri_shim::logs::{parse_line, CriLogWriter, LogLine, LogStream, MAX_LINE};

fn entries(path: &Path) -> Vec<LogLine> {
    let text = fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "unterminated entry"
    );
    text.lines()
        .map(|l| parse_line(l).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// What the kubelet prints for one stream: F ends a line (newline added), P continues.
fn reassemble(lines: &[LogLine], stream: LogStream) -> String {
    let mut out = String::new();
    for l in lines.iter().filter(|l| l.stream == stream) {
        out.push_str(&l.content);
        if !l.partial {
            out.push('\n');
        }
    }
    out
}

fn summary(lines: &[LogLine]) -> Vec<(LogStream, char, String)> {
    lines
        .iter()
        .map(|l| {
            (
                l.stream,
                if l.partial { 'P' } else { 'F' },
                l.content.clone(),
            )
        })
        .collect()
}

#[test]
fn complete_lines_have_the_containerd_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pods/ns_pod_uid/c/0.log");
    let before = SystemTime::now();
    let mut w = CriLogWriter::open(&path).unwrap();
    assert_eq!(w.path(), path);
    w.write(LogStream::Stdout, b"hello world\nsecond line\n")
        .unwrap();
    w.write(LogStream::Stderr, b"oops\n").unwrap();
    let after = SystemTime::now();
    let text = fs::read_to_string(&path).unwrap();
    for raw in text.lines() {
        // 2016-10-06T00:17:09.669794202Z stdout F line
        let (ts, rest) = raw.split_once(' ').unwrap();
        assert!(
            ts.ends_with('Z') && ts.len() <= 30 && ts.as_bytes()[10] == b'T',
            "{raw}"
        );
        assert!(
            rest.starts_with("stdout F ") || rest.starts_with("stderr F "),
            "{raw}"
        );
    }
    let lines = entries(&path);
    assert_eq!(
        summary(&lines),
        [
            (LogStream::Stdout, 'F', "hello world".to_string()),
            (LogStream::Stdout, 'F', "second line".to_string()),
            (LogStream::Stderr, 'F', "oops".to_string()),
        ]
    );
    for l in &lines {
        // the writer's clock, parsed back (the format keeps nanoseconds)
        assert!(l.timestamp >= before - Duration::from_micros(1) && l.timestamp <= after);
    }
    assert!(lines.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
}

#[test]
fn empty_lines_and_crlf() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.log");
    let mut w = CriLogWriter::open(&path).unwrap();
    w.write(LogStream::Stdout, b"\n\nwindows\r\n\r\n").unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.lines().next().unwrap().ends_with(" stdout F "),
        "{text}"
    );
    assert_eq!(
        summary(&entries(&path)),
        [
            (LogStream::Stdout, 'F', String::new()),
            (LogStream::Stdout, 'F', String::new()),
            (LogStream::Stdout, 'F', "windows".to_string()),
            (LogStream::Stdout, 'F', String::new()),
        ]
    );
}

#[test]
fn partial_lines_wait_per_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.log");
    let mut w = CriLogWriter::open(&path).unwrap();
    w.write(LogStream::Stdout, b"hel").unwrap();
    w.write(LogStream::Stderr, b"err").unwrap();
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "",
        "nothing complete yet"
    );
    w.write(LogStream::Stdout, b"lo").unwrap();
    w.write(LogStream::Stderr, b"or 1\nerror 2\nerr").unwrap();
    w.write(LogStream::Stdout, b" world\nbye\n").unwrap();
    w.write(LogStream::Stderr, b"or 3").unwrap();
    w.write(LogStream::Stdout, b"prompt> ").unwrap();
    w.flush_partial().unwrap();
    w.flush_partial().unwrap(); // nothing left: no empty entries
    let lines = entries(&path);
    assert_eq!(
        summary(&lines),
        [
            (LogStream::Stderr, 'F', "error 1".to_string()),
            (LogStream::Stderr, 'F', "error 2".to_string()),
            (LogStream::Stdout, 'F', "hello world".to_string()),
            (LogStream::Stdout, 'F', "bye".to_string()),
            (LogStream::Stdout, 'P', "prompt> ".to_string()),
            (LogStream::Stderr, 'P', "error 3".to_string()),
        ]
    );
    assert_eq!(
        reassemble(&lines, LogStream::Stdout),
        "hello world\nbye\nprompt> "
    );
    assert_eq!(
        reassemble(&lines, LogStream::Stderr),
        "error 1\nerror 2\nerror 3"
    );
}

#[test]
fn very_long_lines_split_into_p_pieces_then_f() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.log");
    let mut w = CriLogWriter::open(&path).unwrap();
    // one write: a 40,000-byte line
    let long: String = (0..40_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    w.write(LogStream::Stdout, format!("{long}\n").as_bytes())
        .unwrap();
    let lines = entries(&path);
    let sizes: Vec<_> = lines.iter().map(|l| (l.partial, l.content.len())).collect();
    assert_eq!(
        sizes,
        [
            (true, MAX_LINE),
            (true, MAX_LINE),
            (false, 40_000 - 2 * MAX_LINE)
        ]
    );
    assert_eq!(reassemble(&lines, LogStream::Stdout), format!("{long}\n"));

    // the same line trickling in 1,000-byte writes: P pieces appear as soon as 16 KiB are exceeded
    let path2 = dir.path().join("c2.log");
    let mut w = CriLogWriter::open(&path2).unwrap();
    for (i, chunk) in long.as_bytes().chunks(1000).enumerate() {
        w.write(LogStream::Stderr, chunk).unwrap();
        let n = entries(&path2).len();
        assert_eq!(
            n,
            (i + 1) * 1000 / (MAX_LINE + 1),
            "after {} bytes",
            (i + 1) * 1000
        );
    }
    w.write(LogStream::Stderr, b"\n").unwrap();
    let lines2 = entries(&path2);
    assert_eq!(summary(&lines2).len(), 3);
    assert_eq!(reassemble(&lines2, LogStream::Stderr), format!("{long}\n"));
    // a line of exactly 16 KiB is one F entry
    let path3 = dir.path().join("c3.log");
    let mut w = CriLogWriter::open(&path3).unwrap();
    w.write(LogStream::Stdout, &[b'x'; MAX_LINE]).unwrap();
    w.write(LogStream::Stdout, b"\n").unwrap();
    let l3 = entries(&path3);
    assert_eq!(l3.len(), 1);
    assert!(!l3[0].partial && l3[0].content.len() == MAX_LINE);
}

#[test]
fn appends_to_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.log");
    CriLogWriter::open(&path)
        .unwrap()
        .write(LogStream::Stdout, b"first run\n")
        .unwrap();
    CriLogWriter::open(&path)
        .unwrap()
        .write(LogStream::Stdout, b"restart\n")
        .unwrap();
    assert_eq!(
        reassemble(&entries(&path), LogStream::Stdout),
        "first run\nrestart\n"
    );
}

#[test]
fn reopen_after_logrotate_rename_and_after_removal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.log");
    let rotated = dir.path().join("0.log.20261130-101500");
    let mut w = CriLogWriter::open(&path).unwrap();
    w.write(LogStream::Stdout, b"before rotation\n").unwrap();
    fs::rename(&path, &rotated).unwrap();
    // until ReopenContainerLog, output still goes to the renamed file (same open file)
    w.write(LogStream::Stdout, b"late write\npart").unwrap();
    assert!(!path.exists());
    w.reopen().unwrap();
    w.write(LogStream::Stdout, b"ial after\n").unwrap();
    assert_eq!(
        reassemble(&entries(&rotated), LogStream::Stdout),
        "before rotation\nlate write\n"
    );
    // the pending piece survived the reopen and went to the new file
    assert_eq!(
        reassemble(&entries(&path), LogStream::Stdout),
        "partial after\n"
    );
    // copytruncate-free removal: reopen recreates it
    fs::remove_file(&path).unwrap();
    w.reopen().unwrap();
    w.write(LogStream::Stderr, b"fresh\n").unwrap();
    assert_eq!(reassemble(&entries(&path), LogStream::Stderr), "fresh\n");
    // a path that cannot be created is an error naming it, not a panic
    fs::remove_file(&path).unwrap();
    fs::remove_dir_all(dir.path()).unwrap();
    fs::write(dir.path(), b"now a file").unwrap();
    let err = w.reopen().unwrap_err().to_string();
    assert!(err.contains("0.log"), "{err}");
    fs::remove_file(dir.path()).unwrap();
}

#[test]
fn interleaved_writers_never_tear_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.log");
    let w = Arc::new(Mutex::new(CriLogWriter::open(&path).unwrap()));
    let threads: Vec<_> = [LogStream::Stdout, LogStream::Stderr]
        .into_iter()
        .map(|stream| {
            let w = w.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    let line = format!("{stream} line {i} {}\n", "x".repeat(i % 37));
                    // split each line over two writes so pieces of both streams interleave
                    let (a, b) = line.as_bytes().split_at(line.len() / 2);
                    w.lock().unwrap().write(stream, a).unwrap();
                    w.lock().unwrap().write(stream, b).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    w.lock().unwrap().flush_partial().unwrap();
    let lines = entries(&path);
    assert_eq!(lines.len(), 1000);
    assert!(lines.iter().all(|l| !l.partial));
    for stream in [LogStream::Stdout, LogStream::Stderr] {
        let want: String = (0..500)
            .map(|i| format!("{stream} line {i} {}\n", "x".repeat(i % 37)))
            .collect();
        assert_eq!(reassemble(&lines, stream), want);
    }
}
