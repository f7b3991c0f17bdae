//! etcd-backed store: revisions are etcd's, `mod_revision` is the `resourceVersion`, writes are
//! transactions comparing `mod_revision`, watches are etcd watches with `prev_kv`.

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, KvClient, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{
    decode_continue, encode_continue, prefix_end, EventKind, KeyValue, ListPage, Store, StoreError,
    WatchEvent, WatchStream,
};

/// etcd-backed [`Store`]. Every key is stored under `root` (e.g. `/kennel`), so several
/// stores can share one etcd.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    root: String,
}

fn is_compacted(e: &etcd_client::Error) -> bool {
    e.to_string().contains("compacted")
}

impl EtcdStore {
    /// Connects to `endpoints` (e.g. `http://127.0.0.1:2379`) and keeps keys under `root`.
    pub async fn connect(endpoints: &[String], root: &str) -> Result<Self, StoreError> {
        let client = Client::connect(endpoints, None).await?;
        Ok(Self {
            client,
            root: root.trim_end_matches('/').to_string(),
        })
    }

    fn kv(&self) -> KvClient {
        self.client.kv_client()
    }

    fn full(&self, key: &str) -> String {
        format!("{}{}", self.root, key)
    }

    fn convert(&self, kv: &etcd_client::KeyValue) -> KeyValue {
        let key = String::from_utf8_lossy(kv.key());
        KeyValue {
            key: key.strip_prefix(&self.root).unwrap_or(&key).to_string(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        }
    }

    /// Runs a compare-and-swap write; on failure, reads the key to name the reason.
    async fn cas(
        &self,
        key: &str,
        expected: Option<i64>,
        op: TxnOp,
    ) -> Result<etcd_client::TxnResponse, StoreError> {
        let full = self.full(key);
        let cmp = match expected {
            Some(rev) => Compare::mod_revision(full.clone(), CompareOp::Equal, rev),
            None => Compare::create_revision(full.clone(), CompareOp::Greater, 0),
        };
        let txn = Txn::new()
            .when([cmp])
            .and_then([op])
            .or_else([TxnOp::get(full, None)]);
        let resp = self.kv().txn(txn).await?;
        if resp.succeeded() {
            return Ok(resp);
        }
        let current = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.mod_revision()),
            _ => None,
        });
        match (current, expected) {
            (None, _) => Err(StoreError::NotFound(key.to_string())),
            (Some(current), Some(expected)) => Err(StoreError::Conflict {
                key: key.to_string(),
                expected,
                current,
            }),
            (Some(_), None) => Err(StoreError::Task("etcd transaction failed".into())),
        }
    }
}

/// Keys per etcd request when a caller lists without a limit.
const UNLIMITED_CHUNK: usize = 1000;

impl EtcdStore {
    async fn list_page(
        &self,
        prefix: &str,
        limit: usize,
        continue_token: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        let full = self.full(prefix);
        let end = prefix_end(&full);
        let (start, rev) = match continue_token {
            Some(t) => {
                let (k, rv) = decode_continue(t)?;
                let mut s = self.full(&k).into_bytes();
                s.push(0);
                (s, rv)
            }
            None => (full.into_bytes(), 0),
        };
        let mut opts = GetOptions::new()
            .with_range(end)
            .with_sort(SortTarget::Key, SortOrder::Ascend);
        if limit > 0 {
            opts = opts.with_limit(limit as i64);
        }
        if rev > 0 {
            opts = opts.with_revision(rev);
        }
        let resp = self.kv().get(start, Some(opts)).await.map_err(|e| {
            if is_compacted(&e) {
                StoreError::Compacted {
                    requested: rev,
                    oldest: rev + 1,
                }
            } else {
                e.into()
            }
        })?;
        let revision = if rev > 0 {
            rev
        } else {
            header_rev(resp.header())
        };
        let items: Vec<KeyValue> = resp.kvs().iter().map(|kv| self.convert(kv)).collect();
        let continue_token = if resp.more() {
            items.last().map(|kv| encode_continue(&kv.key, revision))
        } else {
            None
        };
        let remaining = continue_token
            .as_ref()
            .map(|_| resp.count() - items.len() as i64);
        Ok(ListPage {
            items,
            revision,
            continue_token,
            remaining,
        })
    }
}

fn header_rev(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map_or(0, |h| h.revision())
}

#[async_trait]
impl Store for EtcdStore {
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64, StoreError> {
        let full = self.full(key);
        let txn = Txn::new()
            .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(full, value, None)]);
        let resp = self.kv().txn(txn).await?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        Ok(header_rev(resp.header()))
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let resp = self.kv().get(self.full(key), None).await?;
        Ok(resp.kvs().first().map(|kv| self.convert(kv)))
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<i64>,
    ) -> Result<i64, StoreError> {
        let resp = self
            .cas(key, expected, TxnOp::put(self.full(key), value, None))
            .await?;
        Ok(header_rev(resp.header()))
    }

    async fn delete(
        &self,
        key: &str,
        expected: Option<i64>,
    ) -> Result<(KeyValue, i64), StoreError> {
        let op = TxnOp::delete(self.full(key), Some(DeleteOptions::new().with_prev_key()));
        let resp = self.cas(key, expected, op).await?;
        let rev = header_rev(resp.header());
        let prev = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Delete(d) => d.prev_kvs().first().map(|kv| self.convert(kv)),
            _ => None,
        });
        prev.map(|p| (p, rev))
            .ok_or_else(|| StoreError::NotFound(key.to_string()))
    }

    async fn list(
        &self,
        prefix: &str,
        limit: usize,
        continue_token: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        if limit > 0 {
            return self.list_page(prefix, limit, continue_token).await;
        }
        // Unlimited lists are read in chunks at one revision (one gRPC response is capped at 4 MiB).
        let mut page = self
            .list_page(prefix, UNLIMITED_CHUNK, continue_token)
            .await?;
        while let Some(token) = page.continue_token.take() {
            let next = self
                .list_page(prefix, UNLIMITED_CHUNK, Some(&token))
                .await?;
            page.items.extend(next.items);
            page.continue_token = next.continue_token;
        }
        page.remaining = None;
        Ok(page)
    }

    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream, StoreError> {
        let full = self.full(prefix);
        let opts = WatchOptions::new()
            .with_range(prefix_end(&full))
            .with_start_revision(after_revision + 1)
            .with_prev_key();
        let mut stream = self.client.watch_client().watch(full, Some(opts)).await?;
        let (tx, rx) = mpsc::channel(256);
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = stream.next() => m,
                    _ = tx.closed() => return,
                };
                let resp = match msg {
                    Some(Ok(r)) => r,
                    Some(Err(e)) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                    None => {
                        let _ = tx
                            .send(Err(StoreError::WatchClosed("etcd closed the watch".into())))
                            .await;
                        return;
                    }
                };
                if resp.compact_revision() > 0 {
                    let _ = tx
                        .send(Err(StoreError::Compacted {
                            requested: after_revision + 1,
                            oldest: resp.compact_revision(),
                        }))
                        .await;
                    return;
                }
                if resp.canceled() {
                    let reason = resp.cancel_reason().to_string();
                    let _ = tx.send(Err(StoreError::WatchClosed(reason))).await;
                    return;
                }
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let prev = ev.prev_kv().map(|p| this.convert(p));
                    let event = match ev.event_type() {
                        EventType::Put => WatchEvent {
                            kind: EventKind::Put,
                            kv: this.convert(kv),
                            prev,
                        },
                        EventType::Delete => {
                            let base = prev.clone().unwrap_or_else(|| this.convert(kv));
                            WatchEvent {
                                kind: EventKind::Delete,
                                kv: KeyValue {
                                    mod_revision: kv.mod_revision(),
                                    ..base
                                },
                                prev,
                            }
                        }
                    };
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn current_revision(&self) -> Result<i64, StoreError> {
        let resp = self
            .kv()
            .get(
                self.full("/"),
                Some(GetOptions::new().with_count_only().with_limit(1)),
            )
            .await?;
        Ok(header_rev(resp.header()))
    }

    async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        match self.kv().compact(revision, None).await {
            Ok(_) => Ok(()),
            Err(e) if is_compacted(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn backend(&self) -> &'static str {
        "etcd"
    }
}
