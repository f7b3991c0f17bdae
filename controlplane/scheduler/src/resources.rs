//! Resource quantities and a pod's effective request, computed as upstream's
//! `resourcehelper.PodRequests` does (sidecar init containers included, plus overhead).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Default CPU request (millicores) assumed for a container without one, for scoring only.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Default memory request (bytes) assumed for a container without one, for scoring only.
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Parses a Kubernetes quantity and returns it multiplied by `10^scale`, rounded up
/// (scale 3 gives milli-units, 0 gives whole units). `None` when the text is malformed.
pub fn parse_scaled(q: &str, scale: i32) -> Option<i64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let (neg, num) = match num.strip_prefix('-') {
        Some(n) => (true, n),
        None => (false, num.strip_prefix('+').unwrap_or(num)),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut mantissa: i128 = 0;
    for c in int.chars().chain(frac.chars()) {
        mantissa = mantissa
            .checked_mul(10)?
            .checked_add(c.to_digit(10)? as i128)?;
    }
    let mut exp10: i32 = -(frac.len() as i32) + scale;
    let mut bin: u32 = 0;
    match suffix {
        "" => {}
        "Ki" => bin = 10,
        "Mi" => bin = 20,
        "Gi" => bin = 30,
        "Ti" => bin = 40,
        "Pi" => bin = 50,
        "Ei" => bin = 60,
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        s if s.starts_with(['e', 'E']) => exp10 += s[1..].parse::<i32>().ok()?,
        _ => return None,
    }
    let mut v = mantissa.checked_mul(1i128.checked_shl(bin)?)?;
    if exp10 >= 0 {
        v = v.checked_mul(10i128.checked_pow(exp10 as u32)?)?;
    } else {
        let d = 10i128.checked_pow((-exp10) as u32).unwrap_or(i128::MAX);
        v = (v + d - 1) / d;
    }
    let v = if neg { -v } else { v };
    i64::try_from(v).ok()
}

/// Parses a quantity of resource `name` into the unit [`Resource`] stores it in.
fn parse_for(name: &str, q: &Quantity) -> i64 {
    let scale = if name == "cpu" { 3 } else { 0 };
    parse_scaled(&q.0, scale).unwrap_or(0)
}

/// An amount of every resource the scheduler counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resource {
    /// CPU, millicores.
    pub milli_cpu: i64,
    /// Memory, bytes.
    pub memory: i64,
    /// Ephemeral storage, bytes.
    pub ephemeral_storage: i64,
    /// Pod count (only meaningful for allocatable).
    pub allowed_pods: i64,
    /// Extended and hugepage resources, whole units.
    pub scalar: BTreeMap<String, i64>,
}

impl Resource {
    /// Builds from a resource list (requests, limits, allocatable, overhead).
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Self {
        let mut r = Resource::default();
        for (k, v) in list {
            r.set(k, parse_for(k, v));
        }
        r
    }

    /// Sets one resource.
    pub fn set(&mut self, name: &str, v: i64) {
        match name {
            "cpu" => self.milli_cpu = v,
            "memory" => self.memory = v,
            "ephemeral-storage" => self.ephemeral_storage = v,
            "pods" => self.allowed_pods = v,
            n if is_scalar(n) => {
                self.scalar.insert(n.to_string(), v);
            }
            _ => {}
        }
    }

    /// Adds `o` to `self`.
    pub fn add(&mut self, o: &Resource) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.allowed_pods += o.allowed_pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    /// Subtracts `o` from `self`.
    pub fn sub(&mut self, o: &Resource) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.allowed_pods -= o.allowed_pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Per-resource maximum of `self` and `o`.
    pub fn max_with(&mut self, o: &Resource) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        self.allowed_pods = self.allowed_pods.max(o.allowed_pods);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    /// Whether every amount is zero.
    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }
}

/// Extended resources (`domain/name`, not `kubernetes.io/` except hugepages) and hugepages.
fn is_scalar(name: &str) -> bool {
    name.starts_with("hugepages-")
        || (name.contains('/')
            && !name.starts_with("kubernetes.io/")
            && !name.starts_with("requests."))
}

/// A container's requests; a resource with only a limit requests the limit (the API's defaulting).
fn container_requests(c: &Container) -> Resource {
    let Some(res) = &c.resources else {
        return Resource::default();
    };
    let mut list = res.limits.clone().unwrap_or_default();
    if let Some(req) = &res.requests {
        list.extend(req.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    Resource::from_list(&list)
}

/// Like [`container_requests`] but with the scoring defaults for missing cpu/memory.
fn container_non_zero(c: &Container) -> Resource {
    let mut r = container_requests(c);
    if r.milli_cpu == 0 {
        r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
    }
    if r.memory == 0 {
        r.memory = DEFAULT_MEMORY_REQUEST;
    }
    r
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The pod's effective request: max(regular containers + sidecars, each init container plus
/// the sidecars started before it) + overhead. With `non_zero`, containers without a cpu or
/// memory request count the scoring defaults.
pub fn pod_requests(pod: &Pod, non_zero: bool) -> Resource {
    let Some(spec) = &pod.spec else {
        return Resource::default();
    };
    let per = |c: &Container| {
        if non_zero {
            container_non_zero(c)
        } else {
            container_requests(c)
        }
    };
    let mut reqs = Resource::default();
    for c in &spec.containers {
        reqs.add(&per(c));
    }
    let mut sidecars = Resource::default();
    let mut init_max = Resource::default();
    for c in spec.init_containers.iter().flatten() {
        let mut r = per(c);
        if is_sidecar(c) {
            reqs.add(&r);
            sidecars.add(&r);
            r = sidecars.clone();
        } else {
            r.add(&sidecars);
        }
        init_max.max_with(&r);
    }
    reqs.max_with(&init_max);
    if let Some(o) = &spec.overhead {
        reqs.add(&Resource::from_list(o));
    }
    reqs
}

/// The node's allocatable resources (capacity when allocatable is absent).
pub fn node_allocatable(node: &Node) -> Resource {
    let st = node.status.as_ref();
    match st.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref())) {
        Some(l) => Resource::from_list(l),
        None => Resource::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities() {
        let cases: &[(&str, i32, Option<i64>)] = &[
            ("1", 3, Some(1000)),
            ("100m", 3, Some(100)),
            ("0.1", 3, Some(100)),
            ("1.5", 3, Some(1500)),
            ("1Gi", 0, Some(1 << 30)),
            ("128Mi", 0, Some(128 << 20)),
            ("1k", 0, Some(1000)),
            ("1M", 0, Some(1_000_000)),
            ("1e3", 0, Some(1000)),
            ("1500m", 0, Some(2)),
            ("1n", 3, Some(1)),
            ("abc", 0, None),
            ("1Qi", 0, None),
        ];
        for (q, s, want) in cases {
            assert_eq!(parse_scaled(q, *s), *want, "{q}");
        }
    }

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": v})).unwrap()
    }

    fn c(name: &str, cpu: &str, mem: &str) -> serde_json::Value {
        json!({"name": name, "image": "i", "resources": {"requests": {"cpu": cpu, "memory": mem}}})
    }

    #[test]
    fn pod_requests_cases() {
        // Regular containers sum.
        let p = pod(json!({"containers": [c("a", "100m", "1Mi"), c("b", "200m", "2Mi")]}));
        let r = pod_requests(&p, false);
        assert_eq!((r.milli_cpu, r.memory), (300, 3 << 20));
        // A big init container dominates.
        let p = pod(
            json!({"containers": [c("a", "100m", "1Mi")], "initContainers": [c("i", "2", "1Mi")]}),
        );
        let r = pod_requests(&p, false);
        assert_eq!((r.milli_cpu, r.memory), (2000, 1 << 20));
        // Sidecar adds to the regular sum and to later init containers.
        let mut sc = c("s", "500m", "1Mi");
        sc["restartPolicy"] = json!("Always");
        let p = pod(json!({"containers": [c("a", "100m", "1Mi")],
            "initContainers": [sc, c("i", "1", "1Mi")]}));
        let r = pod_requests(&p, false);
        assert_eq!((r.milli_cpu, r.memory), (1500, 2 << 20));
        // Init before the sidecar does not include it.
        let mut sc = c("s", "500m", "1Mi");
        sc["restartPolicy"] = json!("Always");
        let p = pod(json!({"containers": [c("a", "100m", "1Mi")],
            "initContainers": [c("i", "1", "1Mi"), sc]}));
        assert_eq!(pod_requests(&p, false).milli_cpu, 1000);
        // Overhead is added.
        let p = pod(json!({"containers": [c("a", "100m", "1Mi")], "overhead": {"cpu": "250m"}}));
        assert_eq!(pod_requests(&p, false).milli_cpu, 350);
        // Limits only: the request defaults to the limit; non-zero defaults for scoring.
        let p = pod(
            json!({"containers": [{"name": "a", "image": "i", "resources": {"limits": {"cpu": "1"}}}]}),
        );
        assert_eq!(pod_requests(&p, false).milli_cpu, 1000);
        assert_eq!(pod_requests(&p, false).memory, 0);
        assert_eq!(pod_requests(&p, true).memory, DEFAULT_MEMORY_REQUEST);
        // Extended resources.
        let p = pod(
            json!({"containers": [{"name": "a", "image": "i", "resources": {"requests": {"example.com/gpu": "2"}}}]}),
        );
        assert_eq!(pod_requests(&p, false).scalar["example.com/gpu"], 2);
    }
}
