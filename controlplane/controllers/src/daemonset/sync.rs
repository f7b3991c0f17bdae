//! One DaemonSet sync (upstream `syncDaemonSet`): claim pods and revisions, find or create the
//! current revision, then — once earlier writes are observed — run the manage step (a pod per
//! eligible node) and, if that changed nothing, the rolling update; truncate history; write
//! status.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

use super::backoff;
use super::eligibility::{node_should_run, target_node};
use super::history::{self, HASH_LABEL};
use super::plan::{self, NodeView, PodView};
use super::pods::sync_nodes;
use super::status;
use super::DaemonSetError;
use crate::claim::{self, controller_of, OwnerInfo};
use crate::ctx::{key, Ctx};
use crate::podutil;
use crate::selector::Selector;

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

fn api_err(what: String) -> impl FnOnce(kube::Error) -> DaemonSetError {
    move |source| DaemonSetError::Api { what, source }
}

/// The current revision (found, renumbered or created) and the old ones (upstream
/// `constructHistory`).
async fn construct_history(
    ctx: &Ctx,
    ds: &DaemonSet,
    owner: &OwnerInfo,
    revs: Vec<Arc<ControllerRevision>>,
    api: &Api<ControllerRevision>,
    pods_api: &Api<Pod>,
    pods: &[Arc<Pod>],
) -> Result<(ControllerRevision, Vec<Arc<ControllerRevision>>), DaemonSetError> {
    let (mut cur, old): (Vec<_>, Vec<_>) = revs.into_iter().partition(|r| history::matches(ds, r));
    let next = old.iter().map(|r| r.revision).max().unwrap_or(0) + 1;
    cur.sort_by_key(|r| std::cmp::Reverse((r.revision, r.name_any())));
    let Some(keep) = cur.first().cloned() else {
        let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
        let rev = history::new_revision(ds, owner, next, collisions);
        return match api.create(&PostParams::default(), &rev).await {
            Ok(r) => Ok((r, old)),
            Err(e) if code(&e) == Some(409) => {
                let existing = api
                    .get_opt(&rev.name_any())
                    .await
                    .map_err(api_err(format!("get revision {}", rev.name_any())))?;
                if let Some(x) = existing {
                    let ours = controller_of(&x).is_some_and(|r| r.uid == owner.uid);
                    if ours && history::matches(ds, &x) {
                        return Ok((x, old));
                    }
                }
                // A hash collision: the next sync retries with a higher count.
                let count = collisions.unwrap_or(0) + 1;
                Api::<DaemonSet>::namespaced(ctx.client.clone(), &owner.namespace)
                    .patch_status(
                        &owner.name,
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"status": {"collisionCount": count}})),
                    )
                    .await
                    .map_err(DaemonSetError::Status)?;
                Err(DaemonSetError::Invalid(format!(
                    "revision {} collides, collision count now {count}",
                    rev.name_any()
                )))
            }
            Err(e) => Err(api_err(format!("create revision {}", rev.name_any()))(e)),
        };
    };
    // Duplicates of the current template (upstream `dedupCurHistories`): pods move to the
    // kept revision's hash, the others go.
    let keep_hash = history::revision_hash(&keep);
    for dup in &cur[1..] {
        let dup_hash = history::revision_hash(dup);
        for p in pods
            .iter()
            .filter(|p| history::hash_of(&***p) == Some(&dup_hash))
        {
            let patch = json!({"metadata": {"labels": {HASH_LABEL: keep_hash}}});
            pods_api
                .patch(
                    &p.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(api_err(format!("relabel pod {}", p.name_any())))?;
        }
        match api.delete(&dup.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if code(&e) == Some(404) => {}
            Err(e) => return Err(api_err(format!("delete revision {}", dup.name_any()))(e)),
        }
    }
    let mut keep = (*keep).clone();
    if keep.revision < next {
        keep = api
            .patch(
                &keep.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"revision": next})),
            )
            .await
            .map_err(api_err(format!("update revision {}", keep.name_any())))?;
    }
    Ok((keep, old))
}

fn pod_view(pod: &Pod, node: String, hash: &str, min_ready: i32) -> PodView {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    PodView {
        name: pod.name_any(),
        node,
        scheduled: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty()),
        created: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_second()),
        failed: phase == Some("Failed"),
        succeeded: phase == Some("Succeeded"),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        ready: podutil::is_ready(pod),
        available: podutil::is_available(pod, min_ready, podutil::now()),
        updated: history::hash_of(pod) == Some(hash),
    }
}

/// Runs one sync; `Some(d)`: sync again after `d`.
pub async fn sync(ds: &Arc<DaemonSet>, ctx: &Arc<Ctx>) -> Result<Option<Duration>, DaemonSetError> {
    let Some(spec) = ds.spec.as_ref() else {
        return Ok(None);
    };
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let k = key(&**ds);
    let ns = ds.namespace().unwrap_or_default();
    let owner = OwnerInfo::of(&**ds);
    let selector = Selector::from_label_selector(&spec.selector);
    if selector.is_empty() {
        ctx.event(
            &**ds,
            true,
            "SelectingAll",
            "This daemon set is selecting all pods. A non-empty selector is required.".into(),
        );
        return Ok(None);
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template = spec.template.spec.clone().unwrap_or_default();

    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let ds_api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
    let pods = claim::claim(
        &pods_api,
        &owner,
        &selector,
        ctx.pods.in_namespace(&ns),
        || claim::recheck_owner(&ds_api, &owner),
    )
    .await?;
    let rev_api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    let revs = claim::claim(
        &rev_api,
        &owner,
        &selector,
        ctx.controller_revisions.in_namespace(&ns),
        || claim::recheck_owner(&ds_api, &owner),
    )
    .await?;
    let (cur, old) = construct_history(ctx, ds, &owner, revs, &rev_api, &pods_api, &pods).await?;
    let hash = history::revision_hash(&cur);

    let nodes: Vec<Arc<Node>> = ctx.nodes.all();
    let node_views: Vec<NodeView> = nodes
        .iter()
        .map(|n| NodeView {
            name: n.name_any(),
            fit: node_should_run(&template, n),
        })
        .collect();
    // Terminal pods being deleted are gone as far as the controller is concerned; pods without
    // a target node (an adopted bare pod) cannot be placed and are left alone.
    let live: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            let terminal = matches!(phase, Some("Succeeded" | "Failed"));
            !(terminal && p.metadata.deletion_timestamp.is_some())
        })
        .collect();
    let views: Vec<PodView> = live
        .iter()
        .filter_map(|p| target_node(p).map(|n| pod_view(p, n, &hash, min_ready)))
        .collect();
    let uids: HashMap<String, String> = live
        .iter()
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect();

    let strategy = spec.update_strategy.as_ref();
    let rolling = strategy
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let ru = strategy.and_then(|s| s.rolling_update.as_ref());
    let desired = node_views.iter().filter(|n| n.fit.should_run).count() as i32;
    let (max_surge, max_unavailable) = if rolling {
        plan::fenceposts(
            ru.and_then(|r| r.max_surge.as_ref()),
            ru.and_then(|r| r.max_unavailable.as_ref()),
            desired,
        )
        .map_err(|e| DaemonSetError::Invalid(e.to_string()))?
    } else {
        (0, 0)
    };
    // Surge is allowed when maxSurge is not 0 (upstream `AllowsSurge`: scaled against 1).
    let surge = rolling
        && plan::fenceposts(ru.and_then(|r| r.max_surge.as_ref()), None, 1)
            .is_ok_and(|(s, _)| s > 0);

    let mut requeue: Option<Duration> = None;
    let mut first_err: Option<DaemonSetError> = None;
    let pending = ctx.expectations.pending(&k, Instant::now());
    let acted = pending.is_none();
    if let Some(p) = pending {
        requeue = Some(p);
    } else {
        let mut changes = plan::manage(&node_views, &views, surge);
        let now = Instant::now();
        for (pod, node) in std::mem::take(&mut changes.failed) {
            let bk = backoff::key(&owner.uid, &node);
            if let Some(d) = ctx.daemon_backoff.in_backoff(&bk, now) {
                requeue = Some(requeue.map_or(d, |r| r.min(d)));
                continue;
            }
            ctx.daemon_backoff.next(&bk, now);
            ctx.event(
                &**ds,
                true,
                "FailedDaemonPod",
                format!("Found failed daemon pod {ns}/{pod} on node {node}, will try to kill it"),
            );
            changes.delete.push(pod);
        }
        if changes.is_empty() && rolling {
            changes = plan::rolling_update(&node_views, &views, max_surge, max_unavailable);
        }
        if !changes.is_empty() {
            if let Err(e) = sync_nodes(
                ctx,
                ds,
                &k,
                &owner,
                &hash,
                &changes.delete,
                &uids,
                &changes.create_on,
            )
            .await
            {
                first_err = Some(e);
            }
        }

        // History: old revisions beyond the limit that no live pod uses.
        let live_hashes: HashSet<String> = live
            .iter()
            .filter_map(|p| history::hash_of(&***p).map(str::to_string))
            .collect();
        let old_refs: Vec<&ControllerRevision> = old.iter().map(|r| &**r).collect();
        let limit = spec.revision_history_limit.unwrap_or(10);
        for r in history::to_delete(&old_refs, &live_hashes, limit) {
            match rev_api.delete(&r, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if code(&e) == Some(404) => {}
                Err(e) => {
                    first_err.get_or_insert(api_err(format!("delete revision {r}"))(e));
                }
            }
        }
    }

    // Status over the pods as cached (the next sync sees this one's writes).
    let counts = status::calculate(&node_views, &views);
    let new_status = status::build(
        ds.status.as_ref(),
        counts,
        ds.metadata.generation.unwrap_or(0),
        acted && first_err.is_none(),
        None,
    );
    if status::differs(ds.status.as_ref(), &new_status) {
        ds_api
            .patch_status(
                &owner.name,
                &PatchParams::default(),
                &Patch::Merge(&status::to_patch(&new_status)),
            )
            .await
            .map_err(DaemonSetError::Status)?;
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    if min_ready > 0 && counts.ready != counts.available {
        let d = Duration::from_secs(min_ready as u64 + 1);
        requeue = Some(requeue.map_or(d, |r| r.min(d)));
    }
    Ok(requeue)
}
