//! ImageLocality: prefer nodes that already hold the pod's images, scaled by how widely each
//! image is spread over the cluster (upstream's thresholds).

use std::collections::HashMap;

use crate::framework::{
    CycleState, NodeInfo, PodInfo, PreScorePlugin, ScorePlugin, Snapshot, Status, MAX_NODE_SCORE,
};
use crate::nodeinfo::normalize_image;

const MB: i64 = 1024 * 1024;
/// Below this total the score is 0.
pub const MIN_THRESHOLD: i64 = 23 * MB;
/// Per container: at or above this total the score is 100.
pub const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

const KEY: &str = "ImageLocality";

/// Per image of the pod: how many nodes hold it.
struct ImageSpread {
    images: Vec<String>,
    nodes_with: HashMap<String, usize>,
    total: usize,
}

fn pod_images(pod: &PodInfo) -> Vec<String> {
    let Some(s) = pod.pod.spec.as_ref() else {
        return Vec::new();
    };
    s.containers
        .iter()
        .chain(s.init_containers.iter().flatten())
        .filter_map(|c| c.image.as_deref())
        .map(normalize_image)
        .collect()
}

/// Score for `sum` bytes of present images over `containers` containers.
pub fn calculate_priority(sum: i64, containers: usize) -> i64 {
    let max = MAX_CONTAINER_THRESHOLD * containers.max(1) as i64;
    let sum = sum.clamp(MIN_THRESHOLD, max);
    MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
}

/// The ImageLocality plugin.
pub struct ImageLocality;

impl PreScorePlugin for ImageLocality {
    fn name(&self) -> &'static str {
        "ImageLocality"
    }
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: Snapshot<'_>,
        _: &[&NodeInfo],
    ) -> Status {
        let images = pod_images(pod);
        let mut nodes_with = HashMap::new();
        for img in &images {
            let n = snap
                .nodes
                .iter()
                .filter(|n| n.images.contains_key(img))
                .count();
            nodes_with.insert(img.clone(), n);
        }
        state.write(
            KEY,
            ImageSpread {
                images,
                nodes_with,
                total: snap.nodes.len(),
            },
        );
        Status::ok()
    }
}

impl ScorePlugin for ImageLocality {
    fn name(&self) -> &'static str {
        "ImageLocality"
    }
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(s) = state.read::<ImageSpread>(KEY) else {
            return 0;
        };
        let sum: i64 = s
            .images
            .iter()
            .filter_map(|img| {
                let size = *node.images.get(img)?;
                let spread =
                    s.nodes_with.get(img).copied().unwrap_or(0) as f64 / s.total.max(1) as f64;
                Some((size as f64 * spread) as i64)
            })
            .sum();
        calculate_priority(sum, s.images.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;
    use serde_json::json;
    use std::sync::Arc;

    #[test]
    fn priority_thresholds() {
        assert_eq!(calculate_priority(0, 1), 0);
        assert_eq!(calculate_priority(MIN_THRESHOLD, 1), 0);
        assert_eq!(calculate_priority(MAX_CONTAINER_THRESHOLD, 1), 100);
        assert_eq!(calculate_priority(5000 * MB, 1), 100);
        assert_eq!(
            calculate_priority(MAX_CONTAINER_THRESHOLD, 2),
            (1000 - 23) * 100 / (2000 - 23)
        );
    }

    #[test]
    fn score_scales_by_spread() {
        let with_img = |name: &str| {
            let n: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {"images": [{"names": ["registry/app:1"], "sizeBytes": 500 * MB}]}
            }))
            .unwrap();
            NodeInfo::new(Arc::new(n))
        };
        let nodes = vec![with_img("a"), with_img("b"), plain("c"), plain("d")];
        let ns = Default::default();
        let snap = Snapshot {
            nodes: &nodes,
            namespaces: &ns,
        };
        let p = pod(json!({"containers": [{"name": "c", "image": "registry/app:1"}]}));
        let mut st = CycleState::default();
        ImageLocality.pre_score(&mut st, &p, snap, &[]);
        // 500 MB * 2/4 = 250 MB.
        assert_eq!(
            ImageLocality.score(&st, &p, &nodes[0]),
            calculate_priority(250 * MB, 1)
        );
        assert_eq!(ImageLocality.score(&st, &p, &nodes[2]), 0);
        assert_eq!(normalize_image("busybox"), "busybox:latest");
        assert_eq!(
            normalize_image("host:5000/busybox"),
            "host:5000/busybox:latest"
        );
        assert_eq!(normalize_image("busybox@sha256:ab"), "busybox@sha256:ab");
    }
}
