//! kubelet's prober: the per-probe state machine and the handlers that run one probe.
//!
//! **State.** [`ProbeState`] is one probe (liveness, readiness or startup) of one container
//! instance, with upstream's semantics (`pkg/kubelet/prober/worker.go`): nothing runs before
//! `initialDelaySeconds` after the container started; then one probe per `periodSeconds`; a
//! result is published only after `successThreshold` successes or `failureThreshold` failures in
//! a row; an errored probe ([`ProbeResult::Unknown`]) is thrown away. Readiness starts as
//! Failure, liveness as Success, startup as Unknown. A liveness failure, and any startup result,
//! puts the probe on hold until the next container instance (a new [`ProbeState`]).
//! [`ContainerProbes`] holds the three of one container and applies the startup gate: liveness
//! and readiness do not run until the startup probe has succeeded. Time is always passed in.
//!
//! **Handlers.** [`run`] executes one probe: exec through [`Exec`] (CRI `ExecSync`), httpGet
//! (HTTP/1.1 over a plain socket; HTTPS without certificate verification, as kubelet does;
//! redirects followed only to the same host), tcpSocket (connect) and grpc (`grpc.health.v1`
//! `Check` over tonic). The [`ProbeOutcome`] carries kubelet's wording for the `Unhealthy` and
//! `ProbeWarning` events.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, ExecAction, GRPCAction, HTTPGetAction, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::TcpStream;

use crate::cri::{CriClient, CriClientError};
use grpc::grpc_check;
pub(crate) use http::{http_get, HttpRequest, Scheme, HTTP_TO_HTTPS};

/// The Kubernetes minor version kubelet's user agents carry (`kube-probe/1.33`).
pub(crate) const KUBE_VERSION: &str = "1.33";

/// How much of a response body or of exec output kubelet keeps (10 KiB).
pub(crate) const MAX_OUTPUT: usize = 10 * 1024;

/// How many times an errored probe is retried before its result is reported (upstream's
/// `maxProbeRetries`).
const MAX_RETRIES: usize = 3;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// `livenessProbe`: failure restarts the container.
    Liveness,
    /// `readinessProbe`: gates the container's `ready`.
    Readiness,
    /// `startupProbe`: gates the other two; failure restarts the container.
    Startup,
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        })
    }
}

/// A probe's result, as upstream's `results.Result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// The probe passed.
    Success,
    /// The probe failed.
    Failure,
    /// Nothing is known (startup's initial value; an errored probe).
    Unknown,
}

/// A probe's timing and thresholds with upstream's defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSpec {
    /// `initialDelaySeconds` (default 0), counted from the container's start.
    pub initial_delay: Duration,
    /// `periodSeconds` (default 10, at least 1).
    pub period: Duration,
    /// `timeoutSeconds` (default 1, at least 1).
    pub timeout: Duration,
    /// `successThreshold` (default 1; always 1 for liveness and startup).
    pub success_threshold: u32,
    /// `failureThreshold` (default 3, at least 1).
    pub failure_threshold: u32,
}

impl ProbeSpec {
    /// The spec of `probe` used as a `kind` probe.
    pub fn new(kind: ProbeKind, probe: &Probe) -> Self {
        let secs = |v: Option<i32>, default: i32, min: i32| {
            Duration::from_secs(u64::try_from(v.unwrap_or(default).max(min)).unwrap_or(0))
        };
        let count =
            |v: Option<i32>, default: i32| u32::try_from(v.unwrap_or(default).max(1)).unwrap_or(1);
        ProbeSpec {
            initial_delay: secs(probe.initial_delay_seconds, 0, 0),
            period: secs(probe.period_seconds, 10, 1),
            timeout: secs(probe.timeout_seconds, 1, 1),
            success_threshold: match kind {
                ProbeKind::Readiness => count(probe.success_threshold, 1),
                // Validation requires 1; kubelet never counts more.
                ProbeKind::Liveness | ProbeKind::Startup => 1,
            },
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// A change of a probe's published result that the worker must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Readiness flipped: the container's `ready` (and the pod's conditions) change.
    Ready(bool),
    /// The startup probe succeeded: `started` becomes true; liveness and readiness begin.
    Started,
    /// Liveness or startup failed `failureThreshold` times: kill the container (restarted if the
    /// pod's restart policy allows), as kubelet does.
    Kill(ProbeKind),
}

/// One probe of one container instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeState {
    kind: ProbeKind,
    spec: ProbeSpec,
    result: ProbeResult,
    last: Option<ProbeResult>,
    run: u32,
    on_hold: bool,
    next_due: Instant,
}

impl ProbeState {
    /// A fresh probe of a container that started at `container_started`.
    pub fn new(kind: ProbeKind, spec: ProbeSpec, container_started: Instant) -> Self {
        ProbeState {
            kind,
            spec,
            result: Self::initial_result(kind),
            last: None,
            run: 0,
            on_hold: false,
            next_due: container_started + spec.initial_delay,
        }
    }

    /// The result a probe reports before it has run (upstream's `initialValue`).
    pub fn initial_result(kind: ProbeKind) -> ProbeResult {
        match kind {
            ProbeKind::Readiness => ProbeResult::Failure,
            ProbeKind::Liveness => ProbeResult::Success,
            ProbeKind::Startup => ProbeResult::Unknown,
        }
    }

    /// Which probe this is.
    pub fn kind(&self) -> ProbeKind {
        self.kind
    }

    /// Its timing and thresholds.
    pub fn spec(&self) -> &ProbeSpec {
        &self.spec
    }

    /// The published result.
    pub fn result(&self) -> ProbeResult {
        self.result
    }

    /// Whether it stopped probing until the next container instance.
    pub fn on_hold(&self) -> bool {
        self.on_hold
    }

    /// When it next runs (`None` while on hold).
    pub fn next_due(&self) -> Option<Instant> {
        (!self.on_hold).then_some(self.next_due)
    }

    /// Whether it should run at `now` (ignoring the startup gate; see [`ContainerProbes::due`]).
    pub fn due(&self, now: Instant) -> bool {
        !self.on_hold && now >= self.next_due
    }

    /// Records the result of a probe that started at `now`; the next one is due a period later
    /// (kubelet's ticker measures the period start to start). Returns the transition when the
    /// published result changed.
    pub fn record(&mut self, result: ProbeResult, now: Instant) -> Option<Transition> {
        if self.on_hold {
            return None;
        }
        self.next_due = now + self.spec.period;
        if result == ProbeResult::Unknown {
            // A probe error: upstream throws the result away.
            return None;
        }
        if self.last == Some(result) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(result);
            self.run = 1;
        }
        let threshold = match result {
            ProbeResult::Failure => self.spec.failure_threshold,
            _ => self.spec.success_threshold,
        };
        if self.run < threshold {
            return None;
        }
        let before = std::mem::replace(&mut self.result, result);
        if (self.kind == ProbeKind::Liveness && result == ProbeResult::Failure)
            || self.kind == ProbeKind::Startup
        {
            // The container is restarted (or has started): nothing more to probe until the
            // next instance, which also gets its full failureThreshold.
            self.on_hold = true;
            self.run = 0;
        }
        if before == result {
            return None;
        }
        match (self.kind, result) {
            (ProbeKind::Readiness, r) => Some(Transition::Ready(r == ProbeResult::Success)),
            (ProbeKind::Startup, ProbeResult::Success) => Some(Transition::Started),
            (kind, ProbeResult::Failure) => Some(Transition::Kill(kind)),
            _ => None,
        }
    }

    /// The pod is being deleted: liveness and startup report Success and stop (a quiet
    /// shutdown, as upstream); readiness keeps probing.
    pub fn terminating(&mut self) {
        if self.kind != ProbeKind::Readiness {
            self.result = ProbeResult::Success;
            self.on_hold = true;
        }
    }
}

/// The probes of one container instance (a new instance gets a new value: results and counters
/// start over, and a probe on hold resumes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerProbes {
    container_id: String,
    startup: Option<ProbeState>,
    liveness: Option<ProbeState>,
    readiness: Option<ProbeState>,
}

impl ContainerProbes {
    /// The probes `container` declares, for instance `container_id` that started at `started_at`.
    pub fn new(
        container: &Container,
        container_id: impl Into<String>,
        started_at: Instant,
    ) -> Self {
        let state = |kind, p: &Option<Probe>| {
            p.as_ref()
                .map(|p| ProbeState::new(kind, ProbeSpec::new(kind, p), started_at))
        };
        ContainerProbes {
            container_id: container_id.into(),
            startup: state(ProbeKind::Startup, &container.startup_probe),
            liveness: state(ProbeKind::Liveness, &container.liveness_probe),
            readiness: state(ProbeKind::Readiness, &container.readiness_probe),
        }
    }

    /// The container instance these probes belong to.
    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    /// One probe's state, if the container declares it.
    pub fn get(&self, kind: ProbeKind) -> Option<&ProbeState> {
        match kind {
            ProbeKind::Startup => self.startup.as_ref(),
            ProbeKind::Liveness => self.liveness.as_ref(),
            ProbeKind::Readiness => self.readiness.as_ref(),
        }
    }

    fn get_mut(&mut self, kind: ProbeKind) -> Option<&mut ProbeState> {
        match kind {
            ProbeKind::Startup => self.startup.as_mut(),
            ProbeKind::Liveness => self.liveness.as_mut(),
            ProbeKind::Readiness => self.readiness.as_mut(),
        }
    }

    /// Whether the startup probe passed (`None`: there is none, so the container counts as
    /// started once running). The value for `Observed.started`.
    pub fn started(&self) -> Option<bool> {
        self.startup
            .as_ref()
            .map(|s| s.result() == ProbeResult::Success)
    }

    /// Whether the readiness probe passes (`None`: there is none). The value for
    /// `Observed.readiness`.
    pub fn ready(&self) -> Option<bool> {
        self.readiness
            .as_ref()
            .map(|s| s.result() == ProbeResult::Success)
    }

    /// The probes to run at `now`: only startup until it succeeded, then liveness and readiness.
    pub fn due(&self, now: Instant) -> Vec<ProbeKind> {
        self.gated()
            .filter(|s| s.due(now))
            .map(ProbeState::kind)
            .collect()
    }

    /// The earliest instant a probe is due (to sleep until), if any will run.
    pub fn next_due(&self) -> Option<Instant> {
        self.gated().filter_map(ProbeState::next_due).min()
    }

    fn gated(&self) -> impl Iterator<Item = &ProbeState> {
        let started = self.started().unwrap_or(true);
        let (a, b) = if started {
            (self.liveness.as_ref(), self.readiness.as_ref())
        } else {
            (self.startup.as_ref(), None)
        };
        a.into_iter().chain(b)
    }

    /// Records one probe's result (see [`ProbeState::record`]).
    pub fn record(
        &mut self,
        kind: ProbeKind,
        result: ProbeResult,
        now: Instant,
    ) -> Option<Transition> {
        self.get_mut(kind)?.record(result, now)
    }

    /// The pod is being deleted (see [`ProbeState::terminating`]).
    pub fn terminating(&mut self) {
        for s in [&mut self.startup, &mut self.liveness, &mut self.readiness]
            .into_iter()
            .flatten()
        {
            s.terminating();
        }
    }
}

/// The `Killing` event's message when a probe failure kills a container (kubelet's
/// `computePodActions`).
pub fn kill_message(container: &str, kind: ProbeKind, will_restart: bool) -> String {
    let probe = match kind {
        ProbeKind::Liveness => "liveness",
        ProbeKind::Startup => "startup",
        ProbeKind::Readiness => "readiness",
    };
    let mut msg = format!("Container {container} failed {probe} probe");
    if will_restart {
        msg.push_str(", will be restarted");
    }
    msg
}

/// The grace period for a kill caused by `probe`: its own `terminationGracePeriodSeconds` when
/// set, else the pod's.
pub fn kill_grace_seconds(probe: &Probe, pod_grace_seconds: i64) -> i64 {
    probe
        .termination_grace_period_seconds
        .unwrap_or(pod_grace_seconds)
}

/// What a probe runs against.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The CRI container id (for exec).
    pub container_id: &'a str,
    /// The container's spec (its `ports` resolve named ports; its name is used in messages).
    pub container: &'a Container,
    /// The pod's primary IP: the default host of httpGet and tcpSocket, the host of grpc.
    pub pod_ip: &'a str,
    /// The pod as kubelet names it in messages, `name_namespace(uid)` (see
    /// [`crate::hooks::pod_label`]).
    pub pod: &'a str,
}

/// The action of a probe.
#[derive(Debug, Clone, Copy)]
pub enum ProbeHandler<'a> {
    /// Run a command in the container.
    Exec(&'a ExecAction),
    /// HTTP GET.
    HttpGet(&'a HTTPGetAction),
    /// Open a TCP connection.
    TcpSocket(&'a TCPSocketAction),
    /// gRPC health check.
    Grpc(&'a GRPCAction),
}

impl<'a> ProbeHandler<'a> {
    /// The action `probe` declares (validation ensures exactly one).
    pub fn of(probe: &'a Probe) -> Option<Self> {
        if let Some(a) = &probe.exec {
            Some(ProbeHandler::Exec(a))
        } else if let Some(a) = &probe.http_get {
            Some(ProbeHandler::HttpGet(a))
        } else if let Some(a) = &probe.tcp_socket {
            Some(ProbeHandler::TcpSocket(a))
        } else {
            probe.grpc.as_ref().map(ProbeHandler::Grpc)
        }
    }
}

/// The outcome of one probe run, with kubelet's output text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Passed.
    Success,
    /// Passed with a warning (an HTTP redirect that was not followed).
    Warning(String),
    /// Failed, with the probe's output.
    Failure(String),
    /// The probe could not run (bad port, runtime error): the result is thrown away.
    Unknown(String),
}

/// An event kubelet records for a probe outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeEvent {
    /// `Unhealthy` or `ProbeWarning` (Warning events on the container).
    pub reason: &'static str,
    /// e.g. `Liveness probe failed: HTTP probe failed with statuscode: 500`.
    pub message: String,
}

impl ProbeOutcome {
    /// The result to record in the state machine.
    pub fn result(&self) -> ProbeResult {
        match self {
            ProbeOutcome::Success | ProbeOutcome::Warning(_) => ProbeResult::Success,
            ProbeOutcome::Failure(_) => ProbeResult::Failure,
            ProbeOutcome::Unknown(_) => ProbeResult::Unknown,
        }
    }

    /// The event kubelet records for this outcome of a `kind` probe (none on success).
    pub fn event(&self, kind: ProbeKind) -> Option<ProbeEvent> {
        let (reason, message) = match self {
            ProbeOutcome::Success => return None,
            ProbeOutcome::Warning(o) => ("ProbeWarning", format!("{kind} probe warning: {o}")),
            ProbeOutcome::Failure(o) => ("Unhealthy", format!("{kind} probe failed: {o}")),
            ProbeOutcome::Unknown(e) => (
                "Unhealthy",
                format!("{kind} probe errored and resulted in unknown state: {e}"),
            ),
        };
        Some(ProbeEvent { reason, message })
    }
}

/// Why running a command in a container failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// The command did not finish within its timeout.
    #[error("timed out")]
    Timeout,
    /// The runtime could not run it.
    #[error("{0}")]
    Failed(String),
}

/// What running a command returns: (exit code, stdout, stderr).
pub type ExecResult = Result<(i32, Vec<u8>, Vec<u8>), ExecError>;

/// Runs a command in a container, as CRI `ExecSync`.
pub trait Exec {
    /// Runs `cmd` in `container_id`, killing it after `timeout_secs` (0 = no limit).
    fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout_secs: i64,
    ) -> impl Future<Output = ExecResult> + Send;
}

impl Exec for CriClient {
    async fn exec(&self, container_id: &str, cmd: Vec<String>, timeout_secs: i64) -> ExecResult {
        self.exec_sync(container_id, cmd, timeout_secs)
            .await
            .map_err(|e| match &e {
                CriClientError::Status { status, .. }
                    if status.code() == tonic::Code::DeadlineExceeded
                        || (status.code() == tonic::Code::Cancelled
                            && status.message().contains("Timeout expired")) =>
                {
                    ExecError::Timeout
                }
                _ => ExecError::Failed(e.to_string()),
            })
    }
}

/// Runs one probe within `timeout`, retrying an errored probe as kubelet does.
pub async fn run(
    handler: &ProbeHandler<'_>,
    target: &Target<'_>,
    exec: &impl Exec,
    timeout: Duration,
) -> ProbeOutcome {
    let mut outcome = ProbeOutcome::Unknown("probe not run".into());
    for _ in 0..MAX_RETRIES {
        outcome = run_once(handler, target, exec, timeout).await;
        if !matches!(outcome, ProbeOutcome::Unknown(_)) {
            break;
        }
    }
    outcome
}

async fn run_once(
    handler: &ProbeHandler<'_>,
    target: &Target<'_>,
    exec: &impl Exec,
    timeout: Duration,
) -> ProbeOutcome {
    match handler {
        ProbeHandler::Exec(a) => {
            let cmd = a.command.clone().unwrap_or_default();
            match exec_command(exec, target.container_id, cmd, timeout).await {
                Ok(o) if o.code == 0 => ProbeOutcome::Success,
                Ok(o) => ProbeOutcome::Failure(o.combined()),
                Err(CommandError::TimedOut(msg)) => ProbeOutcome::Failure(msg),
                Err(CommandError::Failed(e)) => ProbeOutcome::Unknown(e),
            }
        }
        ProbeHandler::HttpGet(a) => {
            let req = match HttpRequest::new(a, target.container, target.pod_ip, "probe") {
                Ok(r) => r,
                Err(e) => return ProbeOutcome::Unknown(e),
            };
            let deadline = tokio::time::Instant::now() + timeout;
            match http_get(&req, Some(deadline)).await {
                Err(e) => ProbeOutcome::Failure(e),
                Ok(r) if (200..300).contains(&r.status) => ProbeOutcome::Success,
                Ok(r) if (300..400).contains(&r.status) => ProbeOutcome::Warning(format!(
                    "Probe terminated redirects, Response body: {}",
                    String::from_utf8_lossy(&r.body)
                )),
                Ok(r) => ProbeOutcome::Failure(format!(
                    "HTTP probe failed with statuscode: {}",
                    r.status
                )),
            }
        }
        ProbeHandler::TcpSocket(a) => {
            let host = a
                .host
                .as_deref()
                .filter(|h| !h.is_empty())
                .unwrap_or(target.pod_ip);
            if host.is_empty() {
                return ProbeOutcome::Unknown("the pod has no IP yet".into());
            }
            let port = match resolve_port(&a.port, target.container) {
                Ok(p) => p,
                Err(e) => return ProbeOutcome::Unknown(e),
            };
            let deadline = tokio::time::Instant::now() + timeout;
            match dial(host, port, Some(deadline)).await {
                Ok(_) => ProbeOutcome::Success,
                Err(e) => ProbeOutcome::Failure(e),
            }
        }
        ProbeHandler::Grpc(a) => {
            if target.pod_ip.is_empty() {
                return ProbeOutcome::Unknown("the pod has no IP yet".into());
            }
            let Some(port) = u16::try_from(a.port).ok().filter(|p| *p > 0) else {
                return ProbeOutcome::Unknown(format!("invalid port number: {}", a.port));
            };
            let addr = join_host_port(target.pod_ip, port);
            grpc_check(&addr, a.service.as_deref().unwrap_or_default(), timeout).await
        }
    }
}

/// Why a command could not report an exit code.
pub(crate) enum CommandError {
    /// It ran out of time; kubelet's message (`command "sleep 10" timed out`).
    TimedOut(String),
    /// The runtime failed.
    Failed(String),
}

/// What a command left behind.
pub(crate) struct ExecOutput {
    pub(crate) code: i32,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
}

impl ExecOutput {
    /// stdout then stderr, capped at [`MAX_OUTPUT`] (kubelet's `RunInContainer`).
    pub(crate) fn combined(&self) -> String {
        let mut out = self.stdout.clone();
        out.extend_from_slice(&self.stderr);
        out.truncate(MAX_OUTPUT);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Runs `cmd` with `timeout` (zero = none).
pub(crate) async fn exec_command(
    exec: &impl Exec,
    container_id: &str,
    cmd: Vec<String>,
    timeout: Duration,
) -> Result<ExecOutput, CommandError> {
    let timed_out = || {
        CommandError::TimedOut(format!(
            "command {} timed out",
            crate::env::go_quote(&cmd.join(" "))
        ))
    };
    let secs = if timeout.is_zero() {
        0
    } else {
        i64::try_from(timeout.as_secs_f64().ceil() as u64).unwrap_or(i64::MAX)
    };
    let call = exec.exec(container_id, cmd.clone(), secs);
    let r = if timeout.is_zero() {
        call.await
    } else {
        // The runtime enforces the timeout; this guards against one that does not.
        match tokio::time::timeout(timeout + Duration::from_secs(1), call).await {
            Ok(r) => r,
            Err(_) => return Err(timed_out()),
        }
    };
    match r {
        Ok((code, stdout, stderr)) => Ok(ExecOutput {
            code,
            stdout,
            stderr,
        }),
        Err(ExecError::Timeout) => Err(timed_out()),
        Err(ExecError::Failed(e)) => Err(CommandError::Failed(e)),
    }
}

/// A port by number, or by the name of one of the container's ports (kubelet's
/// `ResolveContainerPort`).
pub(crate) fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let n = match port {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(name) => {
            let named = container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()));
            match named {
                Some(p) => i64::from(p.container_port),
                None => name.parse::<i64>().map_err(|_| {
                    format!(
                        "strconv.Atoi: parsing {}: invalid syntax",
                        crate::env::go_quote(name)
                    )
                })?,
            }
        }
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {n}"))
}

/// `host:port`, IPv6 in brackets (Go's `net.JoinHostPort`).
pub(crate) fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// An OS error as Go prints it (`connection refused`).
fn sys_error(e: &io::Error) -> String {
    let s = e.to_string();
    let s = s.split(" (os error").next().unwrap_or_default();
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s.to_string(),
    }
}

/// Connects to `host:port` before `deadline`, with Go's error wording (`dial tcp
/// 10.0.0.5:8080: connect: connection refused`, `dial tcp 10.0.0.5:8080: i/o timeout`).
pub(crate) async fn dial(
    host: &str,
    port: u16,
    deadline: Option<tokio::time::Instant>,
) -> Result<TcpStream, String> {
    let hp = join_host_port(host, port);
    let connect = async {
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map(Iterator::collect)
                .unwrap_or_default(),
        };
        let mut err = format!("dial tcp: lookup {host}: no such host");
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(s) => return Ok(s),
                Err(e) => err = format!("dial tcp {a}: connect: {}", sys_error(&e)),
            }
        }
        Err(err)
    };
    match deadline {
        Some(d) => tokio::time::timeout_at(d, connect)
            .await
            .unwrap_or_else(|_| Err(format!("dial tcp {hp}: i/o timeout"))),
        None => connect.await,
    }
}

/// A duration as Go prints it (`1s`, `500ms`, `1m30s`).
pub(crate) fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let frac = d.subsec_millis();
    let s = if frac == 0 {
        format!("{}s", secs % 60)
    } else {
        let v = format!("{}.{:03}", secs % 60, frac);
        format!("{}s", v.trim_end_matches('0'))
    };
    match (secs / 3600, (secs / 60) % 60) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
}

/// kubelet's HTTP client for httpGet probes and hooks: one GET over HTTP/1.1, HTTPS without
/// certificate verification, same-host redirects, Go's error wording.
pub(crate) mod http {
    use std::fmt;
    use std::io;
    use std::pin::Pin;
    use std::sync::{Arc, OnceLock};
    use std::task::{Context, Poll};

    use k8s_openapi::api::core::v1::{Container, HTTPGetAction};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

    use super::{dial, join_host_port, resolve_port, sys_error, KUBE_VERSION, MAX_OUTPUT};

    /// Upper bound on a response's status line and headers.
    const MAX_HEAD: usize = 64 * 1024;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Scheme {
        Http,
        Https,
    }

    /// An absolute http(s) URL as the prober builds it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct HttpUrl {
        pub(crate) scheme: Scheme,
        pub(crate) host: String,
        pub(crate) port: u16,
        /// Path and query as written (may be empty).
        pub(crate) path: String,
    }

    impl fmt::Display for HttpUrl {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let scheme = match self.scheme {
                Scheme::Http => "http",
                Scheme::Https => "https",
            };
            let sep = if self.path.is_empty() || self.path.starts_with('/') {
                ""
            } else {
                "/"
            };
            write!(
                f,
                "{scheme}://{}{sep}{}",
                join_host_port(&self.host, self.port),
                self.path
            )
        }
    }

    impl HttpUrl {
        pub(super) fn request_target(&self) -> String {
            if self.path.starts_with('/') {
                self.path.clone()
            } else {
                format!("/{}", self.path)
            }
        }

        /// The URL a `Location` header points to, relative to this one.
        pub(super) fn join(&self, loc: &str) -> Result<HttpUrl, String> {
            let loc = loc.split('#').next().unwrap_or_default();
            let lower = loc.to_ascii_lowercase();
            let (scheme, rest) = if lower.starts_with("http://") {
                (Scheme::Http, &loc[7..])
            } else if lower.starts_with("https://") {
                (Scheme::Https, &loc[8..])
            } else if let Some(rest) = loc.strip_prefix("//") {
                (self.scheme, rest)
            } else if loc.starts_with('/') {
                return Ok(HttpUrl {
                    path: loc.to_string(),
                    ..self.clone()
                });
            } else if loc.contains("://") {
                return Err(format!(
                    "unsupported protocol scheme in {}",
                    crate::env::go_quote(loc)
                ));
            } else {
                let base = self.request_target();
                let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
                return Ok(HttpUrl {
                    path: format!("{dir}{loc}"),
                    ..self.clone()
                });
            };
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let (authority, path) = rest.split_at(end);
            let authority = authority.rsplit('@').next().unwrap_or_default();
            let default_port = if scheme == Scheme::Https { 443 } else { 80 };
            let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
                let (h, tail) = v6.split_once(']').ok_or("invalid IPv6 host")?;
                (h, tail.strip_prefix(':'))
            } else {
                match authority.rsplit_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (authority, None),
                }
            };
            let port = match port.filter(|p| !p.is_empty()) {
                Some(p) => p
                    .parse::<u16>()
                    .map_err(|_| format!("invalid port {}", crate::env::go_quote(p)))?,
                None => default_port,
            };
            Ok(HttpUrl {
                scheme,
                host: host.to_string(),
                port,
                path: path.to_string(),
            })
        }
    }

    /// A GET request built from an `HTTPGetAction` (kubelet's `NewRequestForHTTPGetAction`).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct HttpRequest {
        pub(crate) url: HttpUrl,
        /// A `Host` header from `httpHeaders`, which overrides the URL's authority.
        pub(crate) host_header: Option<String>,
        /// Headers in order, names canonical, `User-Agent` and `Accept` defaulted.
        pub(crate) headers: Vec<(String, String)>,
    }

    /// Go's `textproto.CanonicalMIMEHeaderKey`.
    pub(super) fn canonical_header(name: &str) -> String {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid {
            return name.to_string();
        }
        let mut upper = true;
        name.chars()
            .map(|c| {
                let c2 = if upper {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                };
                upper = c == '-';
                c2
            })
            .collect()
    }

    impl HttpRequest {
        /// The request `action` describes for `container`, host defaulting to `pod_ip`; `purpose`
        /// names the user agent (`probe` → `kube-probe/1.33`, `lifecycle` → `kube-lifecycle/1.33`).
        /// An error (unresolvable port) makes the probe error.
        pub(crate) fn new(
            action: &HTTPGetAction,
            container: &Container,
            pod_ip: &str,
            purpose: &str,
        ) -> Result<Self, String> {
            let scheme = match action
                .scheme
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None | Some("") | Some("http") => Scheme::Http,
                Some("https") => Scheme::Https,
                Some(other) => {
                    return Err(format!(
                        "unsupported protocol scheme {}",
                        crate::env::go_quote(other)
                    ))
                }
            };
            let host = action
                .host
                .as_deref()
                .filter(|h| !h.is_empty())
                .unwrap_or(pod_ip);
            if host.is_empty() {
                return Err("the pod has no IP yet".into());
            }
            let port = resolve_port(&action.port, container)?;
            let mut headers: Vec<(String, String)> = action
                .http_headers
                .iter()
                .flatten()
                .map(|h| (canonical_header(&h.name), h.value.clone()))
                .collect();
            let host_header = headers
                .iter()
                .find(|(n, _)| n == "Host")
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty());
            headers.retain(|(n, _)| n != "Host");
            if !headers.iter().any(|(n, _)| n == "User-Agent") {
                headers.insert(
                    0,
                    (
                        "User-Agent".into(),
                        format!("kube-{purpose}/{KUBE_VERSION}"),
                    ),
                );
            }
            if !headers.iter().any(|(n, _)| n == "Accept") {
                headers.push(("Accept".into(), "*/*".into()));
            } else if headers
                .iter()
                .find(|(n, _)| n == "Accept")
                .is_some_and(|(_, v)| v.is_empty())
            {
                headers.retain(|(n, _)| n != "Accept");
            }
            // An explicitly empty User-Agent is not sent (as Go's transport).
            headers.retain(|(n, v)| !(n == "User-Agent" && v.is_empty()));
            Ok(HttpRequest {
                url: HttpUrl {
                    scheme,
                    host: host.to_string(),
                    port,
                    path: action.path.clone().unwrap_or_default(),
                },
                host_header,
                headers,
            })
        }

        pub(super) fn render(&self, url: &HttpUrl, host_header: Option<&str>) -> Vec<u8> {
            let authority = join_host_port(&url.host, url.port);
            let mut s = format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\n",
                url.request_target(),
                host_header.unwrap_or(&authority)
            );
            for (n, v) in &self.headers {
                s.push_str(&format!("{n}: {v}\r\n"));
            }
            s.push_str("Connection: close\r\n\r\n");
            s.into_bytes()
        }
    }

    /// A response: its status and, for a 3xx, the start of its body.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct HttpResponse {
        pub(crate) status: u16,
        pub(crate) location: Option<String>,
        pub(crate) body: Vec<u8>,
    }

    /// What Go's client says when the deadline passes.
    const HTTP_TIMEOUT: &str =
        "context deadline exceeded (Client.Timeout exceeded while awaiting headers)";

    /// What Go's client says when an HTTPS request meets a plain HTTP server.
    pub(crate) const HTTP_TO_HTTPS: &str = "http: server gave HTTP response to HTTPS client";

    /// GET with kubelet's client semantics: redirects followed only to the same host name (up to
    /// 10; a redirect elsewhere is returned as is), one deadline for the whole exchange. Errors are
    /// worded as Go's `url.Error` (`Get "http://10.0.0.5:8080/healthz": dial tcp ...`).
    pub(crate) async fn http_get(
        req: &HttpRequest,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<HttpResponse, String> {
        let mut url = req.url.clone();
        let mut host_header = req.host_header.clone();
        let mut redirects = 0;
        loop {
            let hop = exchange(req, &url, host_header.as_deref());
            let r = match deadline {
                Some(d) => tokio::time::timeout_at(d, hop)
                    .await
                    .unwrap_or_else(|_| Err(HTTP_TIMEOUT.into())),
                None => hop.await,
            };
            let r =
                r.map_err(|e| format!("Get {}: {e}", crate::env::go_quote(&url.to_string())))?;
            let loc = match (&r.location, r.status) {
                (Some(l), 301 | 302 | 303 | 307 | 308) => l.clone(),
                _ => return Ok(r),
            };
            let next = url
                .join(&loc)
                .map_err(|e| format!("Get {}: {e}", crate::env::go_quote(&url.to_string())))?;
            if next.host != req.url.host {
                // kubelet's redirect checker: a redirect to another host ends here.
                return Ok(r);
            }
            redirects += 1;
            if redirects >= 10 {
                return Err(format!(
                    "Get {}: stopped after 10 redirects",
                    crate::env::go_quote(&next.to_string())
                ));
            }
            // A custom Host survives only a relative redirect (Go's client).
            let relative = !loc.contains("://") && !loc.starts_with("//");
            if !relative {
                host_header = None;
            }
            url = next;
        }
    }

    async fn exchange(
        req: &HttpRequest,
        url: &HttpUrl,
        host_header: Option<&str>,
    ) -> Result<HttpResponse, String> {
        let tcp = dial(&url.host, url.port, None).await?;
        let bytes = req.render(url, host_header);
        match url.scheme {
            Scheme::Http => roundtrip(tcp, &bytes).await,
            Scheme::Https => {
                let name = rustls::pki_types::ServerName::try_from(url.host.clone())
                    .map_err(|e| format!("tls: {e}"))?;
                let mut sniff = Sniff {
                    inner: tcp,
                    head: Vec::new(),
                };
                let tls = tokio_rustls::TlsConnector::from(insecure_tls()?);
                let e = match tls.connect(name, &mut sniff).await {
                    Ok(s) => return roundtrip(s, &bytes).await,
                    Err(e) => e,
                };
                if sniff.head.starts_with(b"HTTP/") {
                    Err(HTTP_TO_HTTPS.into())
                } else {
                    Err(format!("tls: {e}"))
                }
            }
        }
    }

    async fn roundtrip<S: AsyncRead + AsyncWrite + Unpin>(
        mut s: S,
        request: &[u8],
    ) -> Result<HttpResponse, String> {
        s.write_all(request).await.map_err(|e| sys_error(&e))?;
        s.flush().await.map_err(|e| sys_error(&e))?;
        let mut buf = Vec::with_capacity(1024);
        loop {
            let (status, location, content_length, chunked, head_len) = loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break parse_head(&buf[..end]).map(|(s, l, cl, ch)| (s, l, cl, ch, end + 4))?;
                }
                if buf.len() > MAX_HEAD {
                    return Err(format!(
                        "net/http: server response headers exceeded {MAX_HEAD} bytes; aborted"
                    ));
                }
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.map_err(|e| sys_error(&e))?;
                if n == 0 {
                    return Err(if buf.is_empty() {
                        "EOF".into()
                    } else {
                        "unexpected EOF".into()
                    });
                }
                buf.extend_from_slice(&chunk[..n]);
            };
            buf.drain(..head_len);
            if (100..200).contains(&status) && status != 101 {
                // Informational: the real response follows.
                continue;
            }
            let mut body = Vec::new();
            if (300..400).contains(&status) {
                body = read_body(&mut s, buf, content_length, chunked).await;
            }
            return Ok(HttpResponse {
                status,
                location,
                body,
            });
        }
    }

    pub(super) type Head = (u16, Option<String>, Option<usize>, bool);

    pub(super) fn parse_head(head: &[u8]) -> Result<Head, String> {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let line = lines.next().unwrap_or_default();
        let malformed = || format!("malformed HTTP response {}", crate::env::go_quote(line));
        let mut parts = line.splitn(3, ' ');
        let proto = parts.next().unwrap_or_default();
        if !proto.starts_with("HTTP/") {
            return Err(malformed());
        }
        let status = parts
            .next()
            .filter(|c| c.len() == 3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(malformed)?;
        let (mut location, mut content_length, mut chunked) = (None, None, false);
        for l in lines {
            let Some((n, v)) = l.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match n.trim().to_ascii_lowercase().as_str() {
                "location" => location = Some(v.to_string()),
                "content-length" => content_length = v.parse().ok(),
                "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                _ => {}
            }
        }
        Ok((status, location, content_length, chunked))
    }

    /// Up to [`MAX_OUTPUT`] bytes of the body (best effort: a read error ends it).
    async fn read_body<S: AsyncRead + Unpin>(
        s: &mut S,
        mut buf: Vec<u8>,
        content_length: Option<usize>,
        chunked: bool,
    ) -> Vec<u8> {
        let want = content_length.unwrap_or(usize::MAX).min(MAX_OUTPUT);
        let mut chunk = [0u8; 4096];
        while buf.len() < want || (chunked && buf.len() < MAX_OUTPUT) {
            if chunked && dechunk(&buf).1 {
                break;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let mut body = if chunked { dechunk(&buf).0 } else { buf };
        body.truncate(want);
        body
    }

    /// The data of a chunked body so far, and whether its last chunk was seen.
    pub(super) fn dechunk(mut b: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        loop {
            let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
                return (out, false);
            };
            let size = String::from_utf8_lossy(&b[..eol]);
            let size = size.split(';').next().unwrap_or_default().trim();
            let Ok(n) = usize::from_str_radix(size, 16) else {
                return (out, true);
            };
            if n == 0 {
                return (out, true);
            }
            b = &b[eol + 2..];
            let take = n.min(b.len());
            out.extend_from_slice(&b[..take]);
            if take < n || b.len() < n + 2 {
                return (out, false);
            }
            b = &b[n + 2..];
        }
    }

    /// Keeps the first bytes the peer sent, to recognise a plain HTTP answer to a TLS hello.
    struct Sniff<S> {
        inner: S,
        head: Vec<u8>,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Sniff<S> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let before = buf.filled().len();
            let this = &mut *self;
            let r = Pin::new(&mut this.inner).poll_read(cx, buf);
            if this.head.len() < 5 {
                let new = &buf.filled()[before..];
                let take = (5 - this.head.len()).min(new.len());
                this.head.extend_from_slice(&new[..take]);
            }
            r
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for Sniff<S> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// Accepts any server certificate (kubelet's probes set `InsecureSkipVerify`), still checking
    /// that the handshake is signed by the certificate presented.
    #[derive(Debug)]
    struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

    impl rustls::client::danger::ServerCertVerifier for NoVerify {
        fn verify_server_cert(
            &self,
            _end_entity: &rustls::pki_types::CertificateDer<'_>,
            _intermediates: &[rustls::pki_types::CertificateDer<'_>],
            _server_name: &rustls::pki_types::ServerName<'_>,
            _ocsp_response: &[u8],
            _now: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    fn insecure_tls() -> Result<Arc<rustls::ClientConfig>, String> {
        static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
        CONFIG
            .get_or_init(|| {
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| format!("tls: {e}"))?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
                    .with_no_client_auth();
                Ok(Arc::new(cfg))
            })
            .clone()
    }
}

/// The grpc probe: `grpc.health.v1.Health/Check` over tonic with hand-written messages.
pub(crate) mod grpc {
    use std::marker::PhantomData;
    use std::time::Duration;

    use bytes::{Buf, BufMut};

    use super::{go_duration, ProbeOutcome, KUBE_VERSION};

    /// The method kubelet's grpc probe calls.
    const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

    /// `grpc.health.v1.HealthCheckRequest`.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub(crate) struct HealthCheckRequest {
        pub(crate) service: String,
    }

    /// `grpc.health.v1.HealthCheckResponse` (`status`: 0 UNKNOWN, 1 SERVING, 2 NOT_SERVING,
    /// 3 SERVICE_UNKNOWN).
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub(crate) struct HealthCheckResponse {
        pub(crate) status: i32,
    }

    /// A message with a hand-written protobuf encoding (two one-field messages do not need prost).
    pub(crate) trait Wire: Sized + Send + 'static {
        fn encode(&self, out: &mut impl BufMut);
        fn decode(buf: &[u8]) -> Result<Self, String>;
    }

    fn put_varint(out: &mut impl BufMut, mut v: u64) {
        while v >= 0x80 {
            out.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        out.put_u8(v as u8);
    }

    fn get_varint(b: &mut &[u8]) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some((&byte, rest)) = b.split_first() else {
                return Err("truncated varint".into());
            };
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    /// Calls `f(field, varint)` or `g(field, bytes)` for each field; other wire types are skipped.
    fn fields(
        mut b: &[u8],
        mut on_varint: impl FnMut(u64, u64),
        mut on_bytes: impl FnMut(u64, &[u8]),
    ) -> Result<(), String> {
        while !b.is_empty() {
            let key = get_varint(&mut b)?;
            let skip = match key & 7 {
                0 => {
                    let v = get_varint(&mut b)?;
                    on_varint(key >> 3, v);
                    0
                }
                1 => 8,
                2 => {
                    let n = usize::try_from(get_varint(&mut b)?).map_err(|e| e.to_string())?;
                    let data = b.get(..n).ok_or("truncated field")?;
                    on_bytes(key >> 3, data);
                    n
                }
                5 => 4,
                t => return Err(format!("unsupported wire type {t}")),
            };
            b = b.get(skip..).ok_or("truncated field")?;
        }
        Ok(())
    }

    impl Wire for HealthCheckRequest {
        fn encode(&self, out: &mut impl BufMut) {
            if !self.service.is_empty() {
                out.put_u8(0x0a);
                put_varint(out, self.service.len() as u64);
                out.put_slice(self.service.as_bytes());
            }
        }

        fn decode(buf: &[u8]) -> Result<Self, String> {
            let mut m = HealthCheckRequest::default();
            fields(
                buf,
                |_, _| {},
                |f, b| {
                    if f == 1 {
                        m.service = String::from_utf8_lossy(b).into_owned();
                    }
                },
            )?;
            Ok(m)
        }
    }

    impl Wire for HealthCheckResponse {
        fn encode(&self, out: &mut impl BufMut) {
            if self.status != 0 {
                out.put_u8(0x08);
                put_varint(out, self.status as u64);
            }
        }

        fn decode(buf: &[u8]) -> Result<Self, String> {
            let mut m = HealthCheckResponse::default();
            fields(
                buf,
                |f, v| {
                    if f == 1 {
                        m.status = v as i32;
                    }
                },
                |_, _| {},
            )?;
            Ok(m)
        }
    }

    /// A tonic codec over [`Wire`] messages: encodes `E`, decodes `D`.
    pub(crate) struct WireCodec<E, D>(PhantomData<fn(E) -> D>);

    impl<E, D> Default for WireCodec<E, D> {
        fn default() -> Self {
            WireCodec(PhantomData)
        }
    }

    impl<E: Wire, D: Wire> tonic::codec::Codec for WireCodec<E, D> {
        type Encode = E;
        type Decode = D;
        type Encoder = WireCodec<E, D>;
        type Decoder = WireCodec<E, D>;

        fn encoder(&mut self) -> Self::Encoder {
            WireCodec::default()
        }

        fn decoder(&mut self) -> Self::Decoder {
            WireCodec::default()
        }
    }

    impl<E: Wire, D: Wire> tonic::codec::Encoder for WireCodec<E, D> {
        type Item = E;
        type Error = tonic::Status;

        fn encode(
            &mut self,
            item: E,
            dst: &mut tonic::codec::EncodeBuf<'_>,
        ) -> Result<(), tonic::Status> {
            item.encode(dst);
            Ok(())
        }
    }

    impl<E: Wire, D: Wire> tonic::codec::Decoder for WireCodec<E, D> {
        type Item = D;
        type Error = tonic::Status;

        fn decode(
            &mut self,
            src: &mut tonic::codec::DecodeBuf<'_>,
        ) -> Result<Option<D>, tonic::Status> {
            let bytes = src.copy_to_bytes(src.remaining());
            D::decode(&bytes).map(Some).map_err(tonic::Status::internal)
        }
    }

    pub(super) fn serving_status_name(status: i32) -> String {
        match status {
            0 => "UNKNOWN".into(),
            1 => "SERVING".into(),
            2 => "NOT_SERVING".into(),
            3 => "SERVICE_UNKNOWN".into(),
            n => n.to_string(),
        }
    }

    /// kubelet's grpc probe: connect to `addr` (retrying, as a blocking dial does, until the
    /// timeout), then `grpc.health.v1.Health/Check` for `service`; SERVING passes.
    pub(super) async fn grpc_check(addr: &str, service: &str, timeout: Duration) -> ProbeOutcome {
        let deadline = tokio::time::Instant::now() + timeout;
        let connect_timeout = || {
            ProbeOutcome::Failure(format!(
                "timeout: failed to connect service {} within {}: context deadline exceeded",
                crate::env::go_quote(addr),
                go_duration(timeout)
            ))
        };
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .and_then(|e| e.user_agent(format!("kube-probe/{KUBE_VERSION}")));
        let endpoint = match endpoint {
            Ok(e) => e.connect_timeout(timeout),
            Err(e) => {
                return ProbeOutcome::Failure(format!(
                    "error: failed to connect service at {}: {e}",
                    crate::env::go_quote(addr)
                ))
            }
        };
        let channel = loop {
            match tokio::time::timeout_at(deadline, endpoint.connect()).await {
                Ok(Ok(c)) => break c,
                Ok(Err(_)) => {
                    let retry = tokio::time::Instant::now() + Duration::from_millis(100);
                    if retry >= deadline {
                        return connect_timeout();
                    }
                    tokio::time::sleep_until(retry).await;
                }
                Err(_) => return connect_timeout(),
            }
        };
        let rpc_timeout = || {
            ProbeOutcome::Failure(format!(
                "timeout: health rpc did not complete within {}",
                go_duration(timeout)
            ))
        };
        let mut grpc = tonic::client::Grpc::new(channel);
        let call = async {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let mut req = tonic::Request::new(HealthCheckRequest {
                service: service.to_string(),
            });
            req.set_timeout(deadline.saturating_duration_since(tokio::time::Instant::now()));
            grpc.unary(
                req,
                tonic::codegen::http::uri::PathAndQuery::from_static(HEALTH_CHECK),
                WireCodec::<HealthCheckRequest, HealthCheckResponse>::default(),
            )
            .await
        };
        match tokio::time::timeout_at(deadline, call).await {
            Err(_) => rpc_timeout(),
            Ok(Err(s)) => match s.code() {
                tonic::Code::Unimplemented => ProbeOutcome::Failure(format!(
                    "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                    s.message()
                )),
                tonic::Code::DeadlineExceeded => rpc_timeout(),
                code => ProbeOutcome::Failure(format!(
                    "error: health rpc probe failed: rpc error: code = {code:?} desc = {}",
                    s.message()
                )),
            },
            Ok(Ok(r)) if r.get_ref().status == 1 => ProbeOutcome::Success,
            Ok(Ok(r)) => ProbeOutcome::Failure(format!(
                "service unhealthy (responded with {})",
                crate::env::go_quote(&serving_status_name(r.get_ref().status))
            )),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::grpc::*;
    use super::http::*;
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use k8s_openapi::api::core::v1::{ContainerPort, HTTPHeader};
    use tokio::net::TcpListener;

    // ---- state machine (mirrors pkg/kubelet/prober/worker_test.go) ----

    fn probe(success: i32, failure: i32) -> Probe {
        Probe {
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            period_seconds: Some(1),
            ..Default::default()
        }
    }

    fn state(kind: ProbeKind, p: &Probe, t0: Instant) -> ProbeState {
        ProbeState::new(kind, ProbeSpec::new(kind, p), t0)
    }

    use ProbeResult::{Failure as F, Success as S, Unknown as U};

    /// Feeds `results` one second apart; returns (published result, transition) after each.
    fn feed(
        st: &mut ProbeState,
        t0: Instant,
        results: &[ProbeResult],
    ) -> Vec<(ProbeResult, Option<Transition>)> {
        results
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let t = st.record(*r, t0 + Duration::from_secs(i as u64 + 1));
                (st.result(), t)
            })
            .collect()
    }

    #[test]
    fn defaults_and_thresholds() {
        let spec = ProbeSpec::new(ProbeKind::Liveness, &Probe::default());
        assert_eq!(
            spec,
            ProbeSpec {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
        // successThreshold only counts for readiness.
        assert_eq!(
            ProbeSpec::new(ProbeKind::Startup, &probe(5, 2)).success_threshold,
            1
        );
        assert_eq!(
            ProbeSpec::new(ProbeKind::Readiness, &probe(5, 2)).success_threshold,
            5
        );
        // Nonsense values are clamped to the minimums validation enforces.
        let odd = Probe {
            period_seconds: Some(0),
            timeout_seconds: Some(-1),
            failure_threshold: Some(0),
            initial_delay_seconds: Some(-100),
            ..Default::default()
        };
        let spec = ProbeSpec::new(ProbeKind::Readiness, &odd);
        assert_eq!(spec.period, Duration::from_secs(1));
        assert_eq!(spec.timeout, Duration::from_secs(1));
        assert_eq!(spec.failure_threshold, 1);
        assert_eq!(spec.initial_delay, Duration::ZERO);
    }

    #[test]
    fn initial_values_and_delay() {
        // TestInitialDelay: nothing runs during the delay; the initial value stands.
        let t0 = Instant::now();
        let p = Probe {
            initial_delay_seconds: Some(10),
            ..Default::default()
        };
        for (kind, initial) in [
            (ProbeKind::Liveness, S),
            (ProbeKind::Readiness, F),
            (ProbeKind::Startup, U),
        ] {
            let st = state(kind, &p, t0);
            assert_eq!(st.result(), initial, "{kind}");
            assert!(!st.due(t0), "{kind}");
            assert!(!st.due(t0 + Duration::from_millis(9_999)), "{kind}");
            assert!(st.due(t0 + Duration::from_secs(10)), "{kind}");
            assert_eq!(st.next_due(), Some(t0 + Duration::from_secs(10)));
        }
    }

    #[test]
    fn period_start_to_start() {
        let t0 = Instant::now();
        let mut st = state(ProbeKind::Readiness, &Probe::default(), t0);
        assert!(st.due(t0));
        st.record(S, t0);
        assert!(!st.due(t0 + Duration::from_secs(9)));
        assert!(st.due(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn failure_threshold() {
        // TestFailureThreshold: readiness, success 1, failure 3, twice round.
        let t0 = Instant::now();
        let mut st = state(ProbeKind::Readiness, &probe(1, 3), t0);
        let got = feed(&mut st, t0, &[S, S, S, F, F, F, F, F, S, S, S, F, F, F]);
        let want = [
            (S, Some(Transition::Ready(true))),
            (S, None),
            (S, None),
            (S, None),
            (S, None),
            (F, Some(Transition::Ready(false))),
            (F, None),
            (F, None),
            (S, Some(Transition::Ready(true))),
            (S, None),
            (S, None),
            (S, None),
            (S, None),
            (F, Some(Transition::Ready(false))),
        ];
        assert_eq!(got, want);
        assert!(!st.on_hold(), "readiness never holds");
    }

    #[test]
    fn success_threshold() {
        // TestSuccessThreshold: readiness, success 3, failure 1.
        let t0 = Instant::now();
        let mut st = state(ProbeKind::Readiness, &probe(3, 1), t0);
        let got = feed(&mut st, t0, &[S, S, S, S, S, F, S, S, S]);
        let results: Vec<_> = got.iter().map(|g| g.0).collect();
        assert_eq!(results, [F, F, S, S, S, F, F, F, S]);
        assert_eq!(got[2].1, Some(Transition::Ready(true)));
        assert_eq!(got[5].1, Some(Transition::Ready(false)));
        assert_eq!(got[8].1, Some(Transition::Ready(true)));
    }

    #[test]
    fn liveness_failure_kills_and_holds() {
        // TestResultRunOnLivenessCheckFailure + TestOnHoldOnLivenessOrStartupCheckFailure.
        let t0 = Instant::now();
        let mut st = state(ProbeKind::Liveness, &probe(1, 3), t0);
        let got = feed(&mut st, t0, &[S, F, F, F]);
        assert_eq!(
            got,
            [
                (S, None),
                (S, None),
                (S, None),
                (F, Some(Transition::Kill(ProbeKind::Liveness)))
            ]
        );
        assert!(st.on_hold());
        assert_eq!(
            st.run, 0,
            "the next instance gets the full failureThreshold"
        );
        assert_eq!(st.next_due(), None);
        assert!(!st.due(t0 + Duration::from_secs(3600)));
        // On hold: a success changes nothing.
        assert_eq!(st.record(S, t0 + Duration::from_secs(10)), None);
        assert_eq!(st.result(), F);
        // A new container instance starts over.
        let st = state(
            ProbeKind::Liveness,
            &probe(1, 3),
            t0 + Duration::from_secs(20),
        );
        assert_eq!(st.result(), S);
        assert!(st.due(t0 + Duration::from_secs(20)));
    }

    #[test]
    fn startup_failure_and_success() {
        // TestResultRunOnStartupCheckFailure / TestStartupProbeFailureThreshold.
        let t0 = Instant::now();
        let mut st = state(ProbeKind::Startup, &probe(1, 3), t0);
        let got = feed(&mut st, t0, &[F, F, F]);
        assert_eq!(
            got,
            [
                (U, None),
                (U, None),
                (F, Some(Transition::Kill(ProbeKind::Startup)))
            ]
        );
        assert!(st.on_hold());
        // TestStartupProbeSuccessThreshold: success holds too (#117153).
        let mut st = state(ProbeKind::Startup, &probe(1, 3), t0);
        let got = feed(&mut st, t0, &[F, S]);
        assert_eq!(got, [(U, None), (S, Some(Transition::Started))]);
        assert!(st.on_hold());
    }

    #[test]
    fn errored_probes_are_thrown_away() {
        // A prober error (Unknown) neither counts nor breaks a run.
        let t0 = Instant::now();
        let mut st = state(ProbeKind::Liveness, &probe(1, 3), t0);
        let got = feed(&mut st, t0, &[F, U, U, F, U, F]);
        let results: Vec<_> = got.iter().map(|g| g.0).collect();
        assert_eq!(results, [S, S, S, S, S, F]);
        assert_eq!(got[5].1, Some(Transition::Kill(ProbeKind::Liveness)));
        // ...but still waits a period.
        let mut st = state(ProbeKind::Readiness, &Probe::default(), t0);
        st.record(U, t0);
        assert!(!st.due(t0 + Duration::from_secs(1)));
    }

    fn container(
        startup: Option<Probe>,
        liveness: Option<Probe>,
        readiness: Option<Probe>,
    ) -> Container {
        Container {
            name: "app".into(),
            startup_probe: startup,
            liveness_probe: liveness,
            readiness_probe: readiness,
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn startup_gates_liveness_and_readiness() {
        // TestLivenessProbeDisabledByStarted / TestStartupProbeDisabledByStarted.
        let t0 = Instant::now();
        let c = container(Some(probe(1, 2)), Some(probe(1, 1)), Some(probe(1, 1)));
        let mut cp = ContainerProbes::new(&c, "c1", t0);
        assert_eq!(cp.container_id(), "c1");
        assert_eq!(cp.started(), Some(false));
        assert_eq!(cp.ready(), Some(false));
        assert_eq!(cp.due(t0), [ProbeKind::Startup]);
        assert_eq!(cp.record(ProbeKind::Startup, F, t0), None);
        assert_eq!(cp.next_due(), Some(t0 + Duration::from_secs(1)));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            cp.record(ProbeKind::Startup, S, t1),
            Some(Transition::Started)
        );
        assert_eq!(cp.started(), Some(true));
        // Startup stops; the others begin at once (their delays have passed).
        assert_eq!(cp.due(t1), [ProbeKind::Liveness, ProbeKind::Readiness]);
        assert_eq!(
            cp.record(ProbeKind::Readiness, S, t1),
            Some(Transition::Ready(true))
        );
        assert_eq!(cp.ready(), Some(true));
        assert_eq!(
            cp.record(ProbeKind::Liveness, F, t1),
            Some(Transition::Kill(ProbeKind::Liveness))
        );
        assert_eq!(cp.due(t1 + Duration::from_secs(5)), [ProbeKind::Readiness]);
    }

    #[test]
    fn no_probes() {
        let t0 = Instant::now();
        let cp = ContainerProbes::new(&container(None, None, None), "c", t0);
        assert_eq!((cp.started(), cp.ready()), (None, None));
        assert!(cp.due(t0).is_empty());
        assert_eq!(cp.next_due(), None);
        assert!(cp.get(ProbeKind::Liveness).is_none());
    }

    #[test]
    fn deletion_quiets_liveness_and_startup() {
        // TestDoProbe "Pod deletion": liveness/startup set Success and stop; readiness goes on.
        let t0 = Instant::now();
        let c = container(Some(probe(1, 3)), Some(probe(1, 3)), Some(probe(1, 3)));
        let mut cp = ContainerProbes::new(&c, "c", t0);
        cp.terminating();
        assert_eq!(cp.started(), Some(true));
        assert_eq!(cp.get(ProbeKind::Liveness).unwrap().result(), S);
        assert!(cp.get(ProbeKind::Liveness).unwrap().on_hold());
        assert_eq!(cp.due(t0), [ProbeKind::Readiness]);
    }

    #[test]
    fn kill_wording() {
        assert_eq!(
            kill_message("app", ProbeKind::Liveness, true),
            "Container app failed liveness probe, will be restarted"
        );
        assert_eq!(
            kill_message("app", ProbeKind::Startup, false),
            "Container app failed startup probe"
        );
        let mut p = Probe::default();
        assert_eq!(kill_grace_seconds(&p, 30), 30);
        p.termination_grace_period_seconds = Some(5);
        assert_eq!(kill_grace_seconds(&p, 30), 5);
    }

    #[test]
    fn event_wording() {
        let cases = [
            (ProbeOutcome::Success, ProbeKind::Liveness, None),
            (
                ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into()),
                ProbeKind::Liveness,
                Some(("Unhealthy", "Liveness probe failed: HTTP probe failed with statuscode: 500")),
            ),
            (
                ProbeOutcome::Warning("Probe terminated redirects, Response body: x".into()),
                ProbeKind::Readiness,
                Some(("ProbeWarning", "Readiness probe warning: Probe terminated redirects, Response body: x")),
            ),
            (
                ProbeOutcome::Unknown("strconv.Atoi: parsing \"http\": invalid syntax".into()),
                ProbeKind::Startup,
                Some(("Unhealthy", "Startup probe errored and resulted in unknown state: strconv.Atoi: parsing \"http\": invalid syntax")),
            ),
        ];
        for (outcome, kind, want) in cases {
            let got = outcome.event(kind);
            assert_eq!(
                got.as_ref().map(|e| (e.reason, e.message.as_str())),
                want,
                "{outcome:?}"
            );
        }
        assert_eq!(ProbeOutcome::Warning(String::new()).result(), S);
        assert_eq!(ProbeOutcome::Unknown(String::new()).result(), U);
    }

    // ---- helpers ----

    #[test]
    fn go_formatting() {
        assert_eq!(
            crate::env::go_quote("a \"b\"\n\t\\\u{1b}é"),
            "\"a \\\"b\\\"\\n\\t\\\\\\x1bé\""
        );
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(canonical_header("x-custom-HEADER"), "X-Custom-Header");
        assert_eq!(canonical_header("user-agent"), "User-Agent");
        assert_eq!(canonical_header("bad header"), "bad header");
        assert_eq!(join_host_port("fd00::1", 80), "[fd00::1]:80");
        let e = io::Error::from_raw_os_error(111);
        assert_eq!(sys_error(&e), "connection refused");
    }

    #[test]
    fn ports() {
        let c = container(None, None, None);
        let cases = [
            (IntOrString::Int(80), Ok(80)),
            (IntOrString::String("http".into()), Ok(8080)),
            (IntOrString::String("9090".into()), Ok(9090)),
            (
                IntOrString::String("nope".into()),
                Err("strconv.Atoi: parsing \"nope\": invalid syntax".to_string()),
            ),
            (
                IntOrString::Int(0),
                Err("invalid port number: 0".to_string()),
            ),
            (
                IntOrString::Int(70000),
                Err("invalid port number: 70000".to_string()),
            ),
        ];
        for (port, want) in cases {
            assert_eq!(resolve_port(&port, &c), want, "{port:?}");
        }
    }

    fn url(path: &str) -> HttpUrl {
        HttpUrl {
            scheme: Scheme::Http,
            host: "10.0.0.5".into(),
            port: 8080,
            path: path.into(),
        }
    }

    #[test]
    fn urls_and_redirects() {
        assert_eq!(url("").to_string(), "http://10.0.0.5:8080");
        assert_eq!(
            url("/healthz?x=1").to_string(),
            "http://10.0.0.5:8080/healthz?x=1"
        );
        assert_eq!(url("healthz").request_target(), "/healthz");
        assert_eq!(url("").request_target(), "/");
        let base = url("/a/b");
        let cases = [
            ("/c", "http://10.0.0.5:8080/c"),
            ("c", "http://10.0.0.5:8080/a/c"),
            ("https://example.com/x#frag", "https://example.com:443/x"),
            ("//other:81/y", "http://other:81/y"),
            ("http://u:p@[fd00::2]:9/z", "http://[fd00::2]:9/z"),
            ("HTTP://h", "http://h:80"),
        ];
        for (loc, want) in cases {
            assert_eq!(base.join(loc).unwrap().to_string(), want, "{loc}");
        }
        assert!(base.join("ftp://x/").is_err());
    }

    #[test]
    fn request_headers() {
        let c = container(None, None, None);
        let h = |n: &str, v: &str| HTTPHeader {
            name: n.into(),
            value: v.into(),
        };
        let action = |headers: Vec<HTTPHeader>| HTTPGetAction {
            path: Some("/healthz".into()),
            port: IntOrString::String("http".into()),
            http_headers: Some(headers),
            ..Default::default()
        };
        let r = HttpRequest::new(&action(vec![h("x-a", "1")]), &c, "10.0.0.5", "probe").unwrap();
        assert_eq!(r.url.to_string(), "http://10.0.0.5:8080/healthz");
        assert_eq!(
            r.headers,
            [
                ("User-Agent".to_string(), "kube-probe/1.33".to_string()),
                ("X-A".into(), "1".into()),
                ("Accept".into(), "*/*".into())
            ]
        );
        let r = HttpRequest::new(
            &action(vec![
                h("user-agent", "mine"),
                h("Accept", ""),
                h("host", "svc.local"),
            ]),
            &c,
            "10.0.0.5",
            "lifecycle",
        )
        .unwrap();
        assert_eq!(r.headers, [("User-Agent".to_string(), "mine".to_string())]);
        assert_eq!(r.host_header.as_deref(), Some("svc.local"));
        let rendered = String::from_utf8(r.render(&r.url, r.host_header.as_deref())).unwrap();
        assert_eq!(
            rendered,
            "GET /healthz HTTP/1.1\r\nHost: svc.local\r\nUser-Agent: mine\r\nConnection: close\r\n\r\n"
        );
        let r = HttpRequest::new(&action(vec![]), &c, "10.0.0.5", "lifecycle").unwrap();
        assert_eq!(r.headers[0].1, "kube-lifecycle/1.33");
        let mut bad = action(vec![]);
        bad.scheme = Some("FTP".into());
        assert!(HttpRequest::new(&bad, &c, "10.0.0.5", "probe").is_err());
        let mut https = action(vec![]);
        https.scheme = Some("HTTPS".into());
        https.host = Some("example.com".into());
        let r = HttpRequest::new(&https, &c, "", "probe").unwrap();
        assert_eq!(r.url.to_string(), "https://example.com:8080/healthz");
        assert!(HttpRequest::new(&action(vec![]), &c, "", "probe").is_err());
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"),
            (b"abcde".to_vec(), true)
        );
        assert_eq!(dechunk(b"3\r\nab"), (b"ab".to_vec(), false));
        assert_eq!(
            parse_head(b"HTTP/1.1 302 Found\r\nlocation: /x\r\nContent-Length: 5").unwrap(),
            (302, Some("/x".into()), Some(5), false)
        );
        assert_eq!(
            parse_head(b"SSH-2.0").unwrap_err(),
            "malformed HTTP response \"SSH-2.0\""
        );
    }

    #[test]
    fn health_messages() {
        let mut b = Vec::new();
        HealthCheckRequest {
            service: "svc".into(),
        }
        .encode(&mut b);
        assert_eq!(b, b"\x0a\x03svc");
        assert_eq!(HealthCheckRequest::decode(&b).unwrap().service, "svc");
        let mut b = Vec::new();
        HealthCheckResponse { status: 2 }.encode(&mut b);
        assert_eq!(b, [0x08, 0x02]);
        // Unknown fields are skipped.
        let mut with_extra = vec![0x12, 0x01, b'x', 0x1d, 0, 0, 0, 0];
        with_extra.extend_from_slice(&b);
        assert_eq!(HealthCheckResponse::decode(&with_extra).unwrap().status, 2);
        assert!(HealthCheckResponse::decode(&[0x08]).is_err());
        assert_eq!(serving_status_name(3), "SERVICE_UNKNOWN");
    }

    // ---- runners against real local servers ----

    /// A fake runtime: each call returns the next canned answer (and counts calls).
    pub(crate) struct FakeExec {
        pub(crate) answers: Mutex<Vec<ExecResult>>,
        pub(crate) calls: AtomicUsize,
        pub(crate) delay: Duration,
        pub(crate) seen: Mutex<Vec<(String, Vec<String>, i64)>>,
    }

    impl FakeExec {
        pub(crate) fn new(answers: Vec<ExecResult>) -> Self {
            FakeExec {
                answers: Mutex::new(answers),
                calls: AtomicUsize::new(0),
                delay: Duration::ZERO,
                seen: Mutex::new(Vec::new()),
            }
        }
    }

    impl Exec for FakeExec {
        fn exec(
            &self,
            container_id: &str,
            cmd: Vec<String>,
            timeout_secs: i64,
        ) -> impl Future<Output = ExecResult> + Send {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.seen
                .lock()
                .unwrap()
                .push((container_id.to_string(), cmd, timeout_secs));
            let answer = {
                let mut a = self.answers.lock().unwrap();
                if a.len() > 1 {
                    a.remove(0)
                } else {
                    a[0].clone()
                }
            };
            let delay = self.delay;
            async move {
                tokio::time::sleep(delay).await;
                answer
            }
        }
    }

    /// An HTTP server on 127.0.0.1 answering each request with `respond(head)`; returns its port
    /// and the request heads it saw.
    pub(crate) async fn serve<F>(respond: F) -> (u16, Arc<Mutex<Vec<String>>>)
    where
        F: Fn(&str) -> Vec<u8> + Send + Sync + 'static,
    {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let respond = Arc::new(respond);
        let seen2 = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                let (respond, seen) = (respond.clone(), seen2.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        match c.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        // A TLS hello gets an answer too (the plain-HTTP-to-HTTPS case).
                        if buf[0] == 0x16 || buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).into_owned();
                    seen.lock().unwrap().push(head.clone());
                    let _ = c.write_all(&respond(&head)).await;
                    let _ = c.shutdown().await;
                });
            }
        });
        (port, seen)
    }

    pub(crate) fn response(status: u16, extra: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status} Whatever\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// A port nothing listens on.
    pub(crate) async fn closed_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    }

    /// A server that accepts and never answers.
    pub(crate) async fn silent_server() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((c, _)) = l.accept().await {
                held.push(c);
            }
        });
        port
    }

    pub(crate) fn target<'a>(c: &'a Container) -> Target<'a> {
        Target {
            container_id: "cid",
            container: c,
            pod_ip: "127.0.0.1",
            pod: "web_default(uid-1)",
        }
    }

    fn http_probe(port: u16, path: &str) -> HTTPGetAction {
        HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(i32::from(port)),
            ..Default::default()
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    async fn run_http(a: &HTTPGetAction) -> ProbeOutcome {
        let c = container(None, None, None);
        run(
            &ProbeHandler::HttpGet(a),
            &target(&c),
            &FakeExec::new(vec![Ok((0, vec![], vec![]))]),
            SECOND,
        )
        .await
    }

    #[tokio::test]
    async fn http_statuses() {
        let (port, seen) = serve(|head| {
            let path = head.split(' ').nth(1).unwrap_or_default().to_string();
            match path.as_str() {
                "/ok" => response(200, "", "fine"),
                "/fail" => response(500, "", "boom"),
                "/moved" => response(302, "Location: /ok\r\n", ""),
                "/away" => response(301, "Location: http://localhost/else\r\n", "gone"),
                "/loop" => response(307, "Location: /loop\r\n", ""),
                "/nochange" => response(304, "", ""),
                _ => response(404, "", ""),
            }
        })
        .await;
        let mut a = http_probe(port, "/ok");
        a.http_headers = Some(vec![HTTPHeader {
            name: "x-probe".into(),
            value: "1".into(),
        }]);
        assert_eq!(run_http(&a).await, ProbeOutcome::Success);
        let head = seen.lock().unwrap()[0].clone();
        assert!(head.starts_with("GET /ok HTTP/1.1\r\n"), "{head}");
        assert!(
            head.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
            "{head}"
        );
        assert!(head.contains("User-Agent: kube-probe/1.33\r\n"), "{head}");
        assert!(head.contains("Accept: */*\r\n"), "{head}");
        assert!(head.contains("X-Probe: 1\r\n"), "{head}");

        let cases = [
            (
                "/fail",
                ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into()),
            ),
            (
                "/missing",
                ProbeOutcome::Failure("HTTP probe failed with statuscode: 404".into()),
            ),
            ("/moved", ProbeOutcome::Success),
            (
                "/away",
                ProbeOutcome::Warning("Probe terminated redirects, Response body: gone".into()),
            ),
            (
                "/nochange",
                ProbeOutcome::Warning("Probe terminated redirects, Response body: ".into()),
            ),
            (
                "/loop",
                ProbeOutcome::Failure(format!(
                    "Get \"http://127.0.0.1:{port}/loop\": stopped after 10 redirects"
                )),
            ),
        ];
        for (path, want) in cases {
            assert_eq!(run_http(&http_probe(port, path)).await, want, "{path}");
        }
        let loops = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.starts_with("GET /loop "))
            .count();
        assert_eq!(loops, 10);
    }

    #[tokio::test]
    async fn http_errors() {
        let port = closed_port().await;
        let got = run_http(&http_probe(port, "/healthz")).await;
        assert_eq!(
            got,
            ProbeOutcome::Failure(format!(
                "Get \"http://127.0.0.1:{port}/healthz\": dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
        assert_eq!(
            got.event(ProbeKind::Readiness).unwrap().message,
            format!("Readiness probe failed: Get \"http://127.0.0.1:{port}/healthz\": dial tcp 127.0.0.1:{port}: connect: connection refused")
        );

        let port = silent_server().await;
        let t = Instant::now();
        let got = run_http(&http_probe(port, "/healthz")).await;
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert_eq!(
            got,
            ProbeOutcome::Failure(format!(
                "Get \"http://127.0.0.1:{port}/healthz\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ))
        );

        let mut a = http_probe(1, "/");
        a.port = IntOrString::String("metrics".into());
        assert_eq!(
            run_http(&a).await,
            ProbeOutcome::Unknown("strconv.Atoi: parsing \"metrics\": invalid syntax".into())
        );
    }

    #[tokio::test]
    async fn http_named_port_and_host() {
        let (port, _) = serve(|_| response(200, "", "")).await;
        let c = Container {
            ports: Some(vec![ContainerPort {
                name: Some("web".into()),
                container_port: i32::from(port),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let a = HTTPGetAction {
            host: Some("localhost".into()),
            port: IntOrString::String("web".into()),
            ..Default::default()
        };
        let t = Target {
            pod_ip: "192.0.2.1",
            ..target(&c)
        };
        let got = run(
            &ProbeHandler::HttpGet(&a),
            &t,
            &FakeExec::new(vec![Ok((0, vec![], vec![]))]),
            SECOND,
        )
        .await;
        assert_eq!(got, ProbeOutcome::Success);
    }

    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// An HTTPS server with a self-signed certificate answering every request with 200.
    async fn serve_https() -> u16 {
        let (cert, key) = self_signed();
        let cfg = crate::server::tls_config(&cert, &key).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((c, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(c).await else {
                        return;
                    };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let _ = s.write_all(&response(200, "", "secure")).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn https_without_verification() {
        let port = serve_https().await;
        let mut a = http_probe(port, "/");
        a.scheme = Some("HTTPS".into());
        assert_eq!(run_http(&a).await, ProbeOutcome::Success);
        // An HTTPS probe of a plain HTTP server.
        let (port, _) = serve(|_| response(200, "", "")).await;
        let mut a = http_probe(port, "/");
        a.scheme = Some("HTTPS".into());
        assert_eq!(
            run_http(&a).await,
            ProbeOutcome::Failure(format!(
                "Get \"https://127.0.0.1:{port}/\": {HTTP_TO_HTTPS}"
            ))
        );
    }

    #[tokio::test]
    async fn tcp_socket() {
        let c = container(None, None, None);
        let exec = FakeExec::new(vec![Ok((0, vec![], vec![]))]);
        let (port, _) = serve(|_| Vec::new()).await;
        let open = TCPSocketAction {
            port: IntOrString::Int(i32::from(port)),
            ..Default::default()
        };
        assert_eq!(
            run(&ProbeHandler::TcpSocket(&open), &target(&c), &exec, SECOND).await,
            ProbeOutcome::Success
        );
        let port = closed_port().await;
        let closed = TCPSocketAction {
            port: IntOrString::Int(i32::from(port)),
            ..Default::default()
        };
        let got = run(
            &ProbeHandler::TcpSocket(&closed),
            &target(&c),
            &exec,
            SECOND,
        )
        .await;
        assert_eq!(
            got.event(ProbeKind::Readiness).unwrap().message,
            format!(
                "Readiness probe failed: dial tcp 127.0.0.1:{port}: connect: connection refused"
            )
        );
        let no_ip = Target {
            pod_ip: "",
            ..target(&c)
        };
        assert!(matches!(
            run(&ProbeHandler::TcpSocket(&closed), &no_ip, &exec, SECOND).await,
            ProbeOutcome::Unknown(_)
        ));
    }

    #[tokio::test]
    async fn exec_probes() {
        let c = container(None, None, None);
        let cmd = ExecAction {
            command: Some(vec!["cat".into(), "/tmp/healthy".into()]),
        };
        let h = ProbeHandler::Exec(&cmd);
        let t = target(&c);

        let ok = FakeExec::new(vec![Ok((0, b"fine".to_vec(), vec![]))]);
        assert_eq!(
            run(&h, &t, &ok, Duration::from_secs(3)).await,
            ProbeOutcome::Success
        );
        assert_eq!(
            ok.seen.lock().unwrap()[0],
            (
                "cid".to_string(),
                vec!["cat".to_string(), "/tmp/healthy".to_string()],
                3
            )
        );

        let fail = FakeExec::new(vec![Ok((1, b"out ".to_vec(), b"no such file".to_vec()))]);
        let got = run(&h, &t, &fail, SECOND).await;
        assert_eq!(
            got.event(ProbeKind::Liveness).unwrap().message,
            "Liveness probe failed: out no such file"
        );

        let big = FakeExec::new(vec![Ok((1, vec![b'x'; 3 * MAX_OUTPUT], vec![]))]);
        match run(&h, &t, &big, SECOND).await {
            ProbeOutcome::Failure(o) => assert_eq!(o.len(), MAX_OUTPUT),
            o => panic!("{o:?}"),
        }

        let timeout = FakeExec::new(vec![Err(ExecError::Timeout)]);
        assert_eq!(
            run(&h, &t, &timeout, SECOND).await,
            ProbeOutcome::Failure("command \"cat /tmp/healthy\" timed out".into())
        );

        // A runtime error is retried, then reported as errored.
        let broken = FakeExec::new(vec![Err(ExecError::Failed(
            "container is not running".into(),
        ))]);
        assert_eq!(
            run(&h, &t, &broken, SECOND).await,
            ProbeOutcome::Unknown("container is not running".into())
        );
        assert_eq!(broken.calls.load(Ordering::SeqCst), MAX_RETRIES);
        let flaky = FakeExec::new(vec![
            Err(ExecError::Failed("x".into())),
            Ok((0, vec![], vec![])),
        ]);
        assert_eq!(run(&h, &t, &flaky, SECOND).await, ProbeOutcome::Success);
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 2);

        // A runtime that ignores the timeout.
        let mut slow = FakeExec::new(vec![Ok((0, vec![], vec![]))]);
        slow.delay = Duration::from_secs(30);
        let start = Instant::now();
        assert_eq!(
            run(&h, &t, &slow, SECOND).await,
            ProbeOutcome::Failure("command \"cat /tmp/healthy\" timed out".into())
        );
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    // ---- gRPC ----

    #[derive(Clone)]
    struct Health(i32);

    impl tonic::server::NamedService for Health {
        const NAME: &'static str = "grpc.health.v1.Health";
    }

    #[derive(Clone)]
    struct Other;

    impl tonic::server::NamedService for Other {
        const NAME: &'static str = "other.v1.Other";
    }

    type HttpReq = tonic::codegen::http::Request<tonic::body::Body>;
    type HttpResp = tonic::codegen::http::Response<tonic::body::Body>;

    /// Answers Check with the configured status, or NOT_FOUND for service "missing".
    fn check(
        status: i32,
        req: HttpReq,
    ) -> tonic::codegen::BoxFuture<HttpResp, std::convert::Infallible> {
        Box::pin(async move {
            let svc = tower::service_fn(move |r: tonic::Request<HealthCheckRequest>| async move {
                if r.get_ref().service == "missing" {
                    return Err(tonic::Status::not_found("unknown service"));
                }
                Ok(tonic::Response::new(HealthCheckResponse { status }))
            });
            let mut grpc = tonic::server::Grpc::new(WireCodec::<
                HealthCheckResponse,
                HealthCheckRequest,
            >::default());
            Ok(grpc.unary(svc, req).await)
        })
    }

    impl tower::Service<HttpReq> for Health {
        type Response = HttpResp;
        type Error = std::convert::Infallible;
        type Future = tonic::codegen::BoxFuture<HttpResp, std::convert::Infallible>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: HttpReq) -> Self::Future {
            check(self.0, req)
        }
    }

    impl tower::Service<HttpReq> for Other {
        type Response = HttpResp;
        type Error = std::convert::Infallible;
        type Future = tonic::codegen::BoxFuture<HttpResp, std::convert::Infallible>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: HttpReq) -> Self::Future {
            check(1, req)
        }
    }

    async fn grpc_server(health: Option<i32>) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let incoming = tonic::transport::server::TcpIncoming::from(l);
        tokio::spawn(async move {
            let mut b = tonic::transport::Server::builder();
            let _ = match health {
                Some(s) => b.add_service(Health(s)).serve_with_incoming(incoming).await,
                None => b.add_service(Other).serve_with_incoming(incoming).await,
            };
        });
        port
    }

    async fn run_grpc(port: u16, service: Option<&str>) -> ProbeOutcome {
        let c = container(None, None, None);
        let a = GRPCAction {
            port: i32::from(port),
            service: service.map(str::to_string),
        };
        run(
            &ProbeHandler::Grpc(&a),
            &target(&c),
            &FakeExec::new(vec![Ok((0, vec![], vec![]))]),
            SECOND,
        )
        .await
    }

    #[tokio::test]
    async fn grpc_probes() {
        let serving = grpc_server(Some(1)).await;
        assert_eq!(run_grpc(serving, None).await, ProbeOutcome::Success);
        assert_eq!(run_grpc(serving, Some("app")).await, ProbeOutcome::Success);
        assert_eq!(
            run_grpc(serving, Some("missing")).await,
            ProbeOutcome::Failure(
                "error: health rpc probe failed: rpc error: code = NotFound desc = unknown service"
                    .into()
            )
        );
        let not_serving = grpc_server(Some(2)).await;
        assert_eq!(
            run_grpc(not_serving, None).await,
            ProbeOutcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        let other = grpc_server(None).await;
        match run_grpc(other, None).await {
            ProbeOutcome::Failure(m) => assert!(
                m.starts_with("error: this server does not implement the grpc health protocol (grpc.health.v1.Health)"),
                "{m}"
            ),
            o => panic!("{o:?}"),
        }
        let closed = closed_port().await;
        let start = Instant::now();
        assert_eq!(
            run_grpc(closed, None).await,
            ProbeOutcome::Failure(format!(
                "timeout: failed to connect service \"127.0.0.1:{closed}\" within 1s: context deadline exceeded"
            ))
        );
        assert!(start.elapsed() < Duration::from_secs(3));
        assert_eq!(
            run_grpc(0, None).await,
            ProbeOutcome::Unknown("invalid port number: 0".into())
        );
    }

    #[test]
    fn handler_of_probe() {
        let p = Probe {
            tcp_socket: Some(TCPSocketAction::default()),
            ..Default::default()
        };
        assert!(matches!(
            ProbeHandler::of(&p),
            Some(ProbeHandler::TcpSocket(_))
        ));
        assert!(ProbeHandler::of(&Probe::default()).is_none());
    }
}
