//! Container lifecycle hooks: `postStart` and `preStop` (kubelet's
//! `pkg/kubelet/lifecycle/handlers.go` and the hook calls in `kuberuntime_container.go`).
//!
//! A hook is exec (CRI `ExecSync` through [`Exec`]), httpGet (the prober's HTTP client: same
//! request building, user agent `kube-lifecycle/1.33`, HTTPS without verification, same-host
//! redirects; any response counts as success, as upstream, and an HTTPS request answered in
//! plain HTTP is retried over HTTP) or sleep. A `tcpSocket` handler is accepted by the API but
//! not supported by kubelet; it fails at run time.
//!
//! How kubelet uses them: **postStart** runs right after `StartContainer`; when it fails the
//! container is killed (event `FailedPostStartHook`, `PostStartHook failed`; the container then
//! waits with reason `PostStartHookError` and the hook's message). **preStop** runs before
//! `StopContainer` and consumes the grace period: it gets at most the grace period, a failure
//! only records `FailedPreStopHook` (`PreStopHook failed`), and whatever is left — at least
//! [`MIN_STOP_GRACE`] — goes to `StopContainer` ([`run_pre_stop`]). The event messages do not
//! carry the hook's output so that secrets do not leak; the [`HookError`] text (the detailed
//! message kubelet logs and puts in the waiting state) does.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{LifecycleHandler, Pod};

use crate::probe::{
    exec_command, http_get, CommandError, Exec, HttpRequest, Scheme, Target, HTTP_TO_HTTPS,
};

/// The least time `StopContainer` gets after a preStop hook (kubelet's
/// `minimumGracePeriodInSeconds`).
pub const MIN_STOP_GRACE: Duration = Duration::from_secs(2);

/// The waiting reason of a container whose postStart hook failed (`ErrPostStartHook`).
pub const POST_START_HOOK_ERROR: &str = "PostStartHookError";

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookKind {
    /// `lifecycle.postStart`.
    PostStart,
    /// `lifecycle.preStop`.
    PreStop,
}

impl HookKind {
    /// The reason of the Warning event kubelet records when the hook fails.
    pub fn failed_reason(self) -> &'static str {
        match self {
            HookKind::PostStart => "FailedPostStartHook",
            HookKind::PreStop => "FailedPreStopHook",
        }
    }

    /// The message of that event (deliberately without the hook's output).
    pub fn failed_message(self) -> &'static str {
        match self {
            HookKind::PostStart => "PostStartHook failed",
            HookKind::PreStop => "PreStopHook failed",
        }
    }
}

/// A failed hook, worded as kubelet's handler runner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The command failed, did not finish in time, or could not run.
    #[error(
        "Exec lifecycle hook ([{command}]) for Container {container:?} in Pod {pod:?} failed - error: {error}, message: {output}"
    )]
    Exec {
        /// The command, space-separated.
        command: String,
        /// The container's name.
        container: String,
        /// The pod, `name_namespace(uid)`.
        pod: String,
        /// What went wrong (`command 'false' exited with 1: `).
        error: String,
        /// The command's output, quoted.
        output: String,
    },
    /// The request failed (no response).
    #[error(
        "HTTP lifecycle hook ({path}) for Container {container:?} in Pod {pod:?} failed - error: {error}"
    )]
    Http {
        /// The request's path.
        path: String,
        /// The container's name.
        container: String,
        /// The pod, `name_namespace(uid)`.
        pod: String,
        /// What went wrong (`Get "http://...": dial tcp ...: connect: connection refused`).
        error: String,
    },
    /// The sleep was cut short.
    #[error(
        "Sleep lifecycle hook ({seconds}) for Container {container:?} in Pod {pod:?} failed - error: {error}"
    )]
    Sleep {
        /// `sleep.seconds`.
        seconds: i64,
        /// The container's name.
        container: String,
        /// The pod, `name_namespace(uid)`.
        pod: String,
        /// What went wrong.
        error: String,
    },
    /// The handler has no supported action (`tcpSocket`, or nothing).
    #[error("Cannot run handler: invalid handler: {0}")]
    Invalid(String),
}

/// The pod as kubelet names it in messages: `name_namespace(uid)`.
pub fn pod_label(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// Runs one hook, giving up after `timeout` (`Duration::ZERO`: no limit, as kubelet runs
/// postStart; for preStop see [`run_pre_stop`]).
pub async fn run_hook(
    handler: &LifecycleHandler,
    target: &Target<'_>,
    exec: &impl Exec,
    timeout: Duration,
) -> Result<(), HookError> {
    let container = target.container.name.clone();
    let pod = target.pod.to_string();
    if let Some(a) = &handler.exec {
        let cmd = a.command.clone().unwrap_or_default();
        let command = cmd.join(" ");
        let fail = |error: String, output: &str| HookError::Exec {
            command: command.clone(),
            container: container.clone(),
            pod: pod.clone(),
            error,
            output: crate::env::go_quote(output),
        };
        return match exec_command(exec, target.container_id, cmd, timeout).await {
            Ok(o) if o.code == 0 => Ok(()),
            // kubelet's runtime wraps a non-zero exit with the command and its stderr; the
            // combined output follows.
            Ok(o) => Err(fail(
                format!(
                    "command '{command}' exited with {}: {}",
                    o.code,
                    String::from_utf8_lossy(&o.stderr)
                ),
                &o.combined(),
            )),
            Err(CommandError::TimedOut(e)) | Err(CommandError::Failed(e)) => Err(fail(e, "")),
        };
    }
    if let Some(a) = &handler.http_get {
        let path = a.path.clone().unwrap_or_default();
        let fail = |error: String| HookError::Http {
            path: path.clone(),
            container: container.clone(),
            pod: pod.clone(),
            error,
        };
        if a.host.as_deref().unwrap_or_default().is_empty() && target.pod_ip.is_empty() {
            return Err(fail("failed to find networking container".into()));
        }
        let mut req =
            HttpRequest::new(a, target.container, target.pod_ip, "lifecycle").map_err(fail)?;
        let deadline = (!timeout.is_zero()).then(|| tokio::time::Instant::now() + timeout);
        return match http_get(&req, deadline).await {
            Ok(_) => Ok(()),
            Err(e) if req.url.scheme == Scheme::Https && e.ends_with(HTTP_TO_HTTPS) => {
                req.url.scheme = Scheme::Http;
                req.headers.retain(|(n, _)| n != "Authorization");
                http_get(&req, deadline).await.map_err(|_| fail(e))?;
                tracing::warn!(
                    pod = %pod,
                    container = %container,
                    "LifecycleHTTPFallback: request to HTTPS lifecycle hook {}:{} got HTTP response, retry with HTTP succeeded",
                    req.url.host,
                    req.url.port
                );
                Ok(())
            }
            Err(e) => Err(fail(e)),
        };
    }
    if let Some(s) = &handler.sleep {
        let want = Duration::from_secs(u64::try_from(s.seconds).unwrap_or(0));
        if timeout.is_zero() || want <= timeout {
            tokio::time::sleep(want).await;
            return Ok(());
        }
        tokio::time::sleep(timeout).await;
        return Err(HookError::Sleep {
            seconds: s.seconds,
            container,
            pod,
            error: "container terminated before sleep hook finished".into(),
        });
    }
    Err(HookError::Invalid(format!("{handler:?}")))
}

/// Runs a preStop hook as kubelet's `killContainer` does: not at all when `grace` is zero; else
/// for at most `grace`. Returns the time left for `StopContainer` ([`pre_stop_budget`]) and the
/// hook's error if it failed before the grace period ran out (running out is not a failure
/// kubelet reports; it just stops waiting).
pub async fn run_pre_stop(
    handler: &LifecycleHandler,
    target: &Target<'_>,
    exec: &impl Exec,
    grace: Duration,
) -> (Duration, Option<HookError>) {
    if grace.as_secs() == 0 {
        return (MIN_STOP_GRACE, None);
    }
    let started = Instant::now();
    let r = run_hook(handler, target, exec, grace).await;
    let now = Instant::now();
    let err = r.err().filter(|_| now.duration_since(started) < grace);
    (pre_stop_budget(grace, started, now), err)
}

/// What is left of `grace` for `StopContainer` after a preStop hook that started at `started`
/// (whole seconds, as kubelet counts), never less than [`MIN_STOP_GRACE`].
pub fn pre_stop_budget(grace: Duration, started: Instant, now: Instant) -> Duration {
    let spent = now.saturating_duration_since(started).as_secs();
    Duration::from_secs(grace.as_secs().saturating_sub(spent)).max(MIN_STOP_GRACE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::tests::{closed_port, response, serve, silent_server, target, FakeExec};
    use crate::probe::ExecError;
    use k8s_openapi::api::core::v1::{
        Container, ExecAction, HTTPGetAction, SleepAction, TCPSocketAction,
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn app() -> Container {
        Container {
            name: "app".into(),
            ..Default::default()
        }
    }

    fn exec_hook(cmd: &[&str]) -> LifecycleHandler {
        LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(cmd.iter().map(|s| s.to_string()).collect()),
            }),
            ..Default::default()
        }
    }

    fn http_hook(port: u16, path: &str, scheme: Option<&str>) -> LifecycleHandler {
        LifecycleHandler {
            http_get: Some(HTTPGetAction {
                path: Some(path.into()),
                port: IntOrString::Int(i32::from(port)),
                scheme: scheme.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const LONG: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn exec_hooks() {
        let c = app();
        let t = target(&c);
        let ok = FakeExec::new(vec![Ok((0, vec![], vec![]))]);
        assert_eq!(run_hook(&exec_hook(&["true"]), &t, &ok, LONG).await, Ok(()));
        assert_eq!(ok.seen.lock().unwrap()[0].2, 10);

        let failing = FakeExec::new(vec![Ok((3, b"out\n".to_vec(), b"boom".to_vec()))]);
        let err = run_hook(&exec_hook(&["sh", "-c", "exit 3"]), &t, &failing, LONG)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Exec lifecycle hook ([sh -c exit 3]) for Container \"app\" in Pod \"web_default(uid-1)\" failed - error: command 'sh -c exit 3' exited with 3: boom, message: \"out\\nboom\""
        );
        // Not retried: a hook runs once.
        assert_eq!(failing.calls.load(std::sync::atomic::Ordering::SeqCst), 1);

        let timeout = FakeExec::new(vec![Err(ExecError::Timeout)]);
        let err = run_hook(&exec_hook(&["sleep", "60"]), &t, &timeout, LONG)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Exec lifecycle hook ([sleep 60]) for Container \"app\" in Pod \"web_default(uid-1)\" failed - error: command \"sleep 60\" timed out, message: \"\""
        );

        let broken = FakeExec::new(vec![Err(ExecError::Failed("container not running".into()))]);
        assert!(matches!(
            run_hook(&exec_hook(&["x"]), &t, &broken, LONG).await,
            Err(HookError::Exec { error, .. }) if error == "container not running"
        ));
    }

    #[tokio::test]
    async fn http_hooks() {
        let c = app();
        let t = target(&c);
        let exec = FakeExec::new(vec![Ok((0, vec![], vec![]))]);
        // Any response will do, as upstream (no status check).
        let (port, seen) = serve(|_| response(500, "", "no")).await;
        assert_eq!(
            run_hook(&http_hook(port, "/shutdown", None), &t, &exec, LONG).await,
            Ok(())
        );
        let head = seen.lock().unwrap()[0].clone();
        assert!(head.starts_with("GET /shutdown HTTP/1.1\r\n"), "{head}");
        assert!(
            head.contains("User-Agent: kube-lifecycle/1.33\r\n"),
            "{head}"
        );

        let closed = closed_port().await;
        let err = run_hook(&http_hook(closed, "/shutdown", None), &t, &exec, LONG)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("HTTP lifecycle hook (/shutdown) for Container \"app\" in Pod \"web_default(uid-1)\" failed - error: Get \"http://127.0.0.1:{closed}/shutdown\": dial tcp 127.0.0.1:{closed}: connect: connection refused")
        );

        // HTTPS answered in plain HTTP: retried over HTTP, without Authorization.
        let (port, seen) = serve(|_| response(200, "", "")).await;
        let mut h = http_hook(port, "/x", Some("HTTPS"));
        h.http_get.as_mut().unwrap().http_headers =
            Some(vec![k8s_openapi::api::core::v1::HTTPHeader {
                name: "Authorization".into(),
                value: "Bearer s3cret".into(),
            }]);
        assert_eq!(run_hook(&h, &t, &exec, LONG).await, Ok(()));
        {
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 2);
            assert!(seen[1].starts_with("GET /x HTTP/1.1"), "{}", seen[1]);
            assert!(!seen[1].contains("s3cret"));
        }

        // No pod IP and no host.
        let no_ip = Target { pod_ip: "", ..t };
        assert!(matches!(
            run_hook(&http_hook(port, "/x", None), &no_ip, &exec, LONG).await,
            Err(HookError::Http { error, .. }) if error == "failed to find networking container"
        ));

        // A hung server is cut off at the timeout.
        let silent = silent_server().await;
        let start = Instant::now();
        assert!(run_hook(
            &http_hook(silent, "/x", None),
            &t,
            &exec,
            Duration::from_millis(300)
        )
        .await
        .is_err());
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn sleep_and_invalid_hooks() {
        let c = app();
        let t = target(&c);
        let exec = FakeExec::new(vec![Ok((0, vec![], vec![]))]);
        let sleep = |seconds| LifecycleHandler {
            sleep: Some(SleepAction { seconds }),
            ..Default::default()
        };
        assert_eq!(run_hook(&sleep(0), &t, &exec, LONG).await, Ok(()));
        let start = Instant::now();
        let err = run_hook(&sleep(30), &t, &exec, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(
            err.to_string(),
            "Sleep lifecycle hook (30) for Container \"app\" in Pod \"web_default(uid-1)\" failed - error: container terminated before sleep hook finished"
        );
        let tcp = LifecycleHandler {
            tcp_socket: Some(TCPSocketAction::default()),
            ..Default::default()
        };
        let err = run_hook(&tcp, &t, &exec, LONG).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("Cannot run handler: invalid handler: "),
            "{err}"
        );
        assert_eq!(exec.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn pre_stop() {
        let c = app();
        let t = target(&c);
        let exec = FakeExec::new(vec![Ok((1, vec![], b"nope".to_vec()))]);
        // A quick failure is reported; the grace period is barely touched.
        let (left, err) = run_pre_stop(&exec_hook(&["false"]), &t, &exec, LONG).await;
        assert_eq!(left, LONG);
        assert!(matches!(err, Some(HookError::Exec { .. })));
        // Zero grace: the hook does not run.
        let (left, err) = run_pre_stop(&exec_hook(&["false"]), &t, &exec, Duration::ZERO).await;
        assert_eq!((left, err), (MIN_STOP_GRACE, None));
        assert_eq!(exec.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A hook that outlasts the grace period: no error, the minimum is left.
        let sleep = LifecycleHandler {
            sleep: Some(SleepAction { seconds: 60 }),
            ..Default::default()
        };
        let (left, err) = run_pre_stop(&sleep, &t, &exec, Duration::from_secs(1)).await;
        assert_eq!((left, err), (MIN_STOP_GRACE, None));
    }

    #[test]
    fn budget() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let cases = [
            (30, Duration::ZERO, 30),
            (30, Duration::from_millis(10_500), 20),
            (30, s(28), 2),
            (30, s(29), 2),
            (30, s(45), 2),
            (0, Duration::ZERO, 2),
            (1, Duration::ZERO, 2),
        ];
        for (grace, spent, want) in cases {
            assert_eq!(
                pre_stop_budget(s(grace), t0, t0 + spent),
                s(want),
                "{grace} {spent:?}"
            );
        }
    }

    #[test]
    fn names() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.uid = Some("uid-1".into());
        assert_eq!(pod_label(&pod), "web_default(uid-1)");
        assert_eq!(HookKind::PostStart.failed_reason(), "FailedPostStartHook");
        assert_eq!(HookKind::PostStart.failed_message(), "PostStartHook failed");
        assert_eq!(HookKind::PreStop.failed_reason(), "FailedPreStopHook");
        assert_eq!(HookKind::PreStop.failed_message(), "PreStopHook failed");
    }
}
