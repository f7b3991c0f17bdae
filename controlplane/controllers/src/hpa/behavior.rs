//! Turning a metric proposal into the replica count to apply (upstream `horizontal.go`):
//! stabilization windows over the recommendation history, `behavior` scaling policies over
//! the scale-event history, min/max clamping, and the AbleToScale/ScalingLimited reasons.

use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The legacy scale-up cap without `behavior`: `max(2 × current, 4)`.
pub fn legacy_scale_up_limit(current: i32) -> i32 {
    (2 * current).max(4)
}

/// One replica change the controller made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleEvent {
    /// How many replicas were added or removed (non-negative).
    pub change: i32,
    /// When.
    pub at: Timestamp,
    /// Older than the longest policy period (reusable slot).
    pub outdated: bool,
}

/// What the controller remembers per HPA (in memory, as upstream).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// Unstabilized recommendations.
    pub recommendations: Vec<(i32, Timestamp)>,
    /// Scale-ups.
    pub up: Vec<ScaleEvent>,
    /// Scale-downs.
    pub down: Vec<ScaleEvent>,
}

/// `selectPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// The policy allowing the biggest change.
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// One scaling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// `Pods` (true) or `Percent` (false).
    pub pods: bool,
    /// Pods or percent.
    pub value: i32,
    /// Period in seconds.
    pub period: i32,
}

/// Scaling rules of one direction, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Stabilization window in seconds.
    pub window: i32,
    /// How policies combine.
    pub select: Select,
    /// The policies.
    pub policies: Vec<Policy>,
    /// Per-direction tolerance, if set.
    pub tolerance: Option<f64>,
}

fn fill(r: Option<&HPAScalingRules>, mut d: Rules) -> Rules {
    let Some(r) = r else {
        return d;
    };
    if let Some(w) = r.stabilization_window_seconds {
        d.window = w;
    }
    if let Some(s) = r.select_policy.as_deref() {
        d.select = match s {
            "Min" => Select::Min,
            "Disabled" => Select::Disabled,
            _ => Select::Max,
        };
    }
    if let Some(ps) = &r.policies {
        d.policies = ps
            .iter()
            .map(|p| Policy {
                pods: p.type_ == "Pods",
                value: p.value,
                period: p.period_seconds,
            })
            .collect();
    }
    d.tolerance = r
        .tolerance
        .as_ref()
        .and_then(|q| super::quantity::parse_f64(&q.0).ok());
    d
}

/// Upstream `GenerateHPAScaleUpRules`: window 0, Max of (4 pods, 100 %) per 15 s.
pub fn scale_up_rules(r: Option<&HPAScalingRules>) -> Rules {
    fill(
        r,
        Rules {
            window: 0,
            select: Select::Max,
            policies: vec![
                Policy {
                    pods: true,
                    value: 4,
                    period: 15,
                },
                Policy {
                    pods: false,
                    value: 100,
                    period: 15,
                },
            ],
            tolerance: None,
        },
    )
}

/// Upstream `GenerateHPAScaleDownRules` (window from the controller's downscale
/// stabilization, 300 s by default): Max of 100 % per 15 s.
pub fn scale_down_rules(r: Option<&HPAScalingRules>, default_window: i32) -> Rules {
    fill(
        r,
        Rules {
            window: default_window,
            select: Select::Max,
            policies: vec![Policy {
                pods: false,
                value: 100,
                period: 15,
            }],
            tolerance: None,
        },
    )
}

/// Both directions of a `behavior`.
pub fn rules(b: &HorizontalPodAutoscalerBehavior, default_down_window: i32) -> (Rules, Rules) {
    (
        scale_up_rules(b.scale_up.as_ref()),
        scale_down_rules(b.scale_down.as_ref(), default_down_window),
    )
}

/// The outcome of normalization: replicas and the two conditions it decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// Replicas to apply.
    pub replicas: i32,
    /// AbleToScale (True) reason and message.
    pub able: (&'static str, &'static str),
    /// ScalingLimited: whether limited, reason, message.
    pub limited: (bool, &'static str, &'static str),
}

const READY: (&str, &str) = ("ReadyForNewScale", "recommended size matches current size");
const DOWN_STABILIZED: (&str, &str) = (
    "ScaleDownStabilized",
    "recent recommendations were higher than current one, applying the highest recent recommendation",
);
const UP_STABILIZED: (&str, &str) = (
    "ScaleUpStabilized",
    "recent recommendations were lower than current one, applying the lowest recent recommendation",
);
const WITHIN: (&str, &str) = (
    "DesiredWithinRange",
    "the desired count is within the acceptable range",
);
const TOO_MANY: (&str, &str) = (
    "TooManyReplicas",
    "the desired replica count is more than the maximum replica count",
);
const TOO_FEW: (&str, &str) = (
    "TooFewReplicas",
    "the desired replica count is less than the minimum replica count",
);
const UP_LIMIT: (&str, &str) = (
    "ScaleUpLimit",
    "the desired replica count is increasing faster than the maximum scale rate",
);
const DOWN_LIMIT: (&str, &str) = (
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
);

/// Records `current` as the first recommendation of a new history.
pub fn record_initial(h: &mut History, current: i32, now: Timestamp) {
    if h.recommendations.is_empty() {
        h.recommendations.push((current, now));
    }
}

fn secs(s: i32) -> SignedDuration {
    SignedDuration::from_secs(i64::from(s))
}

/// Without `behavior`: the highest recommendation of the downscale window (upstream
/// `stabilizeRecommendation`), recording `desired`.
pub fn stabilize(h: &mut History, now: Timestamp, window: SignedDuration, desired: i32) -> i32 {
    let cutoff = now - window;
    let mut max = desired;
    let mut old = None;
    for (i, (rec, at)) in h.recommendations.iter().enumerate() {
        if *at < cutoff {
            old = Some(i);
        } else if *rec > max {
            max = *rec;
        }
    }
    match old {
        Some(i) => h.recommendations[i] = (desired, now),
        None => h.recommendations.push((desired, now)),
    }
    max
}

/// Without `behavior` (upstream `normalizeDesiredReplicas` + `convertDesiredReplicasWithRules`).
pub fn normalize_legacy(
    h: &mut History,
    now: Timestamp,
    window: SignedDuration,
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
) -> Normalized {
    let stabilized = stabilize(h, now, window, desired);
    let able = if stabilized != desired {
        DOWN_STABILIZED
    } else {
        READY
    };
    let up_limit = legacy_scale_up_limit(current);
    let (max_allowed, max_reason) = if max > up_limit {
        (up_limit, UP_LIMIT)
    } else {
        (max, TOO_MANY)
    };
    let (replicas, reason) = if stabilized < min {
        (min, TOO_FEW)
    } else if stabilized > max_allowed {
        (max_allowed, max_reason)
    } else {
        (stabilized, WITHIN)
    };
    Normalized {
        replicas,
        able,
        limited: (replicas != stabilized, reason.0, reason.1),
    }
}

/// With `behavior`: clamp between the lowest recommendation of the scale-up window and the
/// highest of the scale-down window (upstream `stabilizeRecommendationWithBehaviors`).
pub fn stabilize_with_behaviors(
    h: &mut History,
    now: Timestamp,
    up: &Rules,
    down: &Rules,
    current: i32,
    desired: i32,
) -> (i32, (&'static str, &'static str)) {
    let up_cutoff = now - secs(up.window);
    let down_cutoff = now - secs(down.window);
    let (mut up_rec, mut down_rec) = (desired, desired);
    let mut old = None;
    for (i, (rec, at)) in h.recommendations.iter().enumerate() {
        if *at > up_cutoff {
            up_rec = up_rec.min(*rec);
        }
        if *at > down_cutoff {
            down_rec = down_rec.max(*rec);
        }
        if *at < up_cutoff && *at < down_cutoff {
            old = Some(i);
        }
    }
    let recommendation = current.max(up_rec).min(down_rec);
    match old {
        Some(i) => h.recommendations[i] = (desired, now),
        None => h.recommendations.push((desired, now)),
    }
    let reason = if desired >= current {
        UP_STABILIZED
    } else {
        DOWN_STABILIZED
    };
    (recommendation, reason)
}

fn change_in_period(events: &[ScaleEvent], period: i32, now: Timestamp) -> i32 {
    let cutoff = now - secs(period);
    events
        .iter()
        .filter(|e| e.at > cutoff)
        .map(|e| e.change)
        .sum()
}

/// Upstream `calculateScaleUpLimitWithScalingRules`: the most replicas allowed now.
pub fn scale_up_limit(h: &History, current: i32, rules: &Rules, now: Timestamp) -> i32 {
    let (mut result, pick): (i32, fn(i32, i32) -> i32) = match rules.select {
        Select::Disabled => return current,
        Select::Min => (i32::MAX, std::cmp::min),
        Select::Max => (i32::MIN, std::cmp::max),
    };
    for p in &rules.policies {
        let start = current - change_in_period(&h.up, p.period, now)
            + change_in_period(&h.down, p.period, now);
        let proposed = if p.pods {
            start + p.value
        } else {
            (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32
        };
        result = pick(result, proposed);
    }
    result
}

/// Upstream `calculateScaleDownLimitWithBehaviors`: the fewest replicas allowed now.
pub fn scale_down_limit(h: &History, current: i32, rules: &Rules, now: Timestamp) -> i32 {
    let (mut result, pick): (i32, fn(i32, i32) -> i32) = match rules.select {
        Select::Disabled => return current,
        Select::Min => (i32::MIN, std::cmp::max),
        Select::Max => (i32::MAX, std::cmp::min),
    };
    for p in &rules.policies {
        let start = current - change_in_period(&h.up, p.period, now)
            + change_in_period(&h.down, p.period, now);
        let proposed = if p.pods {
            start - p.value
        } else {
            (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32
        };
        result = pick(result, proposed);
    }
    result
}

/// Upstream `convertDesiredReplicasWithBehaviorRate`.
#[allow(clippy::too_many_arguments)]
pub fn apply_rates(
    h: &History,
    now: Timestamp,
    up: &Rules,
    down: &Rules,
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
) -> (i32, (&'static str, &'static str)) {
    if desired > current {
        let limit = scale_up_limit(h, current, up, now).max(current);
        let (allowed, reason) = if max > limit {
            (limit, UP_LIMIT)
        } else {
            (max, TOO_MANY)
        };
        if desired > allowed {
            return (allowed, reason);
        }
    } else if desired < current {
        let limit = scale_down_limit(h, current, down, now).min(current);
        let (allowed, reason) = if min < limit {
            (limit, DOWN_LIMIT)
        } else {
            (min, TOO_FEW)
        };
        if desired < allowed {
            return (allowed, reason);
        }
    }
    (desired, WITHIN)
}

/// With `behavior` (upstream `normalizeDesiredReplicasWithBehaviors`).
#[allow(clippy::too_many_arguments)]
pub fn normalize_with_behaviors(
    h: &mut History,
    now: Timestamp,
    up: &Rules,
    down: &Rules,
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
) -> Normalized {
    let (stabilized, reason) = stabilize_with_behaviors(h, now, up, down, current, desired);
    let able = if stabilized != desired { reason } else { READY };
    let (replicas, limited) = apply_rates(h, now, up, down, current, stabilized, min, max);
    Normalized {
        replicas,
        able,
        limited: (replicas != stabilized, limited.0, limited.1),
    }
}

/// Upstream `storeScaleEvent`: remembers a change, reusing an outdated slot.
pub fn store_scale_event(
    h: &mut History,
    up: &Rules,
    down: &Rules,
    prev: i32,
    new: i32,
    now: Timestamp,
) {
    let (events, rules, change) = if new > prev {
        (&mut h.up, up, new - prev)
    } else {
        (&mut h.down, down, prev - new)
    };
    let longest = rules.policies.iter().map(|p| p.period).max().unwrap_or(0);
    let cutoff = now - secs(longest);
    for e in events.iter_mut() {
        if e.at < cutoff {
            e.outdated = true;
        }
    }
    let ev = ScaleEvent {
        change,
        at: now,
        outdated: false,
    };
    match events.iter().rposition(|e| e.outdated) {
        Some(i) => events[i] = ev,
        None => events.push(ev),
    }
}

#[cfg(test)]
#[path = "behavior_tests.rs"]
mod tests;
