//! The default plugins (upstream's default profile) and the profile that wires them with
//! upstream's score weights.

pub mod basic;
pub mod bind;
pub mod fit;
pub mod image;
pub mod interpod;
pub mod node_affinity;
pub mod ports;
pub mod preemption;
pub mod taints;
#[cfg(test)]
pub mod testutil;

use std::sync::Arc;

use crate::framework::{Profile, WeightedScore};

/// Upstream's default profile for `scheduler_name`: filters in upstream order (NodeUnschedulable,
/// NodeName, TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit, InterPodAffinity),
/// DefaultPreemption, scores TaintToleration 3, NodeAffinity 2, InterPodAffinity 2,
/// NodeResourcesFit (LeastAllocated) 1, BalancedAllocation 1, ImageLocality 1, and DefaultBinder
/// when a client is given.
pub fn default_profile(scheduler_name: &str, client: Option<kube::Client>) -> Profile {
    let interpod = Arc::new(interpod::InterPodAffinity);
    let fit = Arc::new(fit::NodeResourcesFit);
    let taints = Arc::new(taints::TaintToleration);
    let affinity = Arc::new(node_affinity::NodeAffinity);
    let balanced = Arc::new(fit::BalancedAllocation);
    let image = Arc::new(image::ImageLocality);
    Profile {
        scheduler_name: scheduler_name.to_string(),
        pre_filter: vec![interpod.clone()],
        filter: vec![
            Arc::new(basic::NodeUnschedulable),
            Arc::new(basic::NodeName),
            taints.clone(),
            affinity.clone(),
            Arc::new(ports::NodePorts),
            fit.clone(),
            interpod.clone(),
        ],
        post_filter: vec![Arc::new(preemption::DefaultPreemption)],
        pre_score: vec![interpod.clone(), balanced.clone(), image.clone()],
        score: vec![
            WeightedScore {
                plugin: taints,
                weight: 3,
            },
            WeightedScore {
                plugin: affinity,
                weight: 2,
            },
            WeightedScore {
                plugin: interpod,
                weight: 2,
            },
            WeightedScore {
                plugin: fit,
                weight: 1,
            },
            WeightedScore {
                plugin: balanced,
                weight: 1,
            },
            WeightedScore {
                plugin: image,
                weight: 1,
            },
        ],
        reserve: Vec::new(),
        permit: Vec::new(),
        pre_bind: Vec::new(),
        bind: client
            .map(|c| {
                vec![Arc::new(bind::DefaultBinder { client: c })
                    as Arc<dyn crate::framework::BindPlugin>]
            })
            .unwrap_or_default(),
        percentage_of_nodes_to_score: 0,
    }
}
