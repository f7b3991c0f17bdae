//! One sync of a StatefulSet: claim pods and revisions, resolve the current and update
//! revisions, run the planned creations and deletions, write status, truncate history.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::ResourceExt;
use serde_json::json;

use super::identity::{self, member_ordinal, POD_INDEX_LABEL, POD_NAME_LABEL, REVISION_LABEL};
use super::plan::{self, DeleteReason, PodView, SetView, Step, Strategy};
use super::revision;
use super::status::{self, StatusInput};
use super::StatefulSetError;
use crate::claim::{self, controller_of, OwnerInfo};
use crate::ctx::Ctx;
use crate::podutil;
use crate::selector::Selector;

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

fn api_err(what: String) -> impl FnOnce(kube::Error) -> StatefulSetError {
    move |source| StatefulSetError::Api { what, source }
}

/// `maxUnavailable` as a count of `replicas` (percentages round up, at least 1).
pub fn scaled_max_unavailable(v: &IntOrString, replicas: i32) -> Result<i32, String> {
    let n = match v {
        IntOrString::Int(i) => *i,
        IntOrString::String(s) => {
            let pct = s
                .strip_suffix('%')
                .and_then(|p| p.parse::<i64>().ok())
                .ok_or_else(|| {
                    format!("invalid maxUnavailable {s:?}: want an integer or a percentage")
                })?;
            ((pct * i64::from(replicas.max(0)) + 99) / 100) as i32
        }
    };
    Ok(n.max(1))
}

fn strategy_of(set: &StatefulSet, replicas: i32) -> Result<Strategy, StatefulSetError> {
    let us = set.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    match us.and_then(|u| u.type_.as_deref()) {
        Some("OnDelete") => Ok(Strategy::OnDelete),
        None | Some("RollingUpdate") => {
            let ru = us.and_then(|u| u.rolling_update.as_ref());
            let max_unavailable = ru
                .and_then(|r| r.max_unavailable.as_ref())
                .map(|v| scaled_max_unavailable(v, replicas))
                .transpose()
                .map_err(StatefulSetError::Invalid)?;
            Ok(Strategy::RollingUpdate {
                partition: ru.and_then(|r| r.partition).unwrap_or(0),
                max_unavailable,
            })
        }
        Some(other) => Err(StatefulSetError::Invalid(format!(
            "unknown updateStrategy.type {other:?}"
        ))),
    }
}

/// Finds or creates the revision of the set's current template; returns it and the collision
/// count used.
async fn update_revision(
    set: &StatefulSet,
    owner: &OwnerInfo,
    revs: &[&ControllerRevision],
    api: &Api<ControllerRevision>,
) -> Result<(ControllerRevision, Option<i32>), StatefulSetError> {
    let mut collisions = set.status.as_ref().and_then(|s| s.collision_count);
    let next = revision::next_number(revs);
    let probe = revision::new_revision(set, owner, next, collisions);
    if let Some(eq) = revs.iter().rev().find(|r| revision::same_data(r, &probe)) {
        if revs.last().is_some_and(|l| l.name_any() == eq.name_any()) {
            return Ok(((*eq).clone(), collisions));
        }
        // An older template is back (a rollback): it becomes the newest revision.
        let patched = api
            .patch(
                &eq.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"revision": next})),
            )
            .await
            .map_err(api_err(format!("update revision {}", eq.name_any())))?;
        return Ok((patched, collisions));
    }
    for _ in 0..5 {
        let probe = revision::new_revision(set, owner, next, collisions);
        match api.create(&PostParams::default(), &probe).await {
            Ok(r) => return Ok((r, collisions)),
            Err(e) if code(&e) == Some(409) => {
                let existing = api
                    .get_opt(&probe.name_any())
                    .await
                    .map_err(api_err(format!("get revision {}", probe.name_any())))?;
                if let Some(x) = existing {
                    let ours = controller_of(&x).is_some_and(|r| r.uid == owner.uid);
                    if ours && revision::same_data(&x, &probe) {
                        return Ok((x, collisions));
                    }
                }
                collisions = Some(collisions.unwrap_or(0) + 1);
            }
            Err(e) => return Err(api_err(format!("create revision {}", probe.name_any()))(e)),
        }
    }
    Err(StatefulSetError::Invalid(format!(
        "revision name {} keeps colliding",
        probe.name_any()
    )))
}

fn view(pod: &Pod, ordinal: i32, min_ready: i32, now: k8s_openapi::jiff::Timestamp) -> PodView {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let running_ready = phase == Some("Running") && podutil::is_ready(pod);
    PodView {
        name: pod.name_any(),
        ordinal,
        revision: pod
            .labels()
            .get(REVISION_LABEL)
            .cloned()
            .unwrap_or_default(),
        finished: matches!(phase, Some("Failed" | "Succeeded")),
        running_ready,
        available: running_ready && podutil::is_available(pod, min_ready, now),
        terminating: pod.metadata.deletion_timestamp.is_some(),
    }
}

async fn create_claims(
    ctx: &Ctx,
    set: &StatefulSet,
    ordinal: i32,
    set_owns_claims: bool,
) -> Result<(), StatefulSetError> {
    let ns = set.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let pod = identity::pod_name(&set.name_any(), ordinal);
    for mut c in identity::claims(set, ordinal) {
        let name = c.name_any();
        match api
            .get_opt(&name)
            .await
            .map_err(api_err(format!("get claim {name}")))?
        {
            Some(existing) if existing.metadata.deletion_timestamp.is_some() => {
                return Err(StatefulSetError::Invalid(format!(
                    "claim {name} is being deleted"
                )));
            }
            Some(_) => {}
            None => {
                if set_owns_claims {
                    c.metadata.owner_references = Some(vec![OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: "StatefulSet".into(),
                        name: set.name_any(),
                        uid: set.uid().unwrap_or_default(),
                        controller: None,
                        block_owner_deletion: None,
                    }]);
                }
                match api.create(&PostParams::default(), &c).await {
                    Ok(_) => ctx.event(
                        set,
                        false,
                        "SuccessfulCreate",
                        format!(
                            "create Claim {name} Pod {pod} in StatefulSet {} success",
                            set.name_any()
                        ),
                    ),
                    Err(e) if code(&e) == Some(409) => {}
                    Err(e) => {
                        ctx.event(
                            set,
                            true,
                            "FailedCreate",
                            format!(
                                "create Claim {name} for Pod {pod} in StatefulSet {} failed error: {e}",
                                set.name_any()
                            ),
                        );
                        return Err(api_err(format!("create claim {name}"))(e));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Deletes claims of ordinals outside the set whose pod is gone (`whenScaled: Delete`).
async fn delete_scaled_claims(
    ctx: &Ctx,
    set: &StatefulSet,
    start: i32,
    end: i32,
    pods: &HashSet<String>,
) -> Result<(), StatefulSetError> {
    let ns = set.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let set_name = set.name_any();
    let templates: Vec<String> = set
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_ref())
        .map(|v| v.iter().map(|t| t.name_any()).collect())
        .unwrap_or_default();
    if templates.is_empty() {
        return Ok(());
    }
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(api_err("list claims".into()))?;
    for c in list.items {
        let name = c.name_any();
        let Some(pod) = templates
            .iter()
            .find_map(|t| name.strip_prefix(t.as_str())?.strip_prefix('-'))
        else {
            continue;
        };
        let Some(ord) = member_ordinal(&set_name, pod) else {
            continue;
        };
        if (start..end).contains(&ord)
            || pods.contains(pod)
            || c.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => ctx.event(
                set,
                false,
                "SuccessfulDelete",
                format!("delete Claim {name} in StatefulSet {set_name} successful"),
            ),
            Err(e) if code(&e) == Some(404) => {}
            Err(e) => return Err(api_err(format!("delete claim {name}"))(e)),
        }
    }
    Ok(())
}

/// Runs one sync; `Some(d)`: sync again after `d`.
pub async fn sync(
    set: &Arc<StatefulSet>,
    ctx: &Arc<Ctx>,
) -> Result<Option<Duration>, StatefulSetError> {
    let Some(spec) = set.spec.as_ref() else {
        return Ok(None);
    };
    let ns = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let owner = OwnerInfo::of(&**set);
    let selector = Selector::from_label_selector(&spec.selector);
    if selector.is_empty() {
        return Err(StatefulSetError::Invalid(format!(
            "StatefulSet {ns}/{name} has an empty selector"
        )));
    }
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let start = spec
        .ordinals
        .as_ref()
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let now = podutil::now();

    // Pods: ours, or orphans named as members (upstream `isMemberOf`).
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let sets_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let candidates: Vec<Arc<Pod>> = ctx
        .pods
        .in_namespace(&ns)
        .into_iter()
        .filter(|p| {
            controller_of(&**p).is_some_and(|r| r.uid == owner.uid)
                || member_ordinal(&name, &p.name_any()).is_some()
        })
        .collect();
    let pods = claim::claim(&pods_api, &owner, &selector, candidates, || {
        claim::recheck_owner(&sets_api, &owner)
    })
    .await?;
    let pods: Vec<(i32, Arc<Pod>)> = pods
        .into_iter()
        .filter_map(|p| member_ordinal(&name, &p.name_any()).map(|o| (o, p)))
        .collect();

    // Revisions.
    let rev_api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    let rev_candidates: Vec<Arc<ControllerRevision>> = ctx.controller_revisions.in_namespace(&ns);
    let revs = claim::claim(&rev_api, &owner, &selector, rev_candidates, || {
        claim::recheck_owner(&sets_api, &owner)
    })
    .await?;
    let mut revs: Vec<&ControllerRevision> = revs.iter().map(|r| &**r).collect();
    revs.sort_by_key(|r| (r.revision, r.name_any()));
    let (update, collisions) = update_revision(set, &owner, &revs, &rev_api).await?;
    let current_name = set
        .status
        .as_ref()
        .and_then(|s| s.current_revision.clone())
        .filter(|c| revs.iter().any(|r| r.name_any() == *c))
        .unwrap_or_else(|| update.name_any());
    let current = revs
        .iter()
        .find(|r| r.name_any() == current_name)
        .map(|r| (*r).clone())
        .unwrap_or_else(|| update.clone());

    let strategy = strategy_of(set, replicas)?;
    let view_set = SetView {
        start,
        replicas,
        parallel: spec.pod_management_policy.as_deref() == Some("Parallel"),
        strategy,
        current_revision: current.name_any(),
        update_revision: update.name_any(),
        deleting: owner.deleting,
    };
    let views: Vec<PodView> = pods
        .iter()
        .map(|(o, p)| view(p, *o, min_ready, now))
        .collect();
    let steps = plan::plan(&view_set, &views);

    let retention = spec.persistent_volume_claim_retention_policy.as_ref();
    let set_owns_claims = retention.and_then(|r| r.when_deleted.as_deref()) == Some("Delete");
    let mut first_err: Option<StatefulSetError> = None;
    for step in &steps {
        let r = match step {
            Step::Create { ordinal, revision } => {
                create_pod(
                    ctx,
                    set,
                    &owner,
                    &update,
                    &current,
                    *ordinal,
                    revision,
                    set_owns_claims,
                )
                .await
            }
            Step::Delete { name: pod, reason } => {
                let uid = pods
                    .iter()
                    .find(|(_, p)| p.name_any() == *pod)
                    .and_then(|(_, p)| p.uid());
                delete_pod(ctx, set, pod, uid, *reason, &pods_api).await
            }
        };
        if let Err(e) = r {
            first_err.get_or_insert(e);
            if !view_set.parallel {
                break;
            }
        }
    }

    // Adopted pods get their identity labels.
    for (o, p) in &pods {
        if (start..start + replicas).contains(o)
            && p.metadata.deletion_timestamp.is_none()
            && !identity::identity_matches(set, p, *o)
        {
            let patch = json!({"metadata": {"labels": {
                POD_NAME_LABEL: p.name_any(), POD_INDEX_LABEL: o.to_string(),
            }}});
            if let Err(e) = pods_api
                .patch(
                    &p.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                first_err.get_or_insert(api_err(format!("update pod {}", p.name_any()))(e));
            }
        }
    }

    if retention.and_then(|r| r.when_scaled.as_deref()) == Some("Delete") && !owner.deleting {
        let names: HashSet<String> = pods.iter().map(|(_, p)| p.name_any()).collect();
        if let Err(e) = delete_scaled_claims(ctx, set, start, start + replicas, &names).await {
            first_err.get_or_insert(e);
        }
    }

    // Status over the pods as cached (the next sync sees this one's writes).
    let refs: Vec<&Pod> = pods.iter().map(|(_, p)| &**p).collect();
    let input = StatusInput {
        generation: set.metadata.generation.unwrap_or(0),
        min_ready_seconds: min_ready,
        rolling: matches!(strategy, Strategy::RollingUpdate { .. }),
        current_revision: &current.name_any(),
        update_revision: &update.name_any(),
        collision_count: collisions,
    };
    let new_status = status::calculate(&input, &refs, now);
    if status::differs(set.status.as_ref(), &new_status) {
        sets_api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&status::to_patch(&new_status)),
            )
            .await
            .map_err(StatefulSetError::Status)?;
    }

    // History: keep the live revisions and `revisionHistoryLimit` others.
    let mut live: HashSet<String> = [current.name_any(), update.name_any()].into();
    live.extend(
        pods.iter()
            .filter_map(|(_, p)| p.labels().get(REVISION_LABEL).cloned()),
    );
    let limit = spec.revision_history_limit.unwrap_or(10);
    for r in revision::to_truncate(&revs, &live, limit) {
        match rev_api.delete(&r, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if code(&e) == Some(404) => {}
            Err(e) => {
                first_err.get_or_insert(api_err(format!("delete revision {r}"))(e));
            }
        }
    }

    if let Some(e) = first_err {
        return Err(e);
    }
    let waiting_available = views.iter().any(|v| v.running_ready && !v.available);
    Ok((min_ready > 0 && waiting_available).then(|| Duration::from_secs(min_ready as u64 + 1)))
}

#[allow(clippy::too_many_arguments)]
async fn create_pod(
    ctx: &Ctx,
    set: &StatefulSet,
    owner: &OwnerInfo,
    update: &ControllerRevision,
    current: &ControllerRevision,
    ordinal: i32,
    revision: &str,
    set_owns_claims: bool,
) -> Result<(), StatefulSetError> {
    let template = if revision == update.name_any() {
        set.spec.as_ref().map(|s| s.template.clone())
    } else {
        revision::template_of(current)
    }
    .ok_or_else(|| {
        StatefulSetError::Invalid(format!("revision {revision} holds no pod template"))
    })?;
    create_claims(ctx, set, ordinal, set_owns_claims).await?;
    let pod = identity::new_pod(set, owner, &template, ordinal, revision);
    let pod_name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &set.namespace().unwrap_or_default());
    match api.create(&PostParams::default(), &pod).await {
        Ok(_) => {
            ctx.event(
                set,
                false,
                "SuccessfulCreate",
                format!(
                    "create Pod {pod_name} in StatefulSet {} successful",
                    set.name_any()
                ),
            );
            Ok(())
        }
        Err(e) if code(&e) == Some(409) => Ok(()),
        Err(e) => {
            ctx.event(
                set,
                true,
                "FailedCreate",
                format!(
                    "create Pod {pod_name} in StatefulSet {} failed error: {e}",
                    set.name_any()
                ),
            );
            Err(api_err(format!("create pod {pod_name}"))(e))
        }
    }
}

async fn delete_pod(
    ctx: &Ctx,
    set: &StatefulSet,
    pod: &str,
    uid: Option<String>,
    reason: DeleteReason,
    api: &Api<Pod>,
) -> Result<(), StatefulSetError> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(pod, &dp).await {
        Ok(_) => {
            tracing::info!(statefulset = %set.name_any(), %pod, ?reason, "deleted pod");
            ctx.event(
                set,
                false,
                "SuccessfulDelete",
                format!(
                    "delete Pod {pod} in StatefulSet {} successful",
                    set.name_any()
                ),
            );
            Ok(())
        }
        Err(e) if matches!(code(&e), Some(404 | 409)) => Ok(()),
        Err(e) => {
            ctx.event(
                set,
                true,
                "FailedDelete",
                format!(
                    "delete Pod {pod} in StatefulSet {} failed error: {e}",
                    set.name_any()
                ),
            );
            Err(api_err(format!("delete pod {pod}"))(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_unavailable_scaling() {
        let cases = [
            (IntOrString::Int(2), 5, Ok(2)),
            (IntOrString::Int(0), 5, Ok(1)),
            (IntOrString::String("50%".into()), 5, Ok(3)),
            (IntOrString::String("10%".into()), 3, Ok(1)),
        ];
        for (v, n, want) in cases {
            assert_eq!(scaled_max_unavailable(&v, n), want, "{v:?} of {n}");
        }
        assert!(
            scaled_max_unavailable(&IntOrString::String("half".into()), 4)
                .unwrap_err()
                .contains("half")
        );
    }
}
