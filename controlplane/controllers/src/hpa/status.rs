//! HPA status pieces: conditions (upstream `setCondition`: the transition time moves only
//! when the status flips) and the `currentMetrics` entries.

use k8s_openapi::api::autoscaling::v2::{
    ContainerResourceMetricStatus, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus,
    MetricStatus, MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::quantity::format_milli;

/// Condition `AbleToScale`.
pub const ABLE_TO_SCALE: &str = "AbleToScale";
/// Condition `ScalingActive`.
pub const SCALING_ACTIVE: &str = "ScalingActive";
/// Condition `ScalingLimited`.
pub const SCALING_LIMITED: &str = "ScalingLimited";

/// A condition to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    /// Type.
    pub type_: &'static str,
    /// `True` or `False`.
    pub status: bool,
    /// Reason.
    pub reason: String,
    /// Message.
    pub message: String,
}

impl Cond {
    /// A condition of `type_`.
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Sets `c` in `status.conditions` (appending it if new).
pub fn set_condition(status: &mut HorizontalPodAutoscalerStatus, c: &Cond, now: Timestamp) {
    let list = status.conditions.get_or_insert_with(Vec::new);
    let want = if c.status { "True" } else { "False" };
    let i = match list.iter().position(|x| x.type_ == c.type_) {
        Some(i) => i,
        None => {
            list.push(HorizontalPodAutoscalerCondition {
                type_: c.type_.into(),
                ..Default::default()
            });
            list.len() - 1
        }
    };
    let existing = &mut list[i];
    if existing.status != want {
        existing.last_transition_time = Some(Time(now));
    }
    existing.status = want.into();
    existing.reason = Some(c.reason.clone());
    existing.message = Some(c.message.clone());
}

/// The value part of a resource metric status.
pub fn value_status(utilization: Option<i32>, raw_milli: i64) -> MetricValueStatus {
    MetricValueStatus {
        average_utilization: utilization,
        average_value: Some(Quantity(format_milli(raw_milli))),
        value: None,
    }
}

/// A `Resource` metric status.
pub fn resource_status(name: &str, current: MetricValueStatus) -> MetricStatus {
    MetricStatus {
        type_: "Resource".into(),
        resource: Some(ResourceMetricStatus {
            name: name.into(),
            current,
        }),
        ..Default::default()
    }
}

/// A `ContainerResource` metric status.
pub fn container_status(name: &str, container: &str, current: MetricValueStatus) -> MetricStatus {
    MetricStatus {
        type_: "ContainerResource".into(),
        container_resource: Some(ContainerResourceMetricStatus {
            name: name.into(),
            container: container.into(),
            current,
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;

    #[test]
    fn transition_time_moves_only_on_flip() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = t0 + SignedDuration::from_secs(10);
        let mut s = HorizontalPodAutoscalerStatus::default();
        set_condition(&mut s, &Cond::new(ABLE_TO_SCALE, true, "A", "a"), t0);
        set_condition(&mut s, &Cond::new(ABLE_TO_SCALE, true, "B", "b"), t1);
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(c.last_transition_time, Some(Time(t0)));
        assert_eq!(c.reason.as_deref(), Some("B"));
        set_condition(&mut s, &Cond::new(ABLE_TO_SCALE, false, "C", "c"), t1);
        set_condition(&mut s, &Cond::new(SCALING_ACTIVE, true, "D", "d"), t1);
        let cs = s.conditions.as_ref().unwrap();
        assert_eq!(cs[0].last_transition_time, Some(Time(t1)));
        assert_eq!(cs[0].status, "False");
        assert_eq!(cs.len(), 2);
    }
}
