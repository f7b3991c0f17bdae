//! A Deployment's ReplicaSets: finding (or creating) the new one with its revision, scaling one,
//! and cleaning up history (upstream's `getNewReplicaSet`, `scaleReplicaSet`,
//! `cleanupDeployment`).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

use super::progress::{self, condition};
use super::sync::{DeploymentError, Run};
use super::util::{
    self, equal_ignore_hash, max_revision, max_surge, replicas, rs_replicas, HASH_LABEL, REVISION,
};
use crate::claim::{controller_of, OwnerInfo};
use crate::podutil::now;

impl Run {
    /// Splits `rs_list` into the ReplicaSet matching the template (oldest first wins) and all
    /// others, creating the new one when asked, and syncs revisions (upstream
    /// `getAllReplicaSetsAndSyncRevision`).
    pub async fn all_replica_sets(
        &mut self,
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), DeploymentError> {
        let template = self.template();
        let mut sorted = self.rs_list.clone();
        sorted.sort_by(util::by_creation);
        let new_idx = sorted.iter().position(|r| {
            r.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| equal_ignore_hash(t, &template))
        });
        let new = new_idx.map(|i| sorted.remove(i));
        let old = sorted;
        let new = self.new_replica_set(new, &old, create).await?;
        Ok((new, old))
    }

    async fn new_replica_set(
        &mut self,
        existing: Option<ReplicaSet>,
        old: &[ReplicaSet],
        create: bool,
    ) -> Result<Option<ReplicaSet>, DeploymentError> {
        let old_refs: Vec<&ReplicaSet> = old.iter().collect();
        let new_revision = max_revision(&old_refs) + 1;
        let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
        if let Some(existing) = existing {
            let mut ann = existing.metadata.annotations.clone().unwrap_or_default();
            let changed = util::set_new_rs_annotations(&self.d, &mut ann, new_revision, true);
            let rs_min_ready = existing.spec.as_ref().and_then(|s| s.min_ready_seconds);
            if changed || rs_min_ready.unwrap_or(0) != min_ready.unwrap_or(0) {
                let patch = json!({"metadata": {"annotations": ann}, "spec": {"minReadySeconds": min_ready.unwrap_or(0)}});
                let updated = self
                    .rs_api
                    .patch(
                        &existing.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .map_err(|e| DeploymentError::Api("update replica set", e))?;
                self.replace_rs(&updated);
                return Ok(Some(updated));
            }
            let rev = ann.get(REVISION).cloned().unwrap_or_default();
            self.set_revision(&rev).await?;
            if progress::progress_deadline(&self.d).is_some()
                && progress::get(self.status(), "Progressing").is_none()
            {
                let msg = format!("Found new replica set \"{}\"", existing.name_any());
                progress::set(
                    self.status_mut(),
                    condition("Progressing", "True", progress::FOUND_NEW_RS, msg, now()),
                );
                self.write_status().await?;
            }
            return Ok(Some(existing));
        }
        if !create {
            return Ok(None);
        }
        let mut template = self.template();
        let collision = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = util::template_hash(&template, collision);
        let meta = template.metadata.get_or_insert_with(Default::default);
        let mut labels = meta.labels.clone().unwrap_or_default();
        labels.insert(HASH_LABEL.into(), hash.clone());
        meta.labels = Some(labels.clone());
        let mut selector = self
            .d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let name = format!("{}-{hash}", self.d.name_any());
        let owner = OwnerInfo::of(&self.d);
        let mut new_rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.ns.clone()),
                owner_references: Some(vec![owner.controller_ref()]),
                labels: Some(labels),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: min_ready,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let mut all: Vec<&ReplicaSet> = old.iter().collect();
        all.push(&new_rs);
        let count = util::new_rs_new_replicas(&self.d, &all, &new_rs);
        if let Some(s) = new_rs.spec.as_mut() {
            s.replicas = Some(count);
        }
        let mut ann = BTreeMap::new();
        util::set_new_rs_annotations(&self.d, &mut ann, new_revision, false);
        new_rs.metadata.annotations = Some(ann);
        let (created, already) = match self.rs_api.create(&PostParams::default(), &new_rs).await {
            Ok(rs) => (rs, false),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let found = self
                    .rs_api
                    .get(&name)
                    .await
                    .map_err(|e| DeploymentError::Api("get replica set", e))?;
                let ours = controller_of(&found)
                    .is_some_and(|r| Some(&r.uid) == self.d.metadata.uid.as_ref());
                let same = found
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| equal_ignore_hash(t, &self.template()));
                if !(ours && same) {
                    // A hash collision: bump collisionCount so the next hash differs.
                    let status = self.status_mut();
                    status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                    self.write_status().await?;
                    return Err(DeploymentError::Collision(name));
                }
                (found, true)
            }
            Err(e) => {
                if progress::progress_deadline(&self.d).is_some() {
                    let msg = format!(
                        "Failed to create new replica set \"{name}\": {}",
                        api_message(&e)
                    );
                    progress::set(
                        self.status_mut(),
                        condition(
                            "Progressing",
                            "False",
                            progress::RS_CREATE_ERROR,
                            msg,
                            now(),
                        ),
                    );
                    self.write_status().await?;
                }
                return Err(DeploymentError::Api("create replica set", e));
            }
        };
        if !already && count > 0 {
            self.ctx.event(
                &self.d,
                false,
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {count}"),
            );
        }
        self.rs_list.push(created.clone());
        self.set_revision(&new_revision.to_string()).await?;
        if !already && progress::progress_deadline(&self.d).is_some() {
            let msg = format!("Created new replica set \"{name}\"");
            progress::set(
                self.status_mut(),
                condition("Progressing", "True", progress::NEW_RS_CREATED, msg, now()),
            );
            self.write_status().await?;
        }
        Ok(Some(created))
    }

    /// Scales `rs` to `size` and refreshes its replicas annotations (upstream
    /// `scaleReplicaSet`); returns the ReplicaSet as written (or unchanged).
    pub async fn scale(
        &mut self,
        rs: &ReplicaSet,
        size: i32,
        op: &str,
    ) -> Result<ReplicaSet, DeploymentError> {
        let current = rs_replicas(rs);
        let r = replicas(&self.d);
        let mut ann = rs.metadata.annotations.clone().unwrap_or_default();
        let ann_changed = util::set_replicas_annotations(&mut ann, r, r + max_surge(&self.d));
        if current == size && !ann_changed {
            return Ok(rs.clone());
        }
        let patch = json!({"metadata": {"annotations": ann}, "spec": {"replicas": size}});
        let updated = self
            .rs_api
            .patch(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| DeploymentError::Api("scale replica set", e))?;
        if current != size {
            self.ctx.event(
                &self.d,
                false,
                "ScalingReplicaSet",
                format!(
                    "Scaled {op} replica set {} from {current} to {size}",
                    rs.name_any()
                ),
            );
        }
        self.replace_rs(&updated);
        Ok(updated)
    }

    /// Deletes the oldest fully scaled-down ReplicaSets beyond `revisionHistoryLimit`.
    pub async fn cleanup(&mut self, old: &[ReplicaSet]) -> Result<(), DeploymentError> {
        let Some(limit) = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .filter(|l| *l != i32::MAX)
        else {
            return Ok(());
        };
        let mut alive: Vec<&ReplicaSet> = old
            .iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .collect();
        let diff = alive.len() as i64 - i64::from(limit);
        if diff <= 0 {
            return Ok(());
        }
        alive.sort_by(|a, b| {
            util::revision(a)
                .cmp(&util::revision(b))
                .then_with(|| util::by_creation(a, b))
        });
        for rs in alive.into_iter().take(diff as usize) {
            let status_replicas = rs.status.as_ref().map_or(0, |s| s.replicas);
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if status_replicas != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            match self
                .rs_api
                .delete(&rs.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {
                    tracing::info!(deployment = %self.d.name_any(), rs = %rs.name_any(), "old replica set deleted")
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(DeploymentError::Api("delete replica set", e)),
            }
        }
        Ok(())
    }
}

/// The message of an API error.
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}
