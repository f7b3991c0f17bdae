//! GET of one object, list (selectors, limit/continue, Table) and watch (chunked JSON events).

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{decode_as, json_response, ns_of, read_current, ApiState};
use crate::registry::ResourceDef;
use crate::request::{self, Query, Target};
use crate::selectors::{labels_of, FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::table::to_table;
use kennel_store::{EventKind, StoreError};

/// GET one object (or its status).
pub async fn get(
    state: &ApiState,
    t: &Target,
    headers: &HeaderMap,
    query: &Query,
) -> Result<Response, ApiError> {
    let name = t.name.as_deref().unwrap_or("");
    let (_, obj) = read_current(state, t.def, ns_of(t.def, t).as_deref(), name).await?;
    if request::wants_table(headers) && t.sub.is_none() {
        let full = query.get("includeObject").map(String::as_str) == Some("Object");
        let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
        let table = to_table(t.def, &[obj], meta, true, full);
        return Ok(json_response(StatusCode::OK, &table, &[]));
    }
    Ok(json_response(StatusCode::OK, &obj, &[]))
}

/// Parsed selectors of a list or watch.
pub struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
    kind: &'static str,
}

impl Filter {
    /// Reads `labelSelector` and `fieldSelector`.
    pub fn from_query(def: &ResourceDef, q: &Query) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let fields =
            FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str), def.kind)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Ok(Self {
            labels,
            fields,
            kind: def.kind,
        })
    }

    /// Whether the object passes both selectors.
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(&labels_of(obj)) && self.fields.matches(self.kind, obj)
    }
}

fn limit_of(q: &Query) -> Result<usize, ApiError> {
    match q.get("limit").map(String::as_str) {
        None | Some("") => Ok(0),
        Some(l) => l
            .parse::<i64>()
            .map(|n| n.max(0) as usize)
            .map_err(|_| ApiError::BadRequest(format!("invalid limit {l:?}"))),
    }
}

/// Reads matching objects: at most `limit` (0 = all) from the continue token on.
pub async fn collect(
    state: &ApiState,
    def: &ResourceDef,
    ns: Option<&str>,
    filter: &Filter,
    limit: usize,
    token: Option<String>,
) -> Result<(Vec<Value>, i64, Option<String>), ApiError> {
    let prefix = def.list_prefix(ns);
    let mut items = Vec::new();
    let mut token = token;
    let mut revision = None;
    loop {
        let want = if limit == 0 { 0 } else { limit - items.len() };
        let page = state
            .store
            .list(&prefix, want, token.as_deref())
            .await
            .map_err(|e| match e {
                StoreError::Compacted { .. } => ApiError::Gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into(),
                ),
                other => ApiError::from_store(other, &def.qualified(), ""),
            })?;
        revision.get_or_insert(page.revision);
        for kv in &page.items {
            let obj = decode_as(def, kv)?;
            if filter.matches(&obj) {
                items.push(obj);
            }
        }
        token = page.continue_token;
        if token.is_none() || (limit > 0 && items.len() >= limit) {
            break;
        }
    }
    Ok((items, revision.unwrap_or(0), token))
}

/// LIST a collection.
pub async fn list(
    state: &ApiState,
    t: &Target,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let def = t.def;
    let filter = Filter::from_query(def, query)?;
    let limit = limit_of(query)?;
    let token = query.get("continue").filter(|c| !c.is_empty()).cloned();
    let (items, rev, cont) =
        collect(state, def, ns_of(def, t).as_deref(), &filter, limit, token).await?;
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    if request::wants_table(headers) {
        let full = query.get("includeObject").map(String::as_str) == Some("Object");
        let table = to_table(def, &items, meta, true, full);
        return Ok(json_response(StatusCode::OK, &table, &[]));
    }
    let list = json!({
        "kind": format!("{}List", def.kind),
        "apiVersion": def.api_version(),
        "metadata": meta,
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &list, &[]))
}

fn event_line(kind: &str, object: Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

struct WatchCtx {
    def: &'static ResourceDef,
    table: bool,
    full: bool,
    sent_columns: bool,
}

impl WatchCtx {
    fn wrap(&mut self, obj: Value) -> Value {
        if !self.table {
            return obj;
        }
        let with_cols = !self.sent_columns;
        self.sent_columns = true;
        let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
        to_table(self.def, &[obj], meta, with_cols, self.full)
    }
}

/// WATCH a collection: optional initial ADDED events, then changes, bookmarks and a timeout.
pub async fn watch(
    state: &ApiState,
    t: &Target,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let def = t.def;
    let filter = Filter::from_query(def, query)?;
    let ns = ns_of(def, t);
    let bookmarks = request::flag(query, "allowWatchBookmarks");
    let initial_events = request::flag(query, "sendInitialEvents");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1800);
    let rv = query.get("resourceVersion").cloned().unwrap_or_default();
    let mut ctx = WatchCtx {
        def,
        table: request::wants_table(headers),
        full: query.get("includeObject").map(String::as_str) == Some("Object"),
        sent_columns: false,
    };
    let mut initial = Vec::new();
    let start = if rv.is_empty() || rv == "0" || initial_events {
        let (items, rev, _) = collect(state, def, ns.as_deref(), &filter, 0, None).await?;
        initial = items;
        rev
    } else {
        rv.parse::<i64>()
            .map_err(|_| ApiError::BadRequest(format!("invalid resource version {rv:?}")))?
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let stream = state
        .store
        .watch(&def.list_prefix(ns.as_deref()), start)
        .await;
    let mut stream = match stream {
        Ok(s) => s,
        Err(StoreError::Compacted { requested, .. }) => {
            let status =
                ApiError::Gone(format!("too old resource version: {requested} ({start})")).status();
            let body = event_line("ERROR", status);
            return Ok(watch_response(Body::from(body)));
        }
        Err(e) => return Err(ApiError::from_store(e, &def.qualified(), "")),
    };
    tokio::spawn(async move {
        let send = |b: Bytes| {
            let tx = tx.clone();
            async move { tx.send(Ok(b)).await.is_ok() }
        };
        for obj in initial {
            let w = ctx.wrap(obj);
            if !send(event_line("ADDED", w)).await {
                return;
            }
        }
        if initial_events {
            let bm = json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": {
                "resourceVersion": start.to_string(),
                "annotations": {"k8s.io/initial-events-end": "true"}}});
            if !send(event_line("BOOKMARK", bm)).await {
                return;
            }
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        tick.tick().await;
        let mut last_rev = start;
        loop {
            let ev = tokio::select! {
                ev = stream.next() => ev,
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = tick.tick() => {
                    if bookmarks {
                        let bm = json!({"kind": def.kind, "apiVersion": def.api_version(),
                            "metadata": {"resourceVersion": last_rev.to_string()}});
                        if !send(event_line("BOOKMARK", bm)).await {
                            return;
                        }
                    }
                    continue;
                }
            };
            let ev = match ev {
                Some(Ok(ev)) => ev,
                Some(Err(StoreError::Compacted { requested, .. })) => {
                    let st =
                        ApiError::Gone(format!("too old resource version: {requested}")).status();
                    let _ = send(event_line("ERROR", st)).await;
                    return;
                }
                Some(Err(e)) => {
                    let st = ApiError::Internal(e.to_string()).status();
                    let _ = send(event_line("ERROR", st)).await;
                    return;
                }
                None => return,
            };
            last_rev = ev.revision();
            let Ok(new) = decode_as(def, &ev.kv) else {
                continue;
            };
            let old = ev.prev.as_ref().and_then(|p| decode_as(def, p).ok());
            let old_match = old.as_ref().is_some_and(|o| filter.matches(o));
            let new_match = filter.matches(&new);
            let kind = match ev.kind {
                EventKind::Delete if old_match => "DELETED",
                EventKind::Delete => continue,
                EventKind::Put => match (old.is_some() && old_match, new_match) {
                    (true, true) => "MODIFIED",
                    (false, true) => "ADDED",
                    (true, false) => "DELETED",
                    (false, false) => continue,
                },
            };
            let w = ctx.wrap(new);
            if !send(event_line(kind, w)).await {
                return;
            }
        }
    });
    Ok(watch_response(Body::from_stream(ReceiverStream::new(rx))))
}

fn watch_response(body: Body) -> Response {
    (
        StatusCode::OK,
        [
            (axum::http::header::CONTENT_TYPE, "application/json"),
            (axum::http::header::CACHE_CONTROL, "no-cache, private"),
        ],
        body,
    )
        .into_response()
}
