//! Creating and deleting pods to reach `spec.replicas` (upstream's `manageReplicas`): creations in
//! slow-start batches (1, 2, 4, ...) so a failing create (quota, admission) costs one request and
//! not hundreds, deletions of the best-ranked victims, both under expectations.

use std::future::Future;
use std::sync::Arc;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::ResourceExt;

use super::status::Failure;
use crate::claim::OwnerInfo;
use crate::ctx::Ctx;
use crate::podutil;

/// Most pods created or deleted in one sync (upstream's `BurstReplicas`).
pub const BURST_REPLICAS: usize = 500;

/// The batch sizes `slowStartBatch` runs for `count` calls starting at `initial`.
pub fn slow_start_batches(count: usize, initial: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut remaining = count;
    let mut batch = remaining.min(initial);
    while batch > 0 {
        out.push(batch);
        remaining -= batch;
        batch = (2 * batch).min(remaining);
    }
    out
}

/// Runs `f` `count` times in doubling concurrent batches, stopping after the first batch with
/// a failure; returns the number of successes and the first error.
pub async fn slow_start<F, Fut, E>(count: usize, initial: usize, f: F) -> (usize, Option<E>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut successes = 0;
    for batch in slow_start_batches(count, initial) {
        let results = join_all((0..batch).map(|_| f())).await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(()) => successes += 1,
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        if first_err.is_some() {
            return (successes, first_err);
        }
    }
    (successes, None)
}

/// A pod from `template` for `owner` (`generateName: <owner>-`, controller reference).
pub fn pod_from_template(template: &PodTemplateSpec, owner: &OwnerInfo) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", owner.name)),
            namespace: Some(owner.namespace.clone()),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner.controller_ref()]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Creates `-diff` pods or deletes `diff` of `pods` (the claimed active pods), recording
/// expectations under `key`. `related` are all pods of the owner's family (for ranking).
#[allow(clippy::too_many_arguments)]
pub async fn manage(
    ctx: &Arc<Ctx>,
    obj_for_events: &impl EventTarget,
    key: &str,
    owner: &OwnerInfo,
    template: Option<&PodTemplateSpec>,
    replicas: i32,
    pods: &[&Pod],
    related: &[&Pod],
) -> Result<(), Failure> {
    let diff = pods.len() as i64 - i64::from(replicas);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    if diff < 0 {
        let Some(template) = template else {
            return Ok(());
        };
        let n = ((-diff) as usize).min(BURST_REPLICAS);
        ctx.expectations.expect_creations(key, n);
        let pod = pod_from_template(template, owner);
        let (ok, err) = slow_start(n, 1, || {
            let (api, pod) = (api.clone(), pod.clone());
            async move {
                match api.create(&PostParams::default(), &pod).await {
                    Ok(created) => {
                        obj_for_events.event(
                            ctx,
                            false,
                            "SuccessfulCreate",
                            format!("Created pod: {}", created.name_any()),
                        );
                        Ok(())
                    }
                    Err(e) if api_message(&e).contains("because it is being terminated") => {
                        // The namespace is going away: nothing to report.
                        ctx.expectations.creation_observed(key);
                        Ok(())
                    }
                    Err(e) => Err(api_message(&e)),
                }
            }
        })
        .await;
        // Failed and never attempted creations will never be observed.
        for _ in ok..n {
            ctx.expectations.creation_observed(key);
        }
        if let Some(msg) = err {
            obj_for_events.event(ctx, true, "FailedCreate", format!("Error creating: {msg}"));
            return Err(Failure {
                reason: "FailedCreate",
                message: msg,
            });
        }
    } else if diff > 0 {
        let n = (diff as usize).min(BURST_REPLICAS);
        let victims = podutil::victims(pods, related, n, podutil::now());
        let keys: Vec<String> = victims
            .iter()
            .map(|p| format!("{}/{}", owner.namespace, p.name_any()))
            .collect();
        ctx.expectations.expect_deletions(key, keys.clone());
        let results = join_all(victims.iter().zip(keys).map(|(p, pod_key)| {
            let api = api.clone();
            let name = p.name_any();
            async move {
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {
                        obj_for_events.event(
                            ctx,
                            false,
                            "SuccessfulDelete",
                            format!("Deleted pod: {name}"),
                        );
                        Ok(())
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        ctx.expectations.deletion_observed(key, &pod_key);
                        Ok(())
                    }
                    Err(e) => {
                        ctx.expectations.deletion_observed(key, &pod_key);
                        Err(api_message(&e))
                    }
                }
            }
        }))
        .await;
        if let Some(msg) = results.into_iter().find_map(Result::err) {
            obj_for_events.event(ctx, true, "FailedDelete", format!("Error deleting: {msg}"));
            return Err(Failure {
                reason: "FailedDelete",
                message: msg,
            });
        }
    }
    Ok(())
}

/// Something events can be recorded about.
pub trait EventTarget: Sync {
    /// Records an event.
    fn event(&self, ctx: &Ctx, warning: bool, reason: &str, note: String);
}

impl<K: kube::Resource<DynamicType = ()> + Sync> EventTarget for K {
    fn event(&self, ctx: &Ctx, warning: bool, reason: &str, note: String) {
        ctx.event(self, warning, reason, note);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn batch_table() {
        let cases: [(usize, usize, &[usize]); 6] = [
            (0, 1, &[]),
            (1, 1, &[1]),
            (3, 1, &[1, 2]),
            (10, 1, &[1, 2, 4, 3]),
            (16, 1, &[1, 2, 4, 8, 1]),
            (5, 2, &[2, 3]),
        ];
        for (count, initial, want) in cases {
            assert_eq!(
                slow_start_batches(count, initial),
                want,
                "{count}/{initial}"
            );
        }
    }

    #[tokio::test]
    async fn stops_after_failing_batch() {
        let calls = AtomicUsize::new(0);
        // Calls 1..=3 succeed, the 4th (in the batch of 4) fails: the batch finishes, no more.
        let (ok, err) = slow_start(10, 1, || {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n == 4 {
                    Err("quota")
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!(err, Some("quota"));
        assert_eq!(calls.load(Ordering::SeqCst), 7);
        assert_eq!(ok, 6);
    }
}
