//! Node admission: whether a pod bound to this node may run here, decided as kubelet's predicate
//! admit handler decides it, plus the pod-level resource arithmetic the VM is sized from.
//!
//! Upstream (`pkg/kubelet/lifecycle/predicate.go`) builds a scheduler `NodeInfo` from the other
//! active pods and runs the scheduler's admission check on it. The checks kept here, in upstream's
//! order, are: pod count, cpu, memory and ephemeral-storage requests against allocatable
//! (`OutOfpods`, `OutOfcpu`, `OutOfmemory`, `OutOfephemeral-storage`, message
//! `Node didn't have enough resource: <name>, requested: R, used: U, capacity: C`), then host
//! port conflicts (`NodePorts`). Before those, kennel refuses what a VM cannot do: a pod that asks
//! to share the host's network, PID or IPC namespace (`PodSpecNotSupported`, our own reason).
//!
//! Pod requests follow `k8s.io/component-helpers/resource.PodRequests`: the sum of the app
//! containers and the restartable ("sidecar") init containers, or — if larger — the largest
//! init-container step, where a step is the init container plus every sidecar started before it;
//! then `spec.overhead` is added. A request that is absent defaults to the limit, as API defaulting
//! does. Quantities are parsed by [`quantity`], which is also what `env` uses.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use self::quantity::{parse_quantity, ParsedQuantity, QuantityError};

/// Reason for a pod asking for more cpu than the node has left (upstream `OutOfCPU`).
pub const OUT_OF_CPU: &str = "OutOfcpu";
/// Reason for a pod asking for more memory than the node has left (upstream `OutOfMemory`).
pub const OUT_OF_MEMORY: &str = "OutOfmemory";
/// Reason for a pod asking for more ephemeral storage than the node has left.
pub const OUT_OF_EPHEMERAL_STORAGE: &str = "OutOfephemeral-storage";
/// Reason for a pod that would exceed the node's pod capacity (upstream `OutOfPods`).
pub const OUT_OF_PODS: &str = "OutOfpods";
/// Reason for a host port already taken on this node (the scheduler plugin's name).
pub const NODE_PORTS: &str = "NodePorts";
/// Reason for a pod spec a microVM cannot honour (kennel's own reason).
pub const POD_SPEC_NOT_SUPPORTED: &str = "PodSpecNotSupported";
/// Reason for a pod whose spec could not be evaluated (upstream `UnexpectedAdmissionError`).
pub const UNEXPECTED_ADMISSION_ERROR: &str = "UnexpectedAdmissionError";

const NODE_PORTS_MESSAGE: &str =
    "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports";

/// What the node can offer, in the units kubelet's admission compares: cpu in millicores,
/// memory and ephemeral storage in bytes, pods as a count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// Allocatable cpu, millicores.
    pub allocatable_cpu_millis: i64,
    /// Allocatable memory, bytes.
    pub allocatable_memory_bytes: i64,
    /// Maximum number of pods.
    pub allocatable_pods: i64,
    /// Allocatable ephemeral storage, bytes. Zero refuses every pod that requests some, as
    /// upstream does for a node that reports none.
    pub allocatable_ephemeral_storage_bytes: i64,
}

/// A pod's resource requests as admission counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// Cpu, millicores (rounded up).
    pub cpu_millis: i64,
    /// Memory, bytes (rounded up).
    pub memory_bytes: i64,
    /// Ephemeral storage, bytes (rounded up).
    pub ephemeral_storage_bytes: i64,
}

/// A refused admission, in the shape kubelet reports it: the pod goes to phase `Failed` with
/// `status.reason` and `status.message` set to these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Rejection {
    /// Machine-readable reason, e.g. `OutOfcpu`.
    pub reason: String,
    /// Human-readable message, worded as kubelet words it.
    pub message: String,
}

impl Rejection {
    fn new(reason: &str, message: impl Into<String>) -> Self {
        Rejection {
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    fn insufficient(
        resource: &str,
        reason: &str,
        requested: i64,
        used: i64,
        capacity: i64,
    ) -> Self {
        Rejection::new(
            reason,
            format!(
                "Node didn't have enough resource: {resource}, requested: {requested}, used: {used}, capacity: {capacity}"
            ),
        )
    }
}

/// Decides whether `pod` may run on this node, given the pods already admitted to it.
///
/// `running` should hold the node's active pods; pods in a terminal phase (`Succeeded`,
/// `Failed`) and `pod` itself (same UID) are skipped, as kubelet's active-pod list excludes them.
/// The first failing check decides, in upstream's order (pods, cpu, memory, ephemeral-storage,
/// host ports), after kennel's own namespace-sharing check.
pub fn admit(pod: &Pod, running: &[Pod], node: &NodeFacts) -> Result<(), Rejection> {
    check_supported(pod)?;
    let wanted = checked_requests(pod)?;

    let uid = pod.metadata.uid.as_deref().filter(|u| !u.is_empty());
    let others: Vec<&Pod> = running
        .iter()
        .filter(|p| !is_terminal(p))
        .filter(|p| uid.is_none() || p.metadata.uid.as_deref() != uid)
        .collect();

    let mut used = Resources::default();
    for other in &others {
        let r = pod_requests(other);
        used.cpu_millis = used.cpu_millis.saturating_add(r.cpu_millis);
        used.memory_bytes = used.memory_bytes.saturating_add(r.memory_bytes);
        used.ephemeral_storage_bytes = used
            .ephemeral_storage_bytes
            .saturating_add(r.ephemeral_storage_bytes);
    }

    let count = i64::try_from(others.len()).unwrap_or(i64::MAX);
    if count.saturating_add(1) > node.allocatable_pods {
        return Err(Rejection::insufficient(
            "pods",
            OUT_OF_PODS,
            1,
            count,
            node.allocatable_pods,
        ));
    }
    let checks = [
        (
            "cpu",
            OUT_OF_CPU,
            wanted.cpu_millis,
            used.cpu_millis,
            node.allocatable_cpu_millis,
        ),
        (
            "memory",
            OUT_OF_MEMORY,
            wanted.memory_bytes,
            used.memory_bytes,
            node.allocatable_memory_bytes,
        ),
        (
            "ephemeral-storage",
            OUT_OF_EPHEMERAL_STORAGE,
            wanted.ephemeral_storage_bytes,
            used.ephemeral_storage_bytes,
            node.allocatable_ephemeral_storage_bytes,
        ),
    ];
    for (name, reason, requested, used, capacity) in checks {
        if requested > 0 && requested > capacity.saturating_sub(used) {
            return Err(Rejection::insufficient(
                name, reason, requested, used, capacity,
            ));
        }
    }

    let taken = HostPorts::of(others.iter().copied());
    if host_ports(pod).any(|p| taken.conflicts(&p)) {
        return Err(Rejection::new(NODE_PORTS, NODE_PORTS_MESSAGE));
    }
    Ok(())
}

/// The pod's total requests: `max(sum(app + sidecar), max(init step))` plus `spec.overhead`,
/// per resource, as upstream's `PodRequests` computes them. A request that is absent defaults to
/// the container's limit. Quantities that do not parse count as zero; [`admit`] refuses such pods.
///
/// Pod-level `spec.resources.requests` (the `PodLevelResources` feature), when set for cpu or
/// memory, replace the aggregated container value for that resource before overhead is added.
pub fn pod_requests(pod: &Pod) -> Resources {
    let totals = aggregate(pod, Side::Requests).unwrap_or_default();
    Resources {
        cpu_millis: totals.cpu.milli_value(),
        memory_bytes: totals.memory.value(),
        ephemeral_storage_bytes: totals.ephemeral.value(),
    }
}

/// The pod-level memory limit in bytes — what the pod cgroup (here, the VM) is capped at — or
/// `None` when the pod is not bounded.
///
/// As upstream's `ResourceConfigForPod`: the limits aggregate like requests (sum of app and
/// sidecar containers, or the largest init step if larger) plus `spec.overhead`; the pod is
/// unbounded as soon as one app container has no memory limit, or one init step (an init
/// container plus the sidecars started before it) adds up to zero. A pod-level
/// `spec.resources.limits.memory` bounds the pod by itself. Unparseable quantities give `None`.
pub fn pod_memory_limit(pod: &Pod) -> Option<i64> {
    let overhead = overhead(pod, "memory").ok()?;
    if let Some(q) = pod_level(pod, Side::Limits, "memory") {
        let limit = parse_quantity(&q.0).ok()?;
        return Some(limit.saturating_add(overhead).value());
    }
    let spec = pod.spec.as_ref()?;
    let mut declared = true;
    let mut sum = ParsedQuantity::ZERO;
    for c in &spec.containers {
        let limit = container_value(c, Side::Limits, "memory").ok()?;
        declared &= !limit.is_zero();
        sum = sum.saturating_add(limit);
    }
    let mut sidecars = ParsedQuantity::ZERO;
    let mut init_max = ParsedQuantity::ZERO;
    for c in spec.init_containers.iter().flatten() {
        let limit = container_value(c, Side::Limits, "memory").ok()?;
        let step = if is_sidecar(c) {
            sum = sum.saturating_add(limit);
            sidecars = sidecars.saturating_add(limit);
            sidecars
        } else {
            limit.saturating_add(sidecars)
        };
        declared &= !step.is_zero();
        init_max = init_max.max(step);
    }
    if !declared {
        return None;
    }
    Some(sum.max(init_max).saturating_add(overhead).value())
}

/// The quantity a container requests for `resource`: its request, or its limit when only a limit
/// is set (API defaulting copies limits into missing requests).
pub fn effective_request<'a>(container: &'a Container, resource: &str) -> Option<&'a Quantity> {
    let resources = container.resources.as_ref()?;
    resources
        .requests
        .as_ref()
        .and_then(|r| r.get(resource))
        .or_else(|| resources.limits.as_ref().and_then(|l| l.get(resource)))
}

fn check_supported(pod: &Pod) -> Result<(), Rejection> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    let refusals = [
        (
            spec.host_network,
            "spec.hostNetwork",
            "network namespace; it gets its own network interface instead",
        ),
        (
            spec.host_pid,
            "spec.hostPID",
            "PID namespace; it can only see the processes inside its VM",
        ),
        (
            spec.host_ipc,
            "spec.hostIPC",
            "IPC namespace; its shared memory and semaphores stay inside its VM",
        ),
    ];
    for (set, field, why) in refusals {
        if set == Some(true) {
            return Err(Rejection::new(
                POD_SPEC_NOT_SUPPORTED,
                format!(
                    "{field} is not supported: every pod on this node runs in its own virtual machine, which cannot share the host's {why}"
                ),
            ));
        }
    }
    Ok(())
}

fn checked_requests(pod: &Pod) -> Result<Resources, Rejection> {
    let totals = aggregate(pod, Side::Requests)
        .map_err(|e| Rejection::new(UNEXPECTED_ADMISSION_ERROR, e.to_string()))?;
    Ok(Resources {
        cpu_millis: totals.cpu.milli_value(),
        memory_bytes: totals.memory.value(),
        ephemeral_storage_bytes: totals.ephemeral.value(),
    })
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

#[derive(Clone, Copy)]
enum Side {
    Requests,
    Limits,
}

/// An unparseable quantity, with where it was found.
#[derive(Debug)]
struct BadQuantity {
    place: String,
    resource: String,
    source: QuantityError,
}

impl std::fmt::Display for BadQuantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.place, self.resource, self.source)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    cpu: ParsedQuantity,
    memory: ParsedQuantity,
    ephemeral: ParsedQuantity,
}

const TRACKED: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

impl Totals {
    fn get_mut(&mut self, i: usize) -> &mut ParsedQuantity {
        match i {
            0 => &mut self.cpu,
            1 => &mut self.memory,
            _ => &mut self.ephemeral,
        }
    }
}

fn container_value(
    c: &Container,
    side: Side,
    resource: &str,
) -> Result<ParsedQuantity, BadQuantity> {
    let q = match side {
        Side::Requests => effective_request(c, resource),
        Side::Limits => c
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get(resource)),
    };
    match q {
        None => Ok(ParsedQuantity::ZERO),
        Some(q) => parse_quantity(&q.0).map_err(|source| BadQuantity {
            place: format!("container {:?}", c.name),
            resource: resource.to_string(),
            source,
        }),
    }
}

fn pod_level<'a>(pod: &'a Pod, side: Side, resource: &str) -> Option<&'a Quantity> {
    let r = pod.spec.as_ref()?.resources.as_ref()?;
    match side {
        Side::Requests => r.requests.as_ref()?.get(resource),
        Side::Limits => r.limits.as_ref()?.get(resource),
    }
}

fn overhead(pod: &Pod, resource: &str) -> Result<ParsedQuantity, BadQuantity> {
    match pod
        .spec
        .as_ref()
        .and_then(|s| s.overhead.as_ref())
        .and_then(|o| o.get(resource))
    {
        None => Ok(ParsedQuantity::ZERO),
        Some(q) => parse_quantity(&q.0).map_err(|source| BadQuantity {
            place: "spec.overhead".to_string(),
            resource: resource.to_string(),
            source,
        }),
    }
}

fn aggregate(pod: &Pod, side: Side) -> Result<Totals, BadQuantity> {
    let mut out = Totals::default();
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(out);
    };
    for (i, resource) in TRACKED.iter().enumerate() {
        let mut sum = ParsedQuantity::ZERO;
        for c in &spec.containers {
            sum = sum.saturating_add(container_value(c, side, resource)?);
        }
        let mut sidecars = ParsedQuantity::ZERO;
        let mut init_max = ParsedQuantity::ZERO;
        for c in spec.init_containers.iter().flatten() {
            let v = container_value(c, side, resource)?;
            let step = if is_sidecar(c) {
                sum = sum.saturating_add(v);
                sidecars = sidecars.saturating_add(v);
                sidecars
            } else {
                v.saturating_add(sidecars)
            };
            init_max = init_max.max(step);
        }
        let mut total = sum.max(init_max);
        if *resource != "ephemeral-storage" {
            if let Some(q) = pod_level(pod, side, resource) {
                total = parse_quantity(&q.0).map_err(|source| BadQuantity {
                    place: "spec.resources".to_string(),
                    resource: resource.to_string(),
                    source,
                })?;
            }
        }
        *out.get_mut(i) = total.saturating_add(overhead(pod, resource)?);
    }
    Ok(out)
}

/// One host port binding: (host IP, protocol, port), sanitized as the scheduler does (empty IP
/// is `0.0.0.0`, empty protocol is `TCP`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HostPort {
    ip: String,
    protocol: String,
    port: i32,
}

const BIND_ALL: &str = "0.0.0.0";

/// Host ports a pod holds: those of its app containers and of its sidecar init containers, which
/// run for the pod's whole life. Ports without a `hostPort` (or with one ≤ 0) hold nothing.
fn host_ports(pod: &Pod) -> impl Iterator<Item = HostPort> + '_ {
    let spec = pod.spec.as_ref();
    let apps = spec.into_iter().flat_map(|s| s.containers.iter());
    let sidecars = spec
        .into_iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| is_sidecar(c));
    apps.chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|&hp| hp > 0)?;
            let ip = p
                .host_ip
                .as_deref()
                .filter(|s| !s.is_empty())
                .unwrap_or(BIND_ALL);
            let protocol = p
                .protocol
                .as_deref()
                .filter(|s| !s.is_empty())
                .unwrap_or("TCP");
            Some(HostPort {
                ip: ip.to_string(),
                protocol: protocol.to_string(),
                port,
            })
        })
}

/// The host ports in use on the node, with the scheduler's conflict rule.
struct HostPorts(HashSet<HostPort>);

impl HostPorts {
    fn of<'a>(pods: impl Iterator<Item = &'a Pod>) -> Self {
        HostPorts(pods.flat_map(host_ports).collect())
    }

    /// `0.0.0.0` conflicts with the same protocol/port on any IP; a specific IP conflicts with
    /// the same IP or with `0.0.0.0`.
    fn conflicts(&self, want: &HostPort) -> bool {
        if want.ip == BIND_ALL {
            return self
                .0
                .iter()
                .any(|h| h.protocol == want.protocol && h.port == want.port);
        }
        [BIND_ALL, want.ip.as_str()].iter().any(|ip| {
            self.0.contains(&HostPort {
                ip: (*ip).to_string(),
                protocol: want.protocol.clone(),
                port: want.port,
            })
        })
    }
}

pub mod quantity {
    //! Kubernetes resource quantities (`k8s.io/apimachinery/pkg/api/resource`), parsed exactly.
    //!
    //! Grammar: `[+-]` digits `[.digits]` suffix, where the suffix is a decimal SI suffix
    //! (`n u m "" k M G T P E`), a binary SI suffix (`Ki Mi Gi Ti Pi Ei`) or a decimal exponent
    //! (`e3`, `E-2`). As upstream, the value is kept at nano precision, rounding any finer part
    //! up (away from zero), so `0.1m` is `1m` as far as anyone can tell after the fact; and its
    //! magnitude is capped at 2^63-1 (upstream caps binary-SI values there; a decimal value that
    //! large cannot be read back as an int64 upstream either).

    /// An invalid quantity string.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum QuantityError {
        /// Nothing to parse.
        #[error("quantity is empty")]
        Empty,
        /// No digits before the suffix.
        #[error("quantity {0:?} has no digits")]
        NoDigits(String),
        /// A suffix that is neither SI, binary SI nor an exponent.
        #[error("quantity {input:?} has an unknown suffix {suffix:?}")]
        UnknownSuffix {
            /// The whole input.
            input: String,
            /// The part after the number.
            suffix: String,
        },
        /// An exponent that does not fit in 32 bits.
        #[error("quantity {0:?} has an exponent out of range")]
        ExponentRange(String),
    }

    const NANOS_PER_UNIT: i128 = 1_000_000_000;
    /// 2^63-1 units, in nanos.
    const MAX_NANOS: i128 = i64::MAX as i128 * NANOS_PER_UNIT;

    /// A parsed quantity, held exactly as a count of nano-units.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub struct ParsedQuantity {
        nanos: i128,
    }

    impl ParsedQuantity {
        /// Zero.
        pub const ZERO: ParsedQuantity = ParsedQuantity { nanos: 0 };

        /// One unit (`1`).
        pub const ONE: ParsedQuantity = ParsedQuantity {
            nanos: NANOS_PER_UNIT,
        };

        /// The value in nano-units.
        pub fn nanos(self) -> i128 {
            self.nanos
        }

        /// Whether the value is zero.
        pub fn is_zero(self) -> bool {
            self.nanos == 0
        }

        /// `ceil(q * 1000)`, saturating at the bounds of i64 (upstream `MilliValue`).
        pub fn milli_value(self) -> i64 {
            ceil_to_i64(self.nanos, 1_000_000)
        }

        /// `ceil(q)`, saturating at the bounds of i64 (upstream `Value`).
        pub fn value(self) -> i64 {
            ceil_to_i64(self.nanos, NANOS_PER_UNIT)
        }

        /// The sum, saturating at the cap.
        pub fn saturating_add(self, other: ParsedQuantity) -> ParsedQuantity {
            ParsedQuantity {
                nanos: self
                    .nanos
                    .saturating_add(other.nanos)
                    .clamp(-MAX_NANOS, MAX_NANOS),
            }
        }
    }

    fn ceil_to_i64(nanos: i128, per: i128) -> i64 {
        let q = nanos.div_euclid(per) + i128::from(nanos.rem_euclid(per) != 0);
        i64::try_from(q).unwrap_or(if q < 0 { i64::MIN } else { i64::MAX })
    }

    /// Parses a quantity such as `250m`, `1.5Gi`, `2e3` or `128974848`.
    pub fn parse_quantity(input: &str) -> Result<ParsedQuantity, QuantityError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(QuantityError::Empty);
        }
        let bytes = s.as_bytes();
        let mut pos = 0;
        let negative = match bytes[0] {
            b'-' => {
                pos = 1;
                true
            }
            b'+' => {
                pos = 1;
                false
            }
            _ => false,
        };
        let int_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        let int_digits = &s[int_start..pos];
        let mut frac_digits = "";
        if pos < bytes.len() && bytes[pos] == b'.' {
            pos += 1;
            let start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                pos += 1;
            }
            frac_digits = &s[start..pos];
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(QuantityError::NoDigits(s.to_string()));
        }
        let suffix = &s[pos..];
        let (pow2, pow10): (u32, i64) = match suffix {
            "" => (0, 0),
            "n" => (0, -9),
            "u" => (0, -6),
            "m" => (0, -3),
            "k" => (0, 3),
            "M" => (0, 6),
            "G" => (0, 9),
            "T" => (0, 12),
            "P" => (0, 15),
            "E" => (0, 18),
            "Ki" => (10, 0),
            "Mi" => (20, 0),
            "Gi" => (30, 0),
            "Ti" => (40, 0),
            "Pi" => (50, 0),
            "Ei" => (60, 0),
            _ => (0, parse_exponent(s, suffix)?),
        };

        // Mantissa digits without leading zeros, most significant first.
        let mut digits: Vec<u8> = int_digits
            .bytes()
            .chain(frac_digits.bytes())
            .map(|b| b - b'0')
            .skip_while(|&d| d == 0)
            .collect();
        if digits.is_empty() {
            return Ok(ParsedQuantity::ZERO);
        }
        for _ in 0..pow2 / 10 {
            multiply(&mut digits, 1024);
        }
        // value = digits * 10^shift nano-units
        let frac_len = i64::try_from(frac_digits.len()).unwrap_or(i64::MAX);
        let shift = pow10.saturating_sub(frac_len).saturating_add(9);
        let len = i64::try_from(digits.len()).unwrap_or(i64::MAX);

        let nanos = if shift >= 0 {
            if len.saturating_add(shift) > 30 {
                MAX_NANOS
            } else {
                digits.resize(digits.len() + shift as usize, 0);
                to_i128(&digits).min(MAX_NANOS)
            }
        } else {
            let cut = len.saturating_add(shift); // digits kept in the integer part
            let (whole, frac) = if cut <= 0 {
                (&digits[..0], &digits[..])
            } else {
                digits.split_at(cut as usize)
            };
            if whole.len() > 30 {
                MAX_NANOS
            } else {
                let round_up = frac.iter().any(|&d| d != 0);
                (to_i128(whole) + i128::from(round_up)).min(MAX_NANOS)
            }
        };
        Ok(ParsedQuantity {
            nanos: if negative { -nanos } else { nanos },
        })
    }

    fn parse_exponent(input: &str, suffix: &str) -> Result<i64, QuantityError> {
        let unknown = || QuantityError::UnknownSuffix {
            input: input.to_string(),
            suffix: suffix.to_string(),
        };
        let rest = suffix
            .strip_prefix('e')
            .or_else(|| suffix.strip_prefix('E'))
            .ok_or_else(unknown)?;
        let unsigned = rest.strip_prefix(['+', '-']).unwrap_or(rest);
        if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unknown());
        }
        rest.parse::<i32>()
            .map(i64::from)
            .map_err(|_| QuantityError::ExponentRange(input.to_string()))
    }

    fn multiply(digits: &mut Vec<u8>, factor: u32) {
        let mut carry = 0u32;
        for d in digits.iter_mut().rev() {
            let v = u32::from(*d) * factor + carry;
            *d = (v % 10) as u8;
            carry = v / 10;
        }
        while carry > 0 {
            digits.insert(0, (carry % 10) as u8);
            carry /= 10;
        }
    }

    fn to_i128(digits: &[u8]) -> i128 {
        digits
            .iter()
            .fold(0i128, |acc, &d| acc * 10 + i128::from(d))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_like_apimachinery() {
            // (input, milli_value, value)
            let cases: &[(&str, i64, i64)] = &[
                ("0", 0, 0),
                ("1", 1000, 1),
                ("250m", 250, 1),
                ("1.5", 1500, 2),
                ("0.5", 500, 1),
                (".5", 500, 1),
                ("5.", 5000, 5),
                ("1.G", 1_000_000_000_000, 1_000_000_000),
                ("100n", 1, 1),
                ("100u", 1, 1),
                ("0.1m", 1, 1),
                ("1k", 1_000_000, 1000),
                ("1M", 1_000_000_000, 1_000_000),
                ("2G", 2_000_000_000_000, 2_000_000_000),
                ("1T", 1_000_000_000_000_000, 1_000_000_000_000),
                ("1Ki", 1_024_000, 1024),
                ("1Mi", 1_048_576_000, 1_048_576),
                ("1.5Gi", 1_610_612_736_000, 1_610_612_736),
                ("0.5Ki", 512_000, 512),
                ("128974848", 128_974_848_000, 128_974_848),
                ("129e6", 129_000_000_000, 129_000_000),
                ("1E3", 1_000_000, 1000),
                ("1e-3", 1, 1),
                ("12e+2", 1_200_000, 1200),
                ("1E", i64::MAX, 1_000_000_000_000_000_000),
                ("+3", 3000, 3),
                ("-3", -3000, -3),
                ("-1.5", -1500, -1),
                ("007", 7000, 7),
                (" 2 ", 2000, 2),
                ("1Ei", i64::MAX, 1_152_921_504_606_846_976),
                ("8Ei", i64::MAX, i64::MAX),
                ("1e30", i64::MAX, i64::MAX),
                ("1e-30", 1, 1),
                ("0.000000000000000000000000000000001", 1, 1),
            ];
            for &(input, milli, value) in cases {
                let q = parse_quantity(input).unwrap_or_else(|e| panic!("{input}: {e}"));
                assert_eq!(q.milli_value(), milli, "{input} milli");
                assert_eq!(q.value(), value, "{input} value");
            }
        }

        #[test]
        fn keeps_nano_precision() {
            let cases: &[(&str, i128)] = &[
                ("1n", 1),
                ("1.5n", 2),
                ("0.4n", 1),
                ("1u", 1000),
                ("1m", 1_000_000),
                ("1", 1_000_000_000),
                ("-0.4n", -1),
                ("0.000", 0),
            ];
            for &(input, nanos) in cases {
                assert_eq!(parse_quantity(input).unwrap().nanos(), nanos, "{input}");
            }
        }

        #[test]
        fn rejects_malformed() {
            let cases: &[(&str, QuantityError)] = &[
                ("", QuantityError::Empty),
                ("   ", QuantityError::Empty),
                ("Ki", QuantityError::NoDigits("Ki".into())),
                (".", QuantityError::NoDigits(".".into())),
                ("-", QuantityError::NoDigits("-".into())),
                (
                    "1K",
                    QuantityError::UnknownSuffix {
                        input: "1K".into(),
                        suffix: "K".into(),
                    },
                ),
                (
                    "1KiB",
                    QuantityError::UnknownSuffix {
                        input: "1KiB".into(),
                        suffix: "KiB".into(),
                    },
                ),
                (
                    "1e",
                    QuantityError::UnknownSuffix {
                        input: "1e".into(),
                        suffix: "e".into(),
                    },
                ),
                (
                    "1e+",
                    QuantityError::UnknownSuffix {
                        input: "1e+".into(),
                        suffix: "e+".into(),
                    },
                ),
                (
                    "1.2.3",
                    QuantityError::UnknownSuffix {
                        input: "1.2.3".into(),
                        suffix: ".3".into(),
                    },
                ),
                (
                    "1 Gi",
                    QuantityError::UnknownSuffix {
                        input: "1 Gi".into(),
                        suffix: " Gi".into(),
                    },
                ),
                (
                    "1e99999999999",
                    QuantityError::ExponentRange("1e99999999999".into()),
                ),
            ];
            for (input, want) in cases {
                assert_eq!(parse_quantity(input).unwrap_err(), *want, "{input:?}");
            }
        }

        #[test]
        fn huge_exponent_does_not_allocate() {
            assert_eq!(parse_quantity("1e2147483647").unwrap().value(), i64::MAX);
            assert_eq!(parse_quantity("1e-2147483648").unwrap().nanos(), 1);
        }

        #[test]
        fn arithmetic_is_exact_then_rounded() {
            let half = parse_quantity("0.5").unwrap();
            assert_eq!(half.saturating_add(half).value(), 1);
            let max = parse_quantity("8Ei").unwrap();
            assert_eq!(max.saturating_add(max).value(), i64::MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, PodSpec, PodStatus, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn list(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
        if pairs.is_empty() {
            return None;
        }
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect(),
        )
    }

    fn container(name: &str, requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        Container {
            name: name.to_string(),
            resources: Some(ResourceRequirements {
                requests: list(requests),
                limits: list(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sidecar(name: &str, requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        Container {
            restart_policy: Some("Always".into()),
            ..container(name, requests, limits)
        }
    }

    fn pod(uid: &str, containers: Vec<Container>, init: Vec<Container>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("pod-{uid}")),
                uid: Some(uid.to_string()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers,
                init_containers: if init.is_empty() { None } else { Some(init) },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn with_ports(mut c: Container, ports: &[(Option<&str>, Option<&str>, i32)]) -> Container {
        c.ports = Some(
            ports
                .iter()
                .map(|(ip, proto, hp)| ContainerPort {
                    container_port: 80,
                    host_ip: ip.map(str::to_string),
                    protocol: proto.map(str::to_string),
                    host_port: Some(*hp),
                    ..Default::default()
                })
                .collect(),
        );
        c
    }

    fn res(cpu: i64, mem: i64) -> Resources {
        Resources {
            cpu_millis: cpu,
            memory_bytes: mem,
            ephemeral_storage_bytes: 0,
        }
    }

    #[test]
    fn pod_requests_follow_the_sidecar_formula() {
        struct Case {
            name: &'static str,
            containers: Vec<Container>,
            init: Vec<Container>,
            overhead: &'static [(&'static str, &'static str)],
            want: Resources,
        }
        let cases = vec![
            Case {
                name: "no requests",
                containers: vec![container("a", &[], &[])],
                init: vec![],
                overhead: &[],
                want: res(0, 0),
            },
            Case {
                name: "sum of app containers",
                containers: vec![
                    container("a", &[("cpu", "250m"), ("memory", "64Mi")], &[]),
                    container("b", &[("cpu", "1"), ("memory", "1Gi")], &[]),
                ],
                init: vec![],
                overhead: &[],
                want: res(1250, 64 * 1024 * 1024 + 1024 * 1024 * 1024),
            },
            Case {
                name: "request defaults to limit",
                containers: vec![container("a", &[], &[("cpu", "500m"), ("memory", "1G")])],
                init: vec![],
                overhead: &[],
                want: res(500, 1_000_000_000),
            },
            Case {
                name: "explicit request wins over limit",
                containers: vec![container("a", &[("cpu", "100m")], &[("cpu", "2")])],
                init: vec![],
                overhead: &[],
                want: res(100, 0),
            },
            Case {
                name: "large init container dominates",
                containers: vec![container("a", &[("cpu", "1"), ("memory", "1Gi")], &[])],
                init: vec![container("i", &[("cpu", "2"), ("memory", "512Mi")], &[])],
                overhead: &[],
                want: res(2000, 1024 * 1024 * 1024),
            },
            Case {
                // KEP-753 example: sidecars add to the sum and to every later init step.
                name: "sidecars add to sum and later init steps",
                containers: vec![container("a", &[("cpu", "1")], &[])],
                init: vec![
                    container("i1", &[("cpu", "3")], &[]),
                    sidecar("s1", &[("cpu", "1")], &[]),
                    container("i2", &[("cpu", "2500m")], &[]),
                ],
                overhead: &[],
                // sum = 1 + 1 = 2; steps: 3, 1, 2.5 + 1 = 3.5 → 3.5
                want: res(3500, 0),
            },
            Case {
                name: "sidecar before everything",
                containers: vec![container("a", &[("memory", "100")], &[])],
                init: vec![sidecar("s", &[("memory", "50")], &[])],
                overhead: &[],
                want: res(0, 150),
            },
            Case {
                name: "overhead is added",
                containers: vec![container("a", &[("cpu", "1"), ("memory", "1Gi")], &[])],
                init: vec![],
                overhead: &[("cpu", "250m"), ("memory", "120Mi")],
                want: res(1250, 1024 * 1024 * 1024 + 120 * 1024 * 1024),
            },
            Case {
                name: "rounded up after summing",
                containers: vec![
                    container("a", &[("cpu", "0.5m")], &[]),
                    container("b", &[("cpu", "0.5m")], &[]),
                ],
                init: vec![],
                overhead: &[],
                want: res(1, 0),
            },
        ];
        for case in cases {
            let mut p = pod("u", case.containers, case.init);
            p.spec.as_mut().unwrap().overhead = list(case.overhead);
            assert_eq!(pod_requests(&p), case.want, "{}", case.name);
        }
    }

    #[test]
    fn pod_level_requests_replace_container_sum() {
        let mut p = pod(
            "u",
            vec![container("a", &[("cpu", "1"), ("memory", "1Gi")], &[])],
            vec![],
        );
        let spec = p.spec.as_mut().unwrap();
        spec.resources = Some(ResourceRequirements {
            requests: list(&[("cpu", "3")]),
            ..Default::default()
        });
        spec.overhead = list(&[("cpu", "100m")]);
        assert_eq!(pod_requests(&p), res(3100, 1024 * 1024 * 1024));
    }

    #[test]
    fn pod_memory_limit_cases() {
        let gi = 1024 * 1024 * 1024;
        struct Case {
            name: &'static str,
            containers: Vec<Container>,
            init: Vec<Container>,
            overhead: &'static [(&'static str, &'static str)],
            want: Option<i64>,
        }
        let cases = vec![
            Case {
                name: "all app containers limited",
                containers: vec![
                    container("a", &[], &[("memory", "1Gi")]),
                    container("b", &[], &[("memory", "512Mi")]),
                ],
                init: vec![],
                overhead: &[],
                want: Some(gi + gi / 2),
            },
            Case {
                name: "one app container unlimited",
                containers: vec![
                    container("a", &[], &[("memory", "1Gi")]),
                    container("b", &[("memory", "1Gi")], &[]),
                ],
                init: vec![],
                overhead: &[],
                want: None,
            },
            Case {
                name: "zero limit counts as none",
                containers: vec![container("a", &[], &[("memory", "0")])],
                init: vec![],
                overhead: &[],
                want: None,
            },
            Case {
                name: "larger init limit wins",
                containers: vec![container("a", &[], &[("memory", "1Gi")])],
                init: vec![container("i", &[], &[("memory", "2Gi")])],
                overhead: &[],
                want: Some(2 * gi),
            },
            Case {
                name: "unlimited plain init container unbounds the pod",
                containers: vec![container("a", &[], &[("memory", "1Gi")])],
                init: vec![container("i", &[], &[])],
                overhead: &[],
                want: None,
            },
            Case {
                name: "init step without a limit is covered by earlier sidecar",
                containers: vec![container("a", &[], &[("memory", "1Gi")])],
                init: vec![
                    sidecar("s", &[], &[("memory", "256Mi")]),
                    container("i", &[], &[]),
                ],
                overhead: &[],
                want: Some(gi + gi / 4),
            },
            Case {
                name: "overhead added",
                containers: vec![container("a", &[], &[("memory", "1Gi")])],
                init: vec![],
                overhead: &[("memory", "64Mi")],
                want: Some(gi + 64 * 1024 * 1024),
            },
        ];
        for case in cases {
            let mut p = pod("u", case.containers, case.init);
            p.spec.as_mut().unwrap().overhead = list(case.overhead);
            assert_eq!(pod_memory_limit(&p), case.want, "{}", case.name);
        }
    }

    #[test]
    fn pod_level_memory_limit_bounds_the_pod() {
        let mut p = pod("u", vec![container("a", &[], &[])], vec![]);
        p.spec.as_mut().unwrap().resources = Some(ResourceRequirements {
            limits: list(&[("memory", "2Gi")]),
            ..Default::default()
        });
        assert_eq!(pod_memory_limit(&p), Some(2 * 1024 * 1024 * 1024));
    }

    fn node(cpu: i64, mem: i64, pods: i64) -> NodeFacts {
        NodeFacts {
            allocatable_cpu_millis: cpu,
            allocatable_memory_bytes: mem,
            allocatable_pods: pods,
            allocatable_ephemeral_storage_bytes: 10 * 1024 * 1024 * 1024,
        }
    }

    fn reject(reason: &str, message: &str) -> Result<(), Rejection> {
        Err(Rejection::new(reason, message))
    }

    #[test]
    fn admit_resources() {
        let small = |uid: &str| {
            pod(
                uid,
                vec![container("c", &[("cpu", "500m"), ("memory", "1Gi")], &[])],
                vec![],
            )
        };
        let gi = 1024 * 1024 * 1024_i64;
        struct Case {
            name: &'static str,
            pod: Pod,
            running: Vec<Pod>,
            node: NodeFacts,
            want: Result<(), Rejection>,
        }
        let cases = vec![
            Case {
                name: "fits",
                pod: small("new"),
                running: vec![small("a")],
                node: node(2000, 4 * gi, 110),
                want: Ok(()),
            },
            Case {
                name: "exactly fits",
                pod: pod("new", vec![container("c", &[("cpu", "1500m")], &[])], vec![]),
                running: vec![small("a")],
                node: node(2000, 4 * gi, 110),
                want: Ok(()),
            },
            Case {
                name: "out of cpu",
                pod: pod("new", vec![container("c", &[("cpu", "2")], &[])], vec![]),
                running: vec![small("a")],
                node: node(2000, 4 * gi, 110),
                want: reject(
                    OUT_OF_CPU,
                    "Node didn't have enough resource: cpu, requested: 2000, used: 500, capacity: 2000",
                ),
            },
            Case {
                name: "out of memory",
                pod: pod("new", vec![container("c", &[("memory", "4Gi")], &[])], vec![]),
                running: vec![small("a")],
                node: node(2000, 4 * gi, 110),
                want: reject(
                    OUT_OF_MEMORY,
                    "Node didn't have enough resource: memory, requested: 4294967296, used: 1073741824, capacity: 4294967296",
                ),
            },
            Case {
                name: "out of ephemeral storage",
                pod: pod("new", vec![container("c", &[("ephemeral-storage", "11Gi")], &[])], vec![]),
                running: vec![],
                node: node(2000, 4 * gi, 110),
                want: reject(
                    OUT_OF_EPHEMERAL_STORAGE,
                    "Node didn't have enough resource: ephemeral-storage, requested: 11811160064, used: 0, capacity: 10737418240",
                ),
            },
            Case {
                name: "out of pods comes first",
                pod: pod("new", vec![container("c", &[("cpu", "100")], &[])], vec![]),
                running: vec![small("a"), small("b")],
                node: node(2000, 4 * gi, 2),
                want: reject(
                    OUT_OF_PODS,
                    "Node didn't have enough resource: pods, requested: 1, used: 2, capacity: 2",
                ),
            },
            Case {
                name: "cpu before memory",
                pod: pod("new", vec![container("c", &[("cpu", "3"), ("memory", "8Gi")], &[])], vec![]),
                running: vec![],
                node: node(2000, 4 * gi, 110),
                want: reject(
                    OUT_OF_CPU,
                    "Node didn't have enough resource: cpu, requested: 3000, used: 0, capacity: 2000",
                ),
            },
            Case {
                name: "best-effort pod fits an overcommitted node",
                pod: pod("new", vec![container("c", &[], &[])], vec![]),
                running: vec![pod("a", vec![container("c", &[("cpu", "3")], &[])], vec![])],
                node: node(2000, 4 * gi, 110),
                want: Ok(()),
            },
            Case {
                name: "terminal and same-uid pods are not counted",
                pod: pod("new", vec![container("c", &[("cpu", "2")], &[])], vec![]),
                running: vec![
                    Pod {
                        status: Some(PodStatus {
                            phase: Some("Succeeded".into()),
                            ..Default::default()
                        }),
                        ..small("done")
                    },
                    Pod {
                        status: Some(PodStatus {
                            phase: Some("Failed".into()),
                            ..Default::default()
                        }),
                        ..small("failed")
                    },
                    small("new"),
                ],
                node: node(2000, 4 * gi, 1),
                want: Ok(()),
            },
            Case {
                name: "unparseable quantity",
                pod: pod("new", vec![container("c", &[("cpu", "lots")], &[])], vec![]),
                running: vec![],
                node: node(2000, 4 * gi, 110),
                want: reject(
                    UNEXPECTED_ADMISSION_ERROR,
                    "container \"c\" cpu: quantity \"lots\" has no digits",
                ),
            },
        ];
        for case in cases {
            assert_eq!(
                admit(&case.pod, &case.running, &case.node),
                case.want,
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn admit_refuses_host_namespaces() {
        type Set = fn(&mut PodSpec);
        let cases: [(&str, Set, &str); 3] = [
            ("hostNetwork", |s| s.host_network = Some(true), "spec.hostNetwork is not supported: every pod on this node runs in its own virtual machine, which cannot share the host's network namespace; it gets its own network interface instead"),
            ("hostPID", |s| s.host_pid = Some(true), "spec.hostPID is not supported: every pod on this node runs in its own virtual machine, which cannot share the host's PID namespace; it can only see the processes inside its VM"),
            ("hostIPC", |s| s.host_ipc = Some(true), "spec.hostIPC is not supported: every pod on this node runs in its own virtual machine, which cannot share the host's IPC namespace; its shared memory and semaphores stay inside its VM"),
        ];
        for (name, set, message) in cases {
            let mut p = pod("new", vec![container("c", &[], &[])], vec![]);
            set(p.spec.as_mut().unwrap());
            assert_eq!(
                admit(&p, &[], &node(1000, 1 << 30, 10)),
                reject(POD_SPEC_NOT_SUPPORTED, message),
                "{name}"
            );
        }
        // Explicit false is fine.
        let mut p = pod("new", vec![container("c", &[], &[])], vec![]);
        p.spec.as_mut().unwrap().host_network = Some(false);
        assert_eq!(admit(&p, &[], &node(1000, 1 << 30, 10)), Ok(()));
    }

    #[test]
    fn admit_host_ports() {
        type Port = (Option<&'static str>, Option<&'static str>, i32);
        // (name, existing ports, wanted ports, conflict?) — cases from the scheduler's
        // NodePorts tests.
        let cases: &[(&str, &[Port], &[Port], bool)] = &[
            ("nothing in use", &[], &[(None, None, 8080)], false),
            (
                "same port",
                &[(None, None, 8080)],
                &[(None, None, 8080)],
                true,
            ),
            (
                "other port",
                &[(None, None, 8080)],
                &[(None, None, 8081)],
                false,
            ),
            (
                "other protocol",
                &[(None, Some("UDP"), 8080)],
                &[(None, Some("TCP"), 8080)],
                false,
            ),
            (
                "empty protocol is TCP",
                &[(None, Some("TCP"), 8080)],
                &[(None, None, 8080)],
                true,
            ),
            (
                "other IPs",
                &[(Some("127.0.0.1"), None, 8080)],
                &[(Some("127.0.0.2"), None, 8080)],
                false,
            ),
            (
                "same IP",
                &[(Some("127.0.0.1"), None, 8080)],
                &[(Some("127.0.0.1"), None, 8080)],
                true,
            ),
            (
                "want all IPs",
                &[(Some("127.0.0.1"), None, 8080)],
                &[(Some("0.0.0.0"), None, 8080)],
                true,
            ),
            (
                "want all IPs, empty",
                &[(Some("127.0.0.1"), None, 8080)],
                &[(None, None, 8080)],
                true,
            ),
            (
                "existing all IPs",
                &[(Some("0.0.0.0"), None, 8080)],
                &[(Some("127.0.0.1"), None, 8080)],
                true,
            ),
            (
                "all IPs other protocol",
                &[(Some("0.0.0.0"), Some("UDP"), 8080)],
                &[(Some("127.0.0.1"), Some("TCP"), 8080)],
                false,
            ),
            (
                "zero host port holds nothing",
                &[(None, None, 0)],
                &[(None, None, 0)],
                false,
            ),
        ];
        for &(name, existing, wanted, conflict) in cases {
            let other = pod(
                "a",
                vec![with_ports(container("c", &[], &[]), existing)],
                vec![],
            );
            let new = pod(
                "new",
                vec![with_ports(container("c", &[], &[]), wanted)],
                vec![],
            );
            let want = if conflict {
                reject(NODE_PORTS, NODE_PORTS_MESSAGE)
            } else {
                Ok(())
            };
            assert_eq!(
                admit(&new, &[other], &node(1000, 1 << 30, 10)),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn sidecar_host_ports_are_held() {
        let other = pod(
            "a",
            vec![container("c", &[], &[])],
            vec![with_ports(sidecar("s", &[], &[]), &[(None, None, 9000)])],
        );
        let plain_init = pod(
            "b",
            vec![container("c", &[], &[])],
            vec![with_ports(container("i", &[], &[]), &[(None, None, 9001)])],
        );
        let new = pod(
            "new",
            vec![with_ports(container("c", &[], &[]), &[(None, None, 9000)])],
            vec![],
        );
        let n = node(1000, 1 << 30, 10);
        assert_eq!(
            admit(&new, std::slice::from_ref(&other), &n),
            reject(NODE_PORTS, NODE_PORTS_MESSAGE)
        );
        let new = pod(
            "new",
            vec![with_ports(container("c", &[], &[]), &[(None, None, 9001)])],
            vec![],
        );
        assert_eq!(admit(&new, &[plain_init], &n), Ok(()));
    }

    #[test]
    fn rejection_displays_reason_and_message() {
        let r = Rejection::new(OUT_OF_PODS, "x");
        assert_eq!(r.to_string(), "OutOfpods: x");
    }
}
