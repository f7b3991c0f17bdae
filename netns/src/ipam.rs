//! IP address management: a JSON state file in the state directory, guarded
//! by an `flock` so several processes can share it, written atomically.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::nat::HostPortMapping;
use crate::sys;

/// File name of the IPAM state inside the state directory.
pub const STATE_FILE: &str = "ipam.json";
const LOCK_FILE: &str = "ipam.lock";

/// IPAM failures.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// Every usable address of the range is allocated.
    #[error("pod CIDR {cidr} is exhausted: all {capacity} addresses are allocated")]
    Exhausted {
        /// The pod CIDR.
        cidr: Ipv4Net,
        /// Number of assignable addresses.
        capacity: u32,
    },
    /// The state on disk was made for another CIDR or gateway.
    #[error("IPAM state {path} is for {found_cidr} via {found_gateway}, config says {cidr} via {gateway}")]
    ConfigMismatch {
        /// State file.
        path: PathBuf,
        /// CIDR on disk.
        found_cidr: Ipv4Net,
        /// Gateway on disk.
        found_gateway: Ipv4Addr,
        /// Configured CIDR.
        cidr: Ipv4Net,
        /// Configured gateway.
        gateway: Ipv4Addr,
    },
    /// Reading, writing or locking the state failed.
    #[error("IPAM state {path}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not valid JSON of the expected shape.
    #[error("IPAM state {path} is corrupt")]
    Corrupt {
        /// State file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Kind of link a sandbox is plumbed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// A persistent tap for a VM's virtio-net device.
    Tap,
    /// A veth pair whose peer is in a pod network namespace.
    Veth,
}

/// What the node remembers about one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxRecord {
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// How the pod is attached.
    pub link: LinkKind,
    /// Host port mappings to this pod.
    #[serde(default)]
    pub host_ports: Vec<HostPortMapping>,
}

/// The whole IPAM state of a node (pure data; no I/O).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpamState {
    /// The node's pod CIDR.
    pub cidr: Ipv4Net,
    /// The gateway (never allocated to a pod).
    pub gateway: Ipv4Addr,
    /// Last address handed out; allocation continues after it (round robin),
    /// so a freed address is not reused at once.
    #[serde(default)]
    pub last: Option<Ipv4Addr>,
    /// Allocations by sandbox id.
    #[serde(default)]
    pub sandboxes: BTreeMap<String, SandboxRecord>,
}

impl IpamState {
    /// Empty state for a range.
    pub fn new(cidr: Ipv4Net, gateway: Ipv4Addr) -> Self {
        IpamState {
            cidr,
            gateway,
            last: None,
            sandboxes: BTreeMap::new(),
        }
    }

    /// Number of addresses that can go to pods.
    pub fn capacity(&self) -> u32 {
        let hosts = (1u64 << (32 - self.cidr.prefix_len())) - 2;
        (hosts - 1) as u32
    }

    /// Allocates an address for `sandbox_id`, or returns the one it already
    /// has. The flag is true when the address is new.
    pub fn allocate(
        &mut self,
        sandbox_id: &str,
        link: LinkKind,
    ) -> Result<(Ipv4Addr, bool), IpamError> {
        if let Some(rec) = self.sandboxes.get(sandbox_id) {
            return Ok((rec.ip, false));
        }
        let used: HashSet<Ipv4Addr> = self.sandboxes.values().map(|r| r.ip).collect();
        let first = u32::from(self.cidr.network()) + 1;
        let last = u32::from(self.cidr.broadcast()) - 1;
        let span = last - first + 1;
        let start = match self.last {
            Some(ip)
                if self.cidr.contains(&ip) && u32::from(ip) >= first && u32::from(ip) <= last =>
            {
                u32::from(ip) - first + 1
            }
            _ => 0,
        };
        for step in 0..span {
            let candidate = Ipv4Addr::from(first + (start + step) % span);
            if candidate == self.gateway || used.contains(&candidate) {
                continue;
            }
            self.last = Some(candidate);
            self.sandboxes.insert(
                sandbox_id.to_string(),
                SandboxRecord {
                    ip: candidate,
                    link,
                    host_ports: Vec::new(),
                },
            );
            return Ok((candidate, true));
        }
        Err(IpamError::Exhausted {
            cidr: self.cidr,
            capacity: self.capacity(),
        })
    }

    /// Frees the address of `sandbox_id`; returns its record if it had one.
    pub fn release(&mut self, sandbox_id: &str) -> Option<SandboxRecord> {
        self.sandboxes.remove(sandbox_id)
    }

    /// Ids that hold an address but are not in `live`.
    pub fn stale(&self, live: &HashSet<&str>) -> Vec<String> {
        self.sandboxes
            .keys()
            .filter(|id| !live.contains(id.as_str()))
            .cloned()
            .collect()
    }
}

/// The IPAM state file of one node, shared between processes.
#[derive(Debug, Clone)]
pub struct IpamStore {
    dir: PathBuf,
    cidr: Ipv4Net,
    gateway: Ipv4Addr,
}

/// An exclusive lock on the state; released on drop.
struct Lock(#[allow(dead_code)] File);

impl IpamStore {
    /// Opens (creating if needed) the state in `dir` for `cidr`/`gateway`.
    /// Fails if the state on disk was made for another range.
    pub fn open(dir: &Path, cidr: Ipv4Net, gateway: Ipv4Addr) -> Result<Self, IpamError> {
        std::fs::create_dir_all(dir).map_err(|source| IpamError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let store = IpamStore {
            dir: dir.to_path_buf(),
            cidr,
            gateway,
        };
        let _lock = store.lock()?;
        store.load()?;
        Ok(store)
    }

    /// Path of the state file.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    fn lock(&self) -> Result<Lock, IpamError> {
        let path = self.dir.join(LOCK_FILE);
        let io = |source| IpamError::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        sys::flock_exclusive(&file).map_err(io)?;
        Ok(Lock(file))
    }

    fn load(&self) -> Result<IpamState, IpamError> {
        let path = self.state_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(IpamState::new(self.cidr, self.gateway));
            }
            Err(source) => return Err(IpamError::Io { path, source }),
        };
        let state: IpamState =
            serde_json::from_slice(&bytes).map_err(|source| IpamError::Corrupt {
                path: path.clone(),
                source,
            })?;
        if state.cidr != self.cidr || state.gateway != self.gateway {
            return Err(IpamError::ConfigMismatch {
                path,
                found_cidr: state.cidr,
                found_gateway: state.gateway,
                cidr: self.cidr,
                gateway: self.gateway,
            });
        }
        Ok(state)
    }

    fn save(&self, state: &IpamState) -> Result<(), IpamError> {
        let path = self.state_path();
        let tmp = self.dir.join(format!(".{STATE_FILE}.tmp"));
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| IpamError::Io { path: p, source }
        };
        let json = serde_json::to_vec_pretty(state).map_err(|source| IpamError::Corrupt {
            path: path.clone(),
            source,
        })?;
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&json).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(())
    }

    /// Reads the current state under the lock.
    pub fn read(&self) -> Result<IpamState, IpamError> {
        let _lock = self.lock()?;
        self.load()
    }

    /// Runs `f` on the state under the lock and writes the result back
    /// atomically if `f` changed it and succeeded.
    pub fn update<T, E>(&self, f: impl FnOnce(&mut IpamState) -> Result<T, E>) -> Result<T, E>
    where
        E: From<IpamError>,
    {
        let _lock = self.lock()?;
        let before = self.load()?;
        let mut state = before.clone();
        let out = f(&mut state)?;
        if state != before {
            self.save(&state)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(cidr: &str) -> IpamState {
        let cidr: Ipv4Net = cidr.parse().unwrap();
        IpamState::new(cidr, Ipv4Addr::from(u32::from(cidr.network()) + 1))
    }

    #[test]
    fn same_id_same_ip_and_distinct_ids_distinct_ips() {
        let mut s = state("10.0.0.0/24");
        let (a, new_a) = s.allocate("a", LinkKind::Tap).unwrap();
        let (b, _) = s.allocate("b", LinkKind::Tap).unwrap();
        assert!(new_a);
        assert_eq!(a, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(b, Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(s.allocate("a", LinkKind::Tap).unwrap(), (a, false));
    }

    #[test]
    fn exhaustion_and_round_robin_reuse() {
        let mut s = state("10.0.0.0/29"); // .1 gateway, .2-.6 pods
        assert_eq!(s.capacity(), 5);
        for i in 0..5 {
            s.allocate(&format!("p{i}"), LinkKind::Tap).unwrap();
        }
        let err = s.allocate("p5", LinkKind::Tap).unwrap_err();
        assert!(err.to_string().contains("exhausted"), "{err}");
        assert!(s.release("p1").is_some());
        assert!(s.release("p1").is_none(), "release is idempotent");
        let (ip, _) = s.allocate("p5", LinkKind::Tap).unwrap();
        assert_eq!(ip, Ipv4Addr::new(10, 0, 0, 3));
    }

    #[test]
    fn freed_address_is_not_reused_first() {
        let mut s = state("10.0.0.0/24");
        let (a, _) = s.allocate("a", LinkKind::Tap).unwrap();
        s.release("a");
        let (b, _) = s.allocate("b", LinkKind::Tap).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn gateway_is_skipped_wherever_it_is() {
        let cidr: Ipv4Net = "10.0.0.0/30".parse().unwrap();
        let mut s = IpamState::new(cidr, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(
            s.allocate("a", LinkKind::Tap).unwrap().0,
            Ipv4Addr::new(10, 0, 0, 1)
        );
        assert!(matches!(
            s.allocate("b", LinkKind::Tap),
            Err(IpamError::Exhausted { capacity: 1, .. })
        ));
    }

    #[test]
    fn stale_ids() {
        let mut s = state("10.0.0.0/24");
        for id in ["a", "b", "c"] {
            s.allocate(id, LinkKind::Veth).unwrap();
        }
        let live: HashSet<&str> = ["b"].into_iter().collect();
        assert_eq!(s.stale(&live), vec!["a".to_string(), "c".to_string()]);
    }

    #[test]
    fn store_persists_and_rejects_other_cidr() {
        let dir = tempfile::tempdir().unwrap();
        let cidr: Ipv4Net = "10.9.0.0/24".parse().unwrap();
        let gw = Ipv4Addr::new(10, 9, 0, 1);
        let store = IpamStore::open(dir.path(), cidr, gw).unwrap();
        let ip = store
            .update(|s| s.allocate("x", LinkKind::Tap).map(|r| r.0))
            .unwrap();
        let again = IpamStore::open(dir.path(), cidr, gw).unwrap();
        assert_eq!(again.read().unwrap().sandboxes["x"].ip, ip);
        let err = IpamStore::open(
            dir.path(),
            "10.10.0.0/24".parse().unwrap(),
            Ipv4Addr::new(10, 10, 0, 1),
        )
        .unwrap_err();
        assert!(matches!(err, IpamError::ConfigMismatch { .. }), "{err}");
        std::fs::write(store.state_path(), b"{not json").unwrap();
        assert!(matches!(store.read(), Err(IpamError::Corrupt { .. })));
    }

    #[test]
    fn concurrent_stores_never_hand_out_an_address_twice() {
        let dir = tempfile::tempdir().unwrap();
        let cidr: Ipv4Net = "10.9.0.0/24".parse().unwrap();
        let gw = Ipv4Addr::new(10, 9, 0, 1);
        let threads: Vec<_> = (0..6)
            .map(|t| {
                let path = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    // Each thread has its own store and lock file descriptor,
                    // as separate processes would.
                    let store = IpamStore::open(&path, cidr, gw).unwrap();
                    (0..10)
                        .map(|i| {
                            store
                                .update(|s| {
                                    s.allocate(&format!("t{t}-{i}"), LinkKind::Tap).map(|r| r.0)
                                })
                                .unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<Ipv4Addr> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "duplicate addresses handed out");
        let store = IpamStore::open(dir.path(), cidr, gw).unwrap();
        assert_eq!(store.read().unwrap().sandboxes.len(), 60);
    }
}
