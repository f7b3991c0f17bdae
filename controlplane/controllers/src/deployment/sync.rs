//! One sync of one Deployment (upstream's `syncDeployment`): claim ReplicaSets, then either
//! only scale (paused, or a scaling event) or roll out by strategy, then write status.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;

use super::progress::{self, condition};
use super::util::{
    self, desired_annotation, is_rolling, replicas, rs_available, rs_replicas, REVISION,
};
use crate::claim::{self, ClaimError, OwnerInfo};
use crate::ctx::Ctx;
use crate::podutil::now;
use crate::selector::Selector;

/// Errors of one Deployment sync.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    /// Adoption or release of ReplicaSets failed.
    #[error("claim replica sets: {0}")]
    Claim(#[from] ClaimError),
    /// An API call failed.
    #[error("{0}: {1}")]
    Api(&'static str, kube::Error),
    /// The new ReplicaSet's name is taken by a different one; collisionCount was raised.
    #[error("hash collision on replica set {0}")]
    Collision(String),
}

/// The state of one sync.
pub struct Run {
    /// Shared state.
    pub ctx: Arc<Ctx>,
    /// The Deployment, updated as the sync writes it.
    pub d: Deployment,
    /// Its namespace.
    pub ns: String,
    /// The ReplicaSets it owns, updated as the sync writes them.
    pub rs_list: Vec<ReplicaSet>,
    /// ReplicaSets API.
    pub rs_api: Api<ReplicaSet>,
    /// Deployments API.
    pub d_api: Api<Deployment>,
    /// When to look again (progress deadline).
    pub requeue: Option<Duration>,
}

fn active(rss: &[ReplicaSet]) -> Vec<ReplicaSet> {
    rss.iter().filter(|r| rs_replicas(r) > 0).cloned().collect()
}

impl Run {
    /// The Deployment's template.
    pub fn template(&self) -> PodTemplateSpec {
        self.d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default()
    }

    /// The current status.
    pub fn status(&self) -> &DeploymentStatus {
        static EMPTY: std::sync::OnceLock<DeploymentStatus> = std::sync::OnceLock::new();
        self.d
            .status
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(DeploymentStatus::default))
    }

    /// The status, to change before [`Run::write_status`].
    pub fn status_mut(&mut self) -> &mut DeploymentStatus {
        self.d.status.get_or_insert_with(Default::default)
    }

    /// Writes the status subresource.
    pub async fn write_status(&mut self) -> Result<(), DeploymentError> {
        let patch = progress::to_patch(self.status());
        let out = self
            .d_api
            .patch_status(
                &self.d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| DeploymentError::Api("update deployment status", e))?;
        self.d.status = out.status;
        Ok(())
    }

    /// Sets the Deployment's revision annotation (`SetDeploymentRevision`) if it differs.
    pub async fn set_revision(&mut self, rev: &str) -> Result<(), DeploymentError> {
        let cur = self
            .d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION));
        if cur.map(String::as_str) == Some(rev) {
            return Ok(());
        }
        let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
        let out = self
            .d_api
            .patch(
                &self.d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| DeploymentError::Api("update deployment revision", e))?;
        self.d.metadata.annotations = out.metadata.annotations;
        Ok(())
    }

    /// Replaces the cached copy of a ReplicaSet after writing it.
    pub fn replace_rs(&mut self, rs: &ReplicaSet) {
        if let Some(slot) = self
            .rs_list
            .iter_mut()
            .find(|r| r.metadata.uid == rs.metadata.uid)
        {
            *slot = rs.clone();
        }
    }

    fn fresh(&self, rs: &ReplicaSet) -> ReplicaSet {
        self.rs_list
            .iter()
            .find(|r| r.metadata.uid == rs.metadata.uid)
            .cloned()
            .unwrap_or_else(|| rs.clone())
    }

    /// Writes the status when `new` differs from the current one.
    async fn update_status(&mut self, new: DeploymentStatus) -> Result<(), DeploymentError> {
        if progress::normalize(self.status()) != new {
            self.d.status = Some(new);
            self.write_status().await?;
        }
        Ok(())
    }

    /// `syncRolloutStatus`: status with progress estimation, then when to look again.
    async fn sync_rollout_status(
        &mut self,
        new_rs: Option<&ReplicaSet>,
    ) -> Result<(), DeploymentError> {
        let all: Vec<ReplicaSet> = self.rs_list.clone();
        let refs: Vec<&ReplicaSet> = all.iter().collect();
        let new_rs = new_rs.map(|r| self.fresh(r));
        let s = progress::rollout_status(&self.d, &refs, new_rs.as_ref(), now());
        if progress::normalize(self.status()) == s {
            self.requeue = progress::requeue_stuck(&self.d, &s, now());
            return Ok(());
        }
        self.update_status(s).await
    }

    /// `syncDeploymentStatus`: counts and Available only.
    async fn sync_status(&mut self, new_rs: Option<&ReplicaSet>) -> Result<(), DeploymentError> {
        let all: Vec<ReplicaSet> = self.rs_list.clone();
        let refs: Vec<&ReplicaSet> = all.iter().collect();
        let new_rs = new_rs.map(|r| self.fresh(r));
        let s = progress::calculate(&self.d, &refs, new_rs.as_ref(), now());
        self.update_status(s).await
    }

    /// Upstream `checkPausedConditions`.
    async fn check_paused(&mut self) -> Result<(), DeploymentError> {
        if progress::progress_deadline(&self.d).is_none() {
            return Ok(());
        }
        let cond = progress::get(self.status(), "Progressing").cloned();
        if cond.as_ref().and_then(|c| c.reason.as_deref()) == Some(progress::TIMED_OUT) {
            return Ok(());
        }
        let paused_exists =
            cond.as_ref().and_then(|c| c.reason.as_deref()) == Some(progress::PAUSED);
        let paused = self.paused();
        let c = if paused && !paused_exists {
            condition(
                "Progressing",
                "Unknown",
                progress::PAUSED,
                "Deployment is paused".into(),
                now(),
            )
        } else if !paused && paused_exists {
            condition(
                "Progressing",
                "Unknown",
                progress::RESUMED,
                "Deployment is resumed".into(),
                now(),
            )
        } else {
            return Ok(());
        };
        progress::set(self.status_mut(), c);
        self.write_status().await
    }

    fn paused(&self) -> bool {
        self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
    }

    /// Upstream `isScalingEvent`: an active ReplicaSet was sized for another replica count.
    async fn is_scaling_event(&mut self) -> Result<bool, DeploymentError> {
        let (new, old) = self.all_replica_sets(false).await?;
        let r = replicas(&self.d);
        Ok(old
            .iter()
            .chain(new.iter())
            .map(|x| self.fresh(x))
            .filter(|x| rs_replicas(x) > 0)
            .any(|x| desired_annotation(&x).is_some_and(|d| d != r)))
    }

    /// Upstream `sync`: scale only, then status.
    async fn sync_scale(&mut self) -> Result<(), DeploymentError> {
        let (new, old) = self.all_replica_sets(false).await?;
        self.scale_all(new.as_ref(), &old).await?;
        if self.paused() {
            let old: Vec<ReplicaSet> = old.iter().map(|r| self.fresh(r)).collect();
            self.cleanup(&old).await?;
        }
        self.sync_status(new.as_ref()).await
    }

    /// Upstream `scale`.
    async fn scale_all(
        &mut self,
        new: Option<&ReplicaSet>,
        old: &[ReplicaSet],
    ) -> Result<(), DeploymentError> {
        let r = replicas(&self.d);
        let new = new.map(|x| self.fresh(x));
        let old: Vec<ReplicaSet> = old.iter().map(|x| self.fresh(x)).collect();
        // One active ReplicaSet (or none: the newest) takes the whole size.
        let mut by_newest = old.clone();
        by_newest.sort_by(|a, b| util::by_creation(b, a));
        let mut everything: Vec<ReplicaSet> = by_newest.clone();
        everything.extend(new.clone());
        let actives = active(&everything);
        let target = match actives.len() {
            0 => new.clone().or_else(|| by_newest.first().cloned()),
            1 => actives.first().cloned(),
            _ => None,
        };
        if let Some(t) = target {
            if rs_replicas(&t) != r {
                let op = if rs_replicas(&t) < r { "up" } else { "down" };
                self.scale(&t, r, op).await?;
            }
            return Ok(());
        }
        // The new ReplicaSet is saturated: old ones go to zero.
        let saturated = new.as_ref().is_some_and(|n| {
            desired_annotation(n) == Some(r) && rs_replicas(n) == r && rs_available(n) == r
        });
        if saturated {
            for o in active(&old) {
                self.scale(&o, 0, "down").await?;
            }
            return Ok(());
        }
        if is_rolling(&self.d) {
            let refs: Vec<&ReplicaSet> = actives.iter().collect();
            let (sizes, up) = util::proportional_sizes(&self.d, &refs);
            let op = if up { "up" } else { "down" };
            for (name, size) in sizes {
                if let Some(rs) = actives.iter().find(|x| x.name_any() == name) {
                    let rs = self.fresh(rs);
                    self.scale(&rs, size, op).await?;
                }
            }
        }
        Ok(())
    }

    /// Upstream `rolloutRolling`.
    async fn rolling(&mut self) -> Result<(), DeploymentError> {
        let (new, old) = self.all_replica_sets(true).await?;
        let Some(new) = new else {
            return Ok(());
        };
        // Scale up the new ReplicaSet.
        let r = replicas(&self.d);
        let n = self.fresh(&new);
        let all: Vec<ReplicaSet> = self.rs_list.clone();
        let refs: Vec<&ReplicaSet> = all.iter().collect();
        let target = if rs_replicas(&n) > r {
            Some(r)
        } else if rs_replicas(&n) == r {
            None
        } else {
            Some(util::new_rs_new_replicas(&self.d, &refs, &n))
        };
        if let Some(t) = target.filter(|t| *t != rs_replicas(&n)) {
            let op = if t > rs_replicas(&n) { "up" } else { "down" };
            self.scale(&n, t, op).await?;
            return self.sync_rollout_status(Some(&new)).await;
        }
        // Scale down old ReplicaSets.
        if self.reconcile_old(&new, &old).await? {
            return self.sync_rollout_status(Some(&new)).await;
        }
        if progress::complete(&self.d, self.status()) {
            let old: Vec<ReplicaSet> = old.iter().map(|x| self.fresh(x)).collect();
            self.cleanup(&old).await?;
        }
        self.sync_rollout_status(Some(&new)).await
    }

    /// Upstream `reconcileOldReplicaSets`: whether anything was scaled down.
    async fn reconcile_old(
        &mut self,
        new: &ReplicaSet,
        old: &[ReplicaSet],
    ) -> Result<bool, DeploymentError> {
        let old: Vec<ReplicaSet> = active(&old.iter().map(|x| self.fresh(x)).collect::<Vec<_>>());
        let old_refs: Vec<&ReplicaSet> = old.iter().collect();
        if util::replica_count(&old_refs) == 0 {
            return Ok(false);
        }
        let new = self.fresh(new);
        let all: Vec<ReplicaSet> = self.rs_list.clone();
        let all_refs: Vec<&ReplicaSet> = all.iter().collect();
        let max = util::max_scaled_down(&self.d, &all_refs, Some(&new));
        if max <= 0 {
            return Ok(false);
        }
        let (sizes, cleaned) = util::cleanup_unhealthy(&old_refs, max);
        for (name, size) in sizes {
            if let Some(rs) = old.iter().find(|x| x.name_any() == name) {
                let rs = self.fresh(rs);
                self.scale(&rs, size, "down").await?;
            }
        }
        let old: Vec<ReplicaSet> = old.iter().map(|x| self.fresh(x)).collect();
        let old_refs: Vec<&ReplicaSet> = old.iter().collect();
        let mut all: Vec<&ReplicaSet> = old_refs.clone();
        all.push(&new);
        let (sizes, scaled) = util::scale_down_old(&self.d, &all, &old_refs);
        for (name, size) in sizes {
            if let Some(rs) = old.iter().find(|x| x.name_any() == name) {
                let rs = self.fresh(rs);
                self.scale(&rs, size, "down").await?;
            }
        }
        Ok(cleaned + scaled > 0)
    }

    /// Upstream `rolloutRecreate`.
    async fn recreate(&mut self) -> Result<(), DeploymentError> {
        let (mut new, old) = self.all_replica_sets(false).await?;
        let mut scaled = false;
        for o in active(&old.iter().map(|x| self.fresh(x)).collect::<Vec<_>>()) {
            self.scale(&o, 0, "down").await?;
            scaled = true;
        }
        if scaled {
            return self.sync_rollout_status(new.as_ref()).await;
        }
        if self.old_pods_running(new.as_ref(), &old) {
            return self.sync_rollout_status(new.as_ref()).await;
        }
        if new.is_none() {
            new = self.all_replica_sets(true).await?.0;
        }
        if let Some(n) = &new {
            let n = self.fresh(n);
            let r = replicas(&self.d);
            if rs_replicas(&n) != r {
                self.scale(&n, r, "up").await?;
            }
        }
        if progress::complete(&self.d, self.status()) {
            let old: Vec<ReplicaSet> = old.iter().map(|x| self.fresh(x)).collect();
            self.cleanup(&old).await?;
        }
        self.sync_rollout_status(new.as_ref()).await
    }

    /// Upstream `oldPodsRunning`.
    fn old_pods_running(&self, new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> bool {
        let old: Vec<ReplicaSet> = old.iter().map(|x| self.fresh(x)).collect();
        let refs: Vec<&ReplicaSet> = old.iter().collect();
        if util::actual_count(&refs) > 0 {
            return true;
        }
        let new_uid = new.and_then(|n| n.metadata.uid.clone());
        self.rs_list
            .iter()
            .filter(|r| r.metadata.uid != new_uid)
            .flat_map(|r| {
                self.ctx
                    .pods
                    .owned_by(r.metadata.uid.as_deref().unwrap_or(""))
            })
            .any(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Failed" | "Succeeded")
                )
            })
    }
}

/// Syncs one Deployment; returns when to look again, if it must.
pub async fn sync(
    d: &Arc<Deployment>,
    ctx: &Arc<Ctx>,
) -> Result<Option<Duration>, DeploymentError> {
    let ns = d.namespace().unwrap_or_default();
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let d_api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = d
        .spec
        .as_ref()
        .map(|s| Selector::from_label_selector(&s.selector))
        .unwrap_or_default();
    if selector.is_empty() {
        ctx.event(
            &**d,
            true,
            "SelectingAll",
            "This deployment is selecting all pods. A non-empty selector is required.".into(),
        );
        let generation = d.metadata.generation.unwrap_or(0);
        let observed = d
            .status
            .as_ref()
            .and_then(|s| s.observed_generation)
            .unwrap_or(0);
        if generation > observed {
            let patch = json!({"status": {"observedGeneration": generation}});
            d_api
                .patch_status(
                    &d.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(|e| DeploymentError::Api("update deployment status", e))?;
        }
        return Ok(None);
    }
    let owner = OwnerInfo::of(&**d);
    let candidates = ctx.replica_sets.in_namespace(&ns);
    let claimed = claim::claim(&rs_api, &owner, &selector, candidates, || {
        claim::recheck_owner(&d_api, &owner)
    })
    .await?;
    let mut run = Run {
        ctx: ctx.clone(),
        d: (**d).clone(),
        ns,
        rs_list: claimed.iter().map(|r| (**r).clone()).collect(),
        rs_api,
        d_api,
        requeue: None,
    };
    if d.metadata.deletion_timestamp.is_some() {
        let (new, _) = run.all_replica_sets(false).await?;
        run.sync_status(new.as_ref()).await?;
        return Ok(None);
    }
    run.check_paused().await?;
    if run.paused() || run.is_scaling_event().await? {
        run.sync_scale().await?;
        return Ok(run.requeue);
    }
    if is_rolling(&run.d) {
        run.rolling().await?;
    } else {
        run.recreate().await?;
    }
    Ok(run.requeue)
}
