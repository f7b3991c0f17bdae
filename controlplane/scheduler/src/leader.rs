//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's algorithm and
//! kube-scheduler's timings: a lease held by someone else is taken over only when its record
//! has not changed for `lease_duration` of *local* time; the leader renews every `retry_period`
//! and gives up when it has not renewed for `renew_deadline`.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

/// Leader election settings.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Lease namespace (`kube-system`).
    pub namespace: String,
    /// Lease name (`kube-scheduler`).
    pub name: String,
    /// This instance's identity (holderIdentity).
    pub identity: String,
    /// leaseDuration (15 s).
    pub lease_duration: Duration,
    /// renewDeadline (10 s).
    pub renew_deadline: Duration,
    /// retryPeriod (2 s).
    pub retry_period: Duration,
}

impl LeaderConfig {
    /// kube-scheduler's defaults for `identity`.
    pub fn scheduler(identity: &str) -> Self {
        Self {
            namespace: "kube-system".into(),
            name: "kube-scheduler".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The leader could not renew within the renew deadline.
    #[error("lost the lease {0}: not renewed within the renew deadline")]
    Lost(String),
}

/// The last lease record seen and when (local clock) it was first seen.
#[derive(Debug, Default)]
pub struct Observed {
    record: Option<(Option<String>, Option<MicroTime>)>,
    at: Option<Instant>,
}

/// One acquire-or-renew attempt; `Ok(true)` when this instance holds the lease afterwards.
pub async fn try_acquire_or_renew(
    api: &Api<Lease>,
    cfg: &LeaderConfig,
    obs: &mut Observed,
) -> Result<bool, kube::Error> {
    let now = MicroTime(Timestamp::now());
    let secs = cfg.lease_duration.as_secs() as i32;
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let record = (spec.holder_identity.clone(), spec.renew_time.clone());
    if obs.record.as_ref() != Some(&record) {
        obs.record = Some(record);
        obs.at = Some(Instant::now());
    }
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let mine = holder == cfg.identity;
    let duration = spec
        .lease_duration_seconds
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .unwrap_or(cfg.lease_duration);
    let fresh = obs.at.is_some_and(|t| t.elapsed() < duration);
    if !holder.is_empty() && !mine && fresh {
        return Ok(false);
    }
    let mut new = spec.clone();
    new.holder_identity = Some(cfg.identity.clone());
    new.lease_duration_seconds = Some(secs);
    new.renew_time = Some(now.clone());
    if !mine {
        new.acquire_time = Some(now);
        new.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    lease.spec = Some(new);
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(l) => {
            let s = l.spec.unwrap_or_default();
            obs.record = Some((s.holder_identity, s.renew_time));
            obs.at = Some(Instant::now());
            Ok(true)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits until this instance holds the lease.
pub async fn acquire(client: kube::Client, cfg: &LeaderConfig, obs: &mut Observed) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    loop {
        match try_acquire_or_renew(&api, cfg, obs).await {
            Ok(true) => {
                tracing::info!(identity = %cfg.identity, "acquired lease {}/{}", cfg.namespace, cfg.name);
                return;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("leader election: {e}"),
        }
        tokio::time::sleep(cfg.retry_period).await;
    }
}

/// Renews the held lease until that fails for `renew_deadline`; then returns the error.
pub async fn hold(client: kube::Client, cfg: &LeaderConfig, obs: &mut Observed) -> LeaderError {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut last = Instant::now();
    loop {
        tokio::time::sleep(cfg.retry_period).await;
        let left = cfg.renew_deadline.saturating_sub(last.elapsed());
        match tokio::time::timeout(left, try_acquire_or_renew(&api, cfg, obs)).await {
            Ok(Ok(true)) => last = Instant::now(),
            Ok(Ok(false)) => {
                return LeaderError::Lost(format!("{}/{}", cfg.namespace, cfg.name));
            }
            Ok(Err(e)) => tracing::warn!("renewing lease: {e}"),
            Err(_) => {}
        }
        if last.elapsed() >= cfg.renew_deadline {
            return LeaderError::Lost(format!("{}/{}", cfg.namespace, cfg.name));
        }
    }
}
