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
pub mod volume_binding;
pub mod volume_prebind;
pub mod volume_restrictions;

use std::sync::Arc;
use std::time::Duration;

use crate::framework::{Profile, WeightedScore};
use crate::volumes::VolumeStore;

/// Upstream's default profile for `scheduler_name`, with the volume plugins reading `volumes`
/// (fed by the scheduler's PV/PVC/StorageClass watches): PreFilter VolumeRestrictions,
/// NodeVolumeLimits, VolumeBinding, InterPodAffinity; filters in upstream order
/// (NodeUnschedulable, NodeName, TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit,
/// VolumeRestrictions, VolumeBinding, InterPodAffinity); DefaultPreemption; scores
/// TaintToleration 3, NodeAffinity 2, InterPodAffinity 2, NodeResourcesFit (LeastAllocated) 1,
/// BalancedAllocation 1, ImageLocality 1; VolumeBinding's Reserve and PreBind (waiting up to
/// `bind_timeout` for claims to become Bound); and DefaultBinder when a client is given.
pub fn default_profile(
    scheduler_name: &str,
    client: Option<kube::Client>,
    volumes: Arc<VolumeStore>,
    bind_timeout: Duration,
) -> Profile {
    let restrictions = Arc::new(volume_restrictions::VolumeRestrictions {
        store: volumes.clone(),
    });
    let binding = Arc::new(volume_binding::VolumeBinding {
        bind_timeout,
        ..volume_binding::VolumeBinding::new(volumes, client.clone())
    });
    let interpod = Arc::new(interpod::InterPodAffinity);
    let fit = Arc::new(fit::NodeResourcesFit);
    let taints = Arc::new(taints::TaintToleration);
    let affinity = Arc::new(node_affinity::NodeAffinity);
    let balanced = Arc::new(fit::BalancedAllocation);
    let image = Arc::new(image::ImageLocality);
    Profile {
        scheduler_name: scheduler_name.to_string(),
        pre_filter: vec![
            restrictions.clone(),
            Arc::new(volume_restrictions::NodeVolumeLimits),
            binding.clone(),
            interpod.clone(),
        ],
        filter: vec![
            Arc::new(basic::NodeUnschedulable),
            Arc::new(basic::NodeName),
            taints.clone(),
            affinity.clone(),
            Arc::new(ports::NodePorts),
            fit.clone(),
            restrictions,
            binding.clone(),
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
        reserve: vec![binding.clone()],
        permit: Vec::new(),
        pre_bind: vec![binding],
        bind: client
            .map(|c| {
                vec![Arc::new(bind::DefaultBinder { client: c })
                    as Arc<dyn crate::framework::BindPlugin>]
            })
            .unwrap_or_default(),
        percentage_of_nodes_to_score: 0,
    }
}

/// [`default_profile`] on a store nobody feeds and upstream's bind timeout, for unit tests and
/// benchmarks of pods without claims (a pod with a claim finds it missing).
pub fn standalone_profile(scheduler_name: &str, client: Option<kube::Client>) -> Profile {
    default_profile(
        scheduler_name,
        client,
        VolumeStore::new(),
        volume_binding::BIND_TIMEOUT,
    )
}
