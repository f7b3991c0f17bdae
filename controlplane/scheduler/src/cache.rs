//! The scheduler's view of the cluster: nodes with the pods on them, including *assumed* pods
//! (decided, binding in flight) so the next decision already sees them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;

use crate::framework::Snapshot;
use crate::nodeinfo::{NodeInfo, PodInfo};

#[derive(Debug, Clone)]
struct PodState {
    info: Arc<PodInfo>,
    node: String,
    assumed: bool,
}

/// Nodes and the pods placed on them.
#[derive(Debug, Default)]
pub struct Cache {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    pods: HashMap<String, PodState>,
    /// Namespace labels.
    pub namespaces: HashMap<String, BTreeMap<String, String>>,
}

/// What changed when a node was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeChange {
    /// New node.
    Added,
    /// Something a filter reads changed (labels, taints, unschedulable, allocatable, images).
    Relevant,
    /// Only heartbeat-like status changed.
    Irrelevant,
}

fn relevant(a: &Node, b: &Node) -> bool {
    let st = |n: &Node| {
        n.status
            .as_ref()
            .map(|s| (s.allocatable.clone(), s.images.clone()))
    };
    a.metadata.labels != b.metadata.labels || a.spec != b.spec || st(a) != st(b)
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The view a cycle runs on.
    pub fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            nodes: &self.nodes,
            namespaces: &self.namespaces,
        }
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    /// Adds or updates a node.
    pub fn apply_node(&mut self, node: Node) -> NodeChange {
        let name = node.metadata.name.clone().unwrap_or_default();
        if let Some(&i) = self.index.get(&name) {
            let rel = relevant(&self.nodes[i].node, &node);
            self.nodes[i].set_node(Arc::new(node));
            return if rel {
                NodeChange::Relevant
            } else {
                NodeChange::Irrelevant
            };
        }
        let mut ni = NodeInfo::new(Arc::new(node));
        for p in self.pods.values().filter(|p| p.node == name) {
            ni.add_pod(p.info.clone());
        }
        self.index.insert(name, self.nodes.len());
        self.nodes.push(ni);
        NodeChange::Added
    }

    /// Removes a node (its pods stay known, and reappear if the node comes back).
    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else {
            return;
        };
        self.nodes.swap_remove(i);
        if i < self.nodes.len() {
            let moved = self.nodes[i].name.clone();
            self.index.insert(moved, i);
        }
    }

    /// Names of all nodes.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    fn place(&mut self, st: PodState) {
        if let Some(old) = self.pods.get(&st.info.key) {
            if old.node != st.node {
                if let Some(&i) = self.index.get(&old.node) {
                    self.nodes[i].remove_pod(&st.info.key);
                }
            }
        }
        if let Some(&i) = self.index.get(&st.node) {
            self.nodes[i].add_pod(st.info.clone());
        }
        self.pods.insert(st.info.key.clone(), st);
    }

    /// Assumes `info` on `node` before its binding lands.
    pub fn assume(&mut self, info: Arc<PodInfo>, node: &str) {
        self.place(PodState {
            info,
            node: node.to_string(),
            assumed: true,
        });
    }

    /// Undoes an assume (binding failed). No-op when the pod is confirmed meanwhile.
    pub fn forget(&mut self, key: &str) {
        if self.pods.get(key).is_some_and(|p| p.assumed) {
            self.remove_pod(key);
        }
    }

    /// Adds or updates a bound pod (confirming an assumed one).
    pub fn apply_bound_pod(&mut self, info: Arc<PodInfo>, node: &str) {
        self.place(PodState {
            info,
            node: node.to_string(),
            assumed: false,
        });
    }

    /// Removes a pod; returns whether it was placed on a node.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        let Some(st) = self.pods.remove(key) else {
            return false;
        };
        if let Some(&i) = self.index.get(&st.node) {
            self.nodes[i].remove_pod(key);
        }
        true
    }

    /// Whether the pod is known (assumed or bound).
    pub fn has_pod(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    /// Whether the pod is assumed (binding in flight or not yet seen bound).
    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|p| p.assumed)
    }

    /// Keys of all known pods.
    pub fn pod_keys(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;
    use serde_json::json;

    fn n(name: &str, labels: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
            "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "10"}}}))
        .unwrap()
    }

    fn req(name: &str) -> Arc<PodInfo> {
        Arc::new(pod_meta(
            name,
            json!({}),
            json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "300m"}}}]}),
        ))
    }

    #[test]
    fn assume_confirm_forget() {
        let mut c = Cache::new();
        assert_eq!(c.apply_node(n("a", json!({}))), NodeChange::Added);
        assert_eq!(c.apply_node(n("a", json!({}))), NodeChange::Irrelevant);
        assert_eq!(
            c.apply_node(n("a", json!({"x": "y"}))),
            NodeChange::Relevant
        );
        c.assume(req("p1"), "a");
        assert_eq!(c.node("a").unwrap().requested.milli_cpu, 300);
        assert!(c.is_assumed("default/p1"));
        c.apply_bound_pod(req("p1"), "a");
        assert!(!c.is_assumed("default/p1"));
        assert_eq!(
            c.node("a").unwrap().requested.milli_cpu,
            300,
            "confirm does not double count"
        );
        c.forget("default/p1");
        assert!(c.has_pod("default/p1"), "forget ignores confirmed pods");
        c.assume(req("p2"), "a");
        c.forget("default/p2");
        assert_eq!(c.node("a").unwrap().pods.len(), 1);
        assert!(c.remove_pod("default/p1"));
        assert_eq!(c.node("a").unwrap().requested.milli_cpu, 0);
    }

    #[test]
    fn nodes_come_and_go() {
        let mut c = Cache::new();
        c.apply_node(n("a", json!({})));
        c.apply_node(n("b", json!({})));
        c.apply_node(n("c", json!({})));
        c.apply_bound_pod(req("p"), "a");
        c.remove_node("a");
        assert_eq!(c.node_count(), 2);
        assert!(c.node("c").is_some() && c.node("b").is_some());
        c.apply_node(n("a", json!({})));
        assert_eq!(
            c.node("a").unwrap().pods.len(),
            1,
            "pods return with their node"
        );
        // A pod bound to a node not seen yet is counted once the node appears.
        c.apply_bound_pod(req("q"), "d");
        c.apply_node(n("d", json!({})));
        assert_eq!(c.node("d").unwrap().requested.milli_cpu, 300);
    }
}
