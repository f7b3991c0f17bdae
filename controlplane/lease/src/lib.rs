//! Leader election through a `coordination.k8s.io/v1` Lease, as client-go's leaderelection:
//! acquire when the lease is free or its holder stopped renewing for a lease duration (measured
//! on our clock from when we last saw the record change), renew every retry period, give up
//! leadership when renewals fail for the renew deadline. Shared by the scheduler
//! (`kube-system/kube-scheduler`) and the controller manager (`kube-system/kube-controller-manager`).
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// Renewals failed for longer than the renew deadline, or another holder took the lease.
    #[error("lost the lease {0}")]
    Lost(String),
}

/// Lease parameters (upstream's defaults through [`LeaseConfig::new`]).
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease namespace.
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// Our identity (the holder we write).
    pub identity: String,
    /// How long a lease holds without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up.
    pub renew_deadline: Duration,
    /// Time between attempts.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// `kube-system/<name>` with kube-scheduler's and kube-controller-manager's timings: 15 s
    /// lease, 10 s renew deadline, 2 s retry.
    pub fn new(name: &str, identity: &str) -> Self {
        Self {
            namespace: "kube-system".into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A lease record as last seen: holder and renew time.
type Record = (Option<String>, Option<MicroTime>);

/// One candidate's view of the lease.
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// The last record seen (holder, renew time) and when we first saw it.
    observed: Option<(Record, Instant)>,
}

fn now_micro() -> MicroTime {
    MicroTime(Timestamp::now())
}

impl Elector {
    /// A candidate for `cfg`'s lease.
    pub fn new(client: kube::Client, cfg: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
        }
    }

    /// One attempt: `Ok(true)` when we hold the lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let lease_secs = self.cfg.lease_duration.as_secs() as i32;
        let current = match self.api.get_opt(&self.cfg.name).await? {
            Some(l) => l,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.cfg.identity.clone()),
                        lease_duration_seconds: Some(lease_secs),
                        acquire_time: Some(now_micro()),
                        renew_time: Some(now_micro()),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                };
            }
        };
        let spec = current.spec.clone().unwrap_or_default();
        let record = (spec.holder_identity.clone(), spec.renew_time.clone());
        let now = Instant::now();
        match &self.observed {
            Some((r, _)) if *r == record => {}
            _ => self.observed = Some((record, now)),
        }
        let seen_at = self.observed.as_ref().map_or(now, |(_, t)| *t);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.cfg.identity;
        let duration = spec
            .lease_duration_seconds
            .map_or(self.cfg.lease_duration, |s| {
                Duration::from_secs(s.max(0) as u64)
            });
        if !ours && !holder.is_empty() && now.duration_since(seen_at) < duration {
            return Ok(false);
        }
        let mut new_spec = spec.clone();
        if !ours {
            new_spec.acquire_time = Some(now_micro());
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        new_spec.holder_identity = Some(self.cfg.identity.clone());
        new_spec.lease_duration_seconds = Some(lease_secs);
        new_spec.renew_time = Some(now_micro());
        let mut lease = current;
        lease.spec = Some(new_spec);
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(l) => {
                let s = l.spec.unwrap_or_default();
                self.observed = Some(((s.holder_identity, s.renew_time), Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until we hold the lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(identity = %self.cfg.identity, "acquired lease {}/{}", self.cfg.namespace, self.cfg.name);
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!("lease: {e}"),
            }
            tokio::time::sleep(self.cfg.retry_period).await;
        }
    }

    /// Renews until renewals fail for the renew deadline (or someone else holds the lease).
    pub async fn hold(&mut self) -> LeaderError {
        let mut last = Instant::now();
        loop {
            tokio::time::sleep(self.cfg.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last = Instant::now(),
                Ok(false) => {
                    return LeaderError::Lost(format!("{}/{}", self.cfg.namespace, self.cfg.name))
                }
                Err(e) => {
                    tracing::warn!("lease renewal: {e}");
                    if last.elapsed() >= self.cfg.renew_deadline {
                        return LeaderError::Lost(format!(
                            "{}/{}",
                            self.cfg.namespace, self.cfg.name
                        ));
                    }
                }
            }
        }
    }
}
