//! The collector's actions (upstream's `attemptToDeleteItem`, `processDeletingDependentsItem`,
//! `attemptToOrphan`), always against live objects: the graph only says where to look.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::runtime::events::{Event, EventType};
use serde_json::json;

use super::graph::{Identity, Node, Work, FOREGROUND, ORPHAN};
use super::{Gc, GcError, GraphEvent};

/// What to do with the work item afterwards.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Finished.
    Done,
    /// Look again later (a virtual owner that exists but was not watched yet).
    Requeue,
}

fn api(gc: &Gc, id: &Identity) -> Result<Api<DynamicObject>, GcError> {
    let s = gc.resource(&id.api_version, &id.kind)?;
    Ok(if s.namespaced {
        Api::namespaced_with(gc.ctx.client.clone(), &id.namespace, &s.ar)
    } else {
        Api::all_with(gc.ctx.client.clone(), &s.ar)
    })
}

fn is_404(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn is_409(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// The live object of `id`, `None` when absent (404, or the name now has another uid).
async fn live(gc: &Gc, id: &Identity) -> Result<Option<DynamicObject>, GcError> {
    match api(gc, id)?.get_opt(&id.name).await? {
        Some(o) if o.metadata.uid.as_deref() == Some(id.uid.as_str()) => Ok(Some(o)),
        _ => Ok(None),
    }
}

fn has(o: &DynamicObject, f: &str) -> bool {
    o.metadata.finalizers.iter().flatten().any(|x| x == f)
}

/// Runs one work item.
pub async fn run(gc: &Gc, w: &Work) -> Result<Outcome, GcError> {
    let r = match w {
        Work::Delete(uid) => attempt_delete(gc, uid).await,
        Work::Orphan(uid) => attempt_orphan(gc, uid).await.map(|()| Outcome::Done),
        Work::InvalidNamespace(dep, owner) => {
            report_invalid_namespace(gc, dep, owner);
            Ok(Outcome::Done)
        }
    };
    if let Err(e) = &r {
        tracing::debug!(work = ?w, "garbage collector: {e}");
    }
    r
}

fn node(gc: &Gc, uid: &str) -> Option<Node> {
    gc.graph.lock().expect("graph").get(uid).cloned()
}

/// `OwnerRefInvalidNamespace` on a dependent naming an owner that lives in another namespace.
fn report_invalid_namespace(gc: &Gc, dep: &str, owner: &str) {
    let Some(d) = node(gc, dep) else {
        return;
    };
    let Some(r) = d.owners.iter().find(|r| r.uid == owner) else {
        return;
    };
    let invalid = Identity::of_owner(r, &d.identity.namespace);
    warn(
        gc,
        &d.identity,
        "OwnerRefInvalidNamespace",
        format!(
            "ownerRef {invalid} does not exist in namespace {:?}",
            d.identity.namespace
        ),
    );
}

fn warn(gc: &Gc, id: &Identity, reason: &str, note: String) {
    let reference = ObjectReference {
        api_version: Some(id.api_version.clone()),
        kind: Some(id.kind.clone()),
        name: Some(id.name.clone()),
        namespace: (!id.namespace.is_empty()).then(|| id.namespace.clone()),
        uid: Some(id.uid.clone()),
        ..ObjectReference::default()
    };
    let ev = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        action: "GarbageCollect".into(),
        note: Some(note),
        secondary: None,
    };
    let recorder = gc.ctx.recorder.clone();
    tokio::spawn(async move {
        if let Err(e) = recorder.publish(&ev, &reference).await {
            tracing::debug!("event: {e}");
        }
    });
}

/// How an owner reference stands.
enum Owner {
    /// The owner exists and is not waiting for its dependents.
    Solid,
    /// The owner is absent.
    Dangling,
    /// The owner is being deleted in the foreground.
    Waiting,
}

async fn classify(gc: &Gc, dep: &Identity, r: &OwnerReference) -> Result<Owner, GcError> {
    let s = gc.resource(&r.api_version, &r.kind)?;
    let id = Identity::of_owner(r, if s.namespaced { &dep.namespace } else { "" });
    Ok(match live(gc, &id).await? {
        None => Owner::Dangling,
        Some(o) if o.metadata.deletion_timestamp.is_some() && has(&o, FOREGROUND) => Owner::Waiting,
        Some(_) => Owner::Solid,
    })
}

async fn attempt_delete(gc: &Gc, uid: &str) -> Result<Outcome, GcError> {
    let Some(n) = node(gc, uid) else {
        return Ok(Outcome::Done);
    };
    if n.being_deleted && !n.deleting_dependents {
        return Ok(Outcome::Done);
    }
    let Some(latest) = live(gc, &n.identity).await? else {
        // Gone (or never there): as upstream's virtual delete event.
        let _ = gc.events.send(GraphEvent::Delete(uid.to_string()));
        return Ok(Outcome::Done);
    };
    if n.deleting_dependents {
        return deleting_dependents(gc, &n).await.map(|()| Outcome::Done);
    }
    let owners = latest.metadata.owner_references.clone().unwrap_or_default();
    let done = if n.observed {
        Outcome::Done
    } else {
        Outcome::Requeue
    };
    if owners.is_empty() {
        return Ok(done);
    }
    let dep_ns = latest.metadata.namespace.clone().unwrap_or_default();
    let (mut solid, mut dangling, mut waiting) = (vec![], vec![], vec![]);
    for r in &owners {
        let s = gc.resource(&r.api_version, &r.kind)?;
        if dep_ns.is_empty() && s.namespaced {
            // A cluster-scoped object cannot be owned by a namespaced one; retrying won't help.
            tracing::info!(object = %n.identity, owner = %r.name, "cluster-scoped object refers to a namespaced owner");
            return Ok(Outcome::Done);
        }
        match classify(gc, &n.identity, r).await? {
            Owner::Solid => solid.push(r),
            Owner::Dangling => dangling.push(r),
            Owner::Waiting => waiting.push(r),
        }
    }
    let api = api(gc, &n.identity)?;
    if !solid.is_empty() {
        if dangling.is_empty() && waiting.is_empty() {
            return Ok(done);
        }
        // Keep only the solid references.
        let keep: Vec<&OwnerReference> = owners
            .iter()
            .filter(|r| solid.iter().any(|s| s.uid == r.uid))
            .collect();
        let patch = json!({"metadata": {
            "resourceVersion": latest.metadata.resource_version,
            "ownerReferences": keep,
        }});
        match api
            .patch(
                &n.identity.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => return Ok(done),
            Err(e) if is_404(&e) => return Ok(Outcome::Done),
            Err(e) => return Err(e.into()),
        }
    }
    let policy = if !waiting.is_empty() && !n.dependents.is_empty() {
        PropagationPolicy::Foreground
    } else if has(&latest, ORPHAN) {
        PropagationPolicy::Orphan
    } else if has(&latest, FOREGROUND) {
        PropagationPolicy::Foreground
    } else {
        PropagationPolicy::Background
    };
    let dp = DeleteParams {
        propagation_policy: Some(policy.clone()),
        preconditions: Some(Preconditions {
            uid: Some(n.identity.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    tracing::info!(object = %n.identity, ?policy, "garbage collector deletes an object whose owners are gone");
    match api.delete(&n.identity.name, &dp).await {
        Ok(_) => Ok(Outcome::Done),
        Err(e) if is_404(&e) || is_409(&e) => Ok(Outcome::Done),
        Err(e) => Err(e.into()),
    }
}

/// A foreground owner: its blocking dependents go first; with none left its
/// `foregroundDeletion` finalizer goes.
async fn deleting_dependents(gc: &Gc, n: &Node) -> Result<(), GcError> {
    let blocking: Vec<(String, bool)> = gc
        .graph
        .lock()
        .expect("graph")
        .blocking_dependents(&n.identity.uid)
        .iter()
        .map(|d| (d.identity.uid.clone(), d.deleting_dependents))
        .collect();
    if blocking.is_empty() {
        return remove_finalizer(gc, &n.identity, FOREGROUND).await;
    }
    for (uid, deleting) in blocking {
        if !deleting {
            gc.queue.add(Work::Delete(uid));
        }
    }
    Ok(())
}

/// Removes `finalizer` from the live object of `id` (compare-and-swap, retried on conflict).
async fn remove_finalizer(gc: &Gc, id: &Identity, finalizer: &str) -> Result<(), GcError> {
    let api = api(gc, id)?;
    for _ in 0..8 {
        let Some(o) = live(gc, id).await? else {
            return Ok(());
        };
        if !has(&o, finalizer) {
            return Ok(());
        }
        let left: Vec<&String> = o
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != finalizer)
            .collect();
        let patch = json!({"metadata": {
            "resourceVersion": o.metadata.resource_version,
            "finalizers": if left.is_empty() { json!(null) } else { json!(left) },
        }});
        match api
            .patch(&id.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if is_404(&e) => return Ok(()),
            Err(e) if is_409(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(GcError::Conflict(format!(
        "too many conflicts removing {finalizer} from {id}"
    )))
}

/// Orphan: every dependent loses its reference to the owner, then the owner its `orphan`.
async fn attempt_orphan(gc: &Gc, uid: &str) -> Result<(), GcError> {
    let Some(owner) = node(gc, uid) else {
        return Ok(());
    };
    let deps: Vec<Identity> = gc
        .graph
        .lock()
        .expect("graph")
        .dependents(uid)
        .iter()
        .map(|d| d.identity.clone())
        .collect();
    for d in deps {
        let api = api(gc, &d)?;
        for _ in 0..8 {
            let Some(o) = live(gc, &d).await? else {
                break;
            };
            let refs = o.metadata.owner_references.clone().unwrap_or_default();
            if !refs.iter().any(|r| r.uid == uid) {
                break;
            }
            let keep: Vec<&OwnerReference> = refs.iter().filter(|r| r.uid != uid).collect();
            let patch = json!({"metadata": {
                "resourceVersion": o.metadata.resource_version,
                "ownerReferences": if keep.is_empty() { json!(null) } else { json!(keep) },
            }});
            match api
                .patch(&d.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => break,
                Err(e) if is_404(&e) => break,
                Err(e) if is_409(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
    remove_finalizer(gc, &owner.identity, ORPHAN).await
}
