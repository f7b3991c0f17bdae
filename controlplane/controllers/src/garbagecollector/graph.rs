//! The owner/dependent graph by uid (upstream's `GraphBuilder`): observed nodes come from the
//! metadata watches, virtual nodes stand for owners not seen yet. Every change answers with the
//! work it makes necessary (items to attempt to delete, owners to orphan); the graph itself never
//! talks to the API.

use std::collections::{HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// The `orphan` finalizer.
pub const ORPHAN: &str = "orphan";
/// The `foregroundDeletion` finalizer.
pub const FOREGROUND: &str = "foregroundDeletion";

/// Who an object is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// Namespace ("" for cluster-scoped; for a virtual node the dependent's namespace).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// uid.
    pub uid: String,
}

impl Identity {
    /// The identity an owner reference names, seen from a dependent in `namespace`.
    pub fn of_owner(r: &OwnerReference, namespace: &str) -> Self {
        Self {
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            namespace: namespace.to_string(),
            name: r.name.clone(),
            uid: r.uid.clone(),
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}/{}, namespace: {}, name: {}, uid: {}]",
            self.api_version, self.kind, self.namespace, self.name, self.uid
        )
    }
}

/// One object of the graph.
#[derive(Debug, Clone, Default)]
pub struct Node {
    /// Who it is.
    pub identity: Identity,
    /// Seen by a watch (not only named by a dependent).
    pub observed: bool,
    /// Its owner references.
    pub owners: Vec<OwnerReference>,
    /// uids of the objects naming it as an owner.
    pub dependents: HashSet<String>,
    /// It has a deletionTimestamp.
    pub being_deleted: bool,
    /// It is being deleted in the foreground (`foregroundDeletion`).
    pub deleting_dependents: bool,
    /// It is being deleted with `orphan`.
    pub orphaning: bool,
}

/// Work the graph asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Work {
    /// Decide whether the object (by uid) must go (upstream's `attemptToDelete`).
    Delete(String),
    /// Strip the owner (by uid) from its dependents, then drop its `orphan` finalizer.
    Orphan(String),
    /// A dependent (first uid) names an observed owner (second uid) in another namespace:
    /// report `OwnerRefInvalidNamespace`.
    InvalidNamespace(String, String),
}

/// The graph.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
}

fn has(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == finalizer)
}

fn blocks(r: &OwnerReference) -> bool {
    r.block_owner_deletion == Some(true)
}

impl Graph {
    /// The node of `uid`.
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// How many nodes (observed and virtual) there are.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Dependents of `uid` whose reference to it has `blockOwnerDeletion: true`.
    pub fn blocking_dependents(&self, uid: &str) -> Vec<&Node> {
        let Some(n) = self.nodes.get(uid) else {
            return vec![];
        };
        n.dependents
            .iter()
            .filter_map(|d| self.nodes.get(d))
            .filter(|d| d.owners.iter().any(|r| r.uid == uid && blocks(r)))
            .collect()
    }

    /// The dependents of `uid`.
    pub fn dependents(&self, uid: &str) -> Vec<&Node> {
        self.nodes
            .get(uid)
            .map(|n| {
                n.dependents
                    .iter()
                    .filter_map(|d| self.nodes.get(d))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn add_to_owners(&mut self, dep: &Identity, owners: &[OwnerReference], work: &mut Vec<Work>) {
        let mut suspicious = false;
        for r in owners {
            match self.nodes.get_mut(&r.uid) {
                None => {
                    let mut v = Node {
                        identity: Identity::of_owner(r, &dep.namespace),
                        ..Node::default()
                    };
                    v.dependents.insert(dep.uid.clone());
                    self.nodes.insert(r.uid.clone(), v);
                    work.push(Work::Delete(r.uid.clone()));
                }
                Some(owner) => {
                    owner.dependents.insert(dep.uid.clone());
                    let ns = &owner.identity.namespace;
                    if owner.observed && !ns.is_empty() && *ns != dep.namespace {
                        work.push(Work::InvalidNamespace(dep.uid.clone(), r.uid.clone()));
                        suspicious = true;
                    } else if owner.identity.name != r.name || owner.identity.kind != r.kind {
                        suspicious = true;
                    }
                }
            }
        }
        if suspicious {
            work.push(Work::Delete(dep.uid.clone()));
        }
    }

    fn remove_from_owners(&mut self, dep: &str, owners: &[OwnerReference], work: &mut Vec<Work>) {
        for r in owners {
            if let Some(owner) = self.nodes.get_mut(&r.uid) {
                owner.dependents.remove(dep);
                if owner.deleting_dependents {
                    work.push(Work::Delete(r.uid.clone()));
                }
            }
        }
    }

    /// An object was added or changed.
    pub fn upsert(&mut self, identity: Identity, meta: &ObjectMeta) -> Vec<Work> {
        let mut work = Vec::new();
        let uid = identity.uid.clone();
        let owners: Vec<OwnerReference> = meta.owner_references.clone().unwrap_or_default();
        let being_deleted = meta.deletion_timestamp.is_some();
        let (was_deleting_deps, was_orphaning) = match self.nodes.get_mut(&uid) {
            None => {
                self.nodes.insert(
                    uid.clone(),
                    Node {
                        identity: identity.clone(),
                        observed: true,
                        owners: owners.clone(),
                        ..Node::default()
                    },
                );
                self.add_to_owners(&identity, &owners, &mut work);
                (false, false)
            }
            Some(n) => {
                let was = (n.deleting_dependents, n.orphaning);
                n.identity = identity.clone();
                n.observed = true;
                let old = std::mem::replace(&mut n.owners, owners.clone());
                let added: Vec<OwnerReference> = owners
                    .iter()
                    .filter(|r| !old.iter().any(|o| o.uid == r.uid))
                    .cloned()
                    .collect();
                // Removed references, and ones that stopped blocking, may unblock an owner.
                let unblocked: Vec<OwnerReference> = old
                    .iter()
                    .filter(|o| match owners.iter().find(|r| r.uid == o.uid) {
                        None => true,
                        Some(r) => blocks(o) && !blocks(r),
                    })
                    .cloned()
                    .collect();
                let removed: Vec<OwnerReference> = old
                    .iter()
                    .filter(|o| !owners.iter().any(|r| r.uid == o.uid))
                    .cloned()
                    .collect();
                for r in &unblocked {
                    if self
                        .nodes
                        .get(&r.uid)
                        .is_some_and(|o| o.deleting_dependents)
                    {
                        work.push(Work::Delete(r.uid.clone()));
                    }
                }
                self.add_to_owners(&identity, &added, &mut work);
                self.remove_from_owners(&uid, &removed, &mut Vec::new());
                was
            }
        };
        let n = self.nodes.get_mut(&uid).expect("inserted");
        n.being_deleted = being_deleted;
        n.orphaning = being_deleted && has(meta, ORPHAN);
        n.deleting_dependents = being_deleted && has(meta, FOREGROUND);
        if n.orphaning && !was_orphaning {
            work.push(Work::Orphan(uid.clone()));
        } else if n.deleting_dependents && !was_deleting_deps {
            work.extend(n.dependents.iter().map(|d| Work::Delete(d.clone())));
            work.push(Work::Delete(uid.clone()));
        }
        work
    }

    /// An object is gone (observed by a watch, or a virtual owner found absent).
    pub fn remove(&mut self, uid: &str) -> Vec<Work> {
        let mut work = Vec::new();
        let Some(n) = self.nodes.remove(uid) else {
            return work;
        };
        self.remove_from_owners(uid, &n.owners, &mut work);
        work.extend(n.dependents.iter().map(|d| Work::Delete(d.clone())));
        work
    }

    /// Forgets every observed node of `(api_version, kind)` (its watch stopped: the resource is
    /// no longer served), as deletions.
    pub fn remove_kind(&mut self, api_version: &str, kind: &str) -> Vec<Work> {
        let uids: Vec<String> = self
            .nodes
            .values()
            .filter(|n| {
                n.observed && n.identity.api_version == api_version && n.identity.kind == kind
            })
            .map(|n| n.identity.uid.clone())
            .collect();
        uids.iter().flat_map(|u| self.remove(u)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(kind: &str, ns: &str, name: &str, uid: &str) -> Identity {
        Identity {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: ns.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    fn oref(kind: &str, name: &str, uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            block_owner_deletion: Some(block),
            controller: None,
        }
    }

    fn meta(owners: Vec<OwnerReference>) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(owners),
            ..ObjectMeta::default()
        }
    }

    fn deleting(finalizers: &[&str]) -> ObjectMeta {
        ObjectMeta {
            deletion_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            )),
            finalizers: Some(finalizers.iter().map(|f| f.to_string()).collect()),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn unseen_owner_becomes_a_virtual_node_to_verify() {
        let mut g = Graph::default();
        let w = g.upsert(
            id("Pod", "a", "p", "p1"),
            &meta(vec![oref("ConfigMap", "c", "c1", false)]),
        );
        assert_eq!(w, vec![Work::Delete("c1".into())]);
        let v = g.get("c1").unwrap();
        assert!(!v.observed);
        assert_eq!(v.identity.namespace, "a");
        assert!(v.dependents.contains("p1"));
        // Seeing the owner makes it observed, with no new work.
        assert!(g
            .upsert(id("ConfigMap", "a", "c", "c1"), &meta(vec![]))
            .is_empty());
        assert!(g.get("c1").unwrap().observed);
    }

    #[test]
    fn removing_an_owner_queues_its_dependents() {
        let mut g = Graph::default();
        g.upsert(id("ConfigMap", "a", "c", "c1"), &meta(vec![]));
        g.upsert(
            id("Pod", "a", "p", "p1"),
            &meta(vec![oref("ConfigMap", "c", "c1", false)]),
        );
        assert_eq!(g.remove("c1"), vec![Work::Delete("p1".into())]);
        assert!(g.get("c1").is_none());
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn foreground_waits_for_blocking_dependents() {
        let mut g = Graph::default();
        g.upsert(id("ReplicaSet", "a", "rs", "r1"), &meta(vec![]));
        g.upsert(
            id("Pod", "a", "p", "p1"),
            &meta(vec![oref("ReplicaSet", "rs", "r1", true)]),
        );
        g.upsert(
            id("Pod", "a", "q", "p2"),
            &meta(vec![oref("ReplicaSet", "rs", "r1", false)]),
        );
        let mut w = g.upsert(id("ReplicaSet", "a", "rs", "r1"), &deleting(&[FOREGROUND]));
        w.sort_by_key(|w| format!("{w:?}"));
        assert_eq!(
            w,
            vec![
                Work::Delete("p1".into()),
                Work::Delete("p2".into()),
                Work::Delete("r1".into())
            ]
        );
        let blocking: Vec<&str> = g
            .blocking_dependents("r1")
            .iter()
            .map(|n| n.identity.uid.as_str())
            .collect();
        assert_eq!(blocking, vec!["p1"]);
        // The owner is re-examined when a dependent goes or drops its reference.
        assert_eq!(
            g.remove("p1"),
            vec![Work::Delete("r1".into())],
            "a removed dependent wakes its foreground owner"
        );
        assert!(g.blocking_dependents("r1").is_empty());
        assert!(g
            .upsert(id("Pod", "a", "q", "p2"), &meta(vec![]))
            .contains(&Work::Delete("r1".into())));
    }

    #[test]
    fn orphan_finalizer_asks_for_orphaning_once() {
        let mut g = Graph::default();
        g.upsert(id("ReplicaSet", "a", "rs", "r1"), &meta(vec![]));
        assert_eq!(
            g.upsert(id("ReplicaSet", "a", "rs", "r1"), &deleting(&[ORPHAN])),
            vec![Work::Orphan("r1".into())]
        );
        assert!(g
            .upsert(id("ReplicaSet", "a", "rs", "r1"), &deleting(&[ORPHAN]))
            .is_empty());
    }

    #[test]
    fn an_owner_in_another_namespace_is_reported() {
        let mut g = Graph::default();
        g.upsert(id("ConfigMap", "a", "c", "c1"), &meta(vec![]));
        let w = g.upsert(
            id("Pod", "b", "p", "p1"),
            &meta(vec![oref("ConfigMap", "c", "c1", false)]),
        );
        assert_eq!(
            w,
            vec![
                Work::InvalidNamespace("p1".into(), "c1".into()),
                Work::Delete("p1".into())
            ]
        );
        // A cluster-scoped owner may own objects in any namespace.
        g.upsert(id("Node", "", "n", "n1"), &meta(vec![]));
        assert!(g
            .upsert(
                id("Pod", "b", "p2", "p2"),
                &meta(vec![oref("Node", "n", "n1", false)])
            )
            .is_empty());
    }

    #[test]
    fn remove_kind_forgets_observed_nodes() {
        let mut g = Graph::default();
        g.upsert(id("Website", "a", "w", "w1"), &meta(vec![]));
        g.upsert(
            id("Pod", "a", "p", "p1"),
            &meta(vec![oref("Website", "w", "w1", false)]),
        );
        assert_eq!(
            g.remove_kind("v1", "Website"),
            vec![Work::Delete("p1".into())]
        );
    }
}
