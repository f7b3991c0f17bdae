//! Running `nft -f -` (or `nft -c -f -`, check only) inside a network
//! namespace. Each call is one atomic transaction.
#![forbid(unsafe_code)]

use std::io::Write;
use std::process::{Command, Stdio};

use netns::NetNs;

/// nft failures.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// `nft` could not be started (package `nftables` missing?).
    #[error("run nft (is the nftables package installed?)")]
    Spawn(#[source] std::io::Error),
    /// The namespace could not be entered.
    #[error("enter the proxy's network namespace")]
    Netns(#[from] netns::NsError),
    /// `nft` rejected the transaction (nothing was changed).
    #[error("nft rejected the transaction: {stderr}")]
    Rejected {
        /// nft's error output, cut to a few lines.
        stderr: String,
    },
}

/// Where rules go: a network namespace (the current one by default).
#[derive(Debug, Clone)]
pub struct Nft {
    ns: NetNs,
}

impl Nft {
    /// nft in `ns`.
    pub fn new(ns: NetNs) -> Self {
        Nft { ns }
    }

    /// nft in the named namespace (`/run/netns/NAME`), or the current one.
    pub fn for_netns(name: Option<&str>) -> Self {
        Nft::new(name.map(NetNs::named).unwrap_or_else(NetNs::current))
    }

    /// Applies `script` atomically. An empty script does nothing.
    pub fn apply(&self, script: &str) -> Result<(), ApplyError> {
        self.run(&["-f", "-"], script).map(drop)
    }

    /// Checks `script` (`nft -c`): parsed and validated by the kernel
    /// against the current ruleset, nothing committed.
    pub fn check(&self, script: &str) -> Result<(), ApplyError> {
        self.run(&["-c", "-f", "-"], script).map(drop)
    }

    /// `nft list table ip TABLE`, or None if there is no such table.
    pub fn list_table(&self, table: &str) -> Result<Option<String>, ApplyError> {
        match self.run(&["list", "table", "ip", table], "") {
            Ok(out) => Ok(Some(out)),
            Err(ApplyError::Rejected { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes the table if it exists.
    pub fn delete_table(&self, table: &str) -> Result<(), ApplyError> {
        self.apply(&format!("add table ip {table}\ndelete table ip {table}\n"))
    }

    fn run(&self, args: &[&str], script: &str) -> Result<String, ApplyError> {
        if args.contains(&"-f") && script.is_empty() {
            return Ok(String::new());
        }
        // The child inherits the namespace of the thread that forks it.
        self.ns.run(|| run_nft(args, script))?
    }
}

fn run_nft(args: &[&str], script: &str) -> Result<String, ApplyError> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(ApplyError::Spawn)?;
    let mut stdin = child.stdin.take();
    let out = std::thread::scope(|s| {
        // Feed stdin on its own thread so a chatty nft cannot deadlock us.
        s.spawn(move || {
            if let Some(stdin) = stdin.as_mut() {
                let _ = stdin.write_all(script.as_bytes());
            }
            drop(stdin);
        });
        child.wait_with_output()
    })
    .map_err(ApplyError::Spawn)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().take(12).collect();
        return Err(ApplyError::Rejected {
            stderr: lines.join("\n"),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
