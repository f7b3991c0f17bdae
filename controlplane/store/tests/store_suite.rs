//! One test suite, run against both store backends (SQLite file, real etcd).

#[path = "common/etcd.rs"]
mod etcd;

use std::sync::Arc;
use std::time::Duration;

use etcd::EtcdServer;
use futures::StreamExt;
use kennel_store::{
    spawn_compactor, CompactionPolicy, EtcdStore, EventKind, SqliteStore, Store, StoreError,
    WatchStream,
};

const T: Duration = Duration::from_secs(30);

async fn next(w: &mut WatchStream) -> Result<kennel_store::WatchEvent, StoreError> {
    tokio::time::timeout(T, w.next())
        .await
        .expect("watch event in time")
        .expect("stream open")
}

async fn crud(s: &Arc<dyn Store>) {
    let r1 = s.create("/t/crud/a", b"one".to_vec()).await.unwrap();
    assert!(matches!(
        s.create("/t/crud/a", b"x".to_vec()).await,
        Err(StoreError::AlreadyExists(_))
    ));
    let kv = s.get("/t/crud/a").await.unwrap().unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.mod_revision, kv.create_revision),
        (&b"one"[..], r1, r1)
    );
    assert!(s.get("/t/crud/missing").await.unwrap().is_none());
    let r2 = s
        .update("/t/crud/a", b"two".to_vec(), Some(r1))
        .await
        .unwrap();
    assert!(r2 > r1);
    match s.update("/t/crud/a", b"three".to_vec(), Some(r1)).await {
        Err(StoreError::Conflict {
            expected, current, ..
        }) => assert_eq!((expected, current), (r1, r2)),
        other => panic!("expected conflict, got {other:?}"),
    }
    assert!(matches!(
        s.update("/t/crud/missing", b"x".to_vec(), Some(1)).await,
        Err(StoreError::NotFound(_))
    ));
    let kv = s.get("/t/crud/a").await.unwrap().unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.mod_revision, kv.create_revision),
        (&b"two"[..], r2, r1)
    );
    assert!(matches!(
        s.delete("/t/crud/a", Some(r1)).await,
        Err(StoreError::Conflict { .. })
    ));
    let (prev, r3) = s.delete("/t/crud/a", Some(r2)).await.unwrap();
    assert_eq!(prev.value, b"two");
    assert!(r3 > r2);
    assert!(s.current_revision().await.unwrap() >= r3);
    assert!(matches!(
        s.delete("/t/crud/a", None).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn paging(s: &Arc<dyn Store>) {
    for i in 0..25 {
        s.create(&format!("/t/page/k{i:02}"), vec![i])
            .await
            .unwrap();
    }
    s.create("/t/pagex/other", vec![]).await.unwrap();
    let all = s.list("/t/page/", 0, None).await.unwrap();
    assert_eq!(all.items.len(), 25);
    assert!(all.continue_token.is_none());
    let mut keys = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let page = s.list("/t/page/", 10, token.as_deref()).await.unwrap();
        pages += 1;
        assert_eq!(
            page.revision, all.revision,
            "pages share the first page's revision"
        );
        keys.extend(page.items.into_iter().map(|kv| kv.key));
        token = page.continue_token;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    let expect: Vec<String> = (0..25).map(|i| format!("/t/page/k{i:02}")).collect();
    assert_eq!(keys, expect);
    assert!(matches!(
        s.list("/t/page/", 5, Some("garbage!")).await,
        Err(StoreError::BadContinue)
    ));
}

async fn watching(s: &Arc<dyn Store>) {
    let r0 = s.current_revision().await.unwrap();
    let ra = s.create("/t/w/a", b"1".to_vec()).await.unwrap();
    s.create("/t/other/z", b"1".to_vec()).await.unwrap();
    let rb = s.update("/t/w/a", b"2".to_vec(), Some(ra)).await.unwrap();
    let (_, rc) = s.delete("/t/w/a", Some(rb)).await.unwrap();
    // Replay from history.
    let mut w = s.watch("/t/w/", r0).await.unwrap();
    let e1 = next(&mut w).await.unwrap();
    assert_eq!(
        (e1.kind, e1.revision(), e1.kv.value.as_slice()),
        (EventKind::Put, ra, &b"1"[..])
    );
    assert!(e1.prev.is_none());
    let e2 = next(&mut w).await.unwrap();
    assert_eq!((e2.kind, e2.revision()), (EventKind::Put, rb));
    assert_eq!(e2.prev.as_ref().unwrap().value, b"1");
    let e3 = next(&mut w).await.unwrap();
    assert_eq!(
        (e3.kind, e3.revision(), e3.kv.value.as_slice()),
        (EventKind::Delete, rc, &b"2"[..])
    );
    assert_eq!(e3.prev.as_ref().unwrap().mod_revision, rb);
    // Live events follow without a gap.
    let rd = s.create("/t/w/b", b"live".to_vec()).await.unwrap();
    let e4 = next(&mut w).await.unwrap();
    assert_eq!(
        (e4.kind, e4.revision(), e4.kv.key.as_str()),
        (EventKind::Put, rd, "/t/w/b")
    );
    // Resume from the middle.
    let mut w2 = s.watch("/t/w/", rb).await.unwrap();
    assert_eq!(next(&mut w2).await.unwrap().revision(), rc);
    assert_eq!(next(&mut w2).await.unwrap().revision(), rd);
}

async fn many_events_in_order(s: &Arc<dyn Store>) {
    let r0 = s.current_revision().await.unwrap();
    // A live watcher that is not read while thousands of writes happen (exercises lag recovery).
    let mut live = s.watch("/t/many/", r0).await.unwrap();
    let mut handles = Vec::new();
    for wi in 0..8 {
        let store = s.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..750 {
                store
                    .create(&format!("/t/many/{wi}-{i}"), vec![1])
                    .await
                    .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let mut replay = s.watch("/t/many/", r0).await.unwrap();
    for w in [&mut live, &mut replay] {
        let mut last = r0;
        for _ in 0..6000 {
            let ev = next(w).await.unwrap();
            assert!(ev.revision() > last, "revisions strictly increase");
            last = ev.revision();
        }
    }
}

async fn compaction(s: &Arc<dyn Store>) {
    let r1 = s.create("/t/c/a", b"1".to_vec()).await.unwrap();
    let r2 = s.update("/t/c/a", b"2".to_vec(), Some(r1)).await.unwrap();
    let r3 = s.update("/t/c/a", b"3".to_vec(), Some(r2)).await.unwrap();
    s.compact(r2).await.unwrap();
    // Watching from before the compacted revision fails with Compacted (immediately or as the first item).
    match s.watch("/t/c/", r1 - 1).await {
        Err(StoreError::Compacted { .. }) => {}
        Err(e) => panic!("unexpected {e}"),
        Ok(mut w) => match next(&mut w).await {
            Err(StoreError::Compacted { .. }) => {}
            other => panic!("expected Compacted, got {other:?}"),
        },
    }
    // From the compaction point on, history is still there.
    let mut w = s.watch("/t/c/", r2).await.unwrap();
    assert_eq!(next(&mut w).await.unwrap().revision(), r3);
    // Latest state is untouched.
    assert_eq!(s.get("/t/c/a").await.unwrap().unwrap().value, b"3");
}

async fn concurrent_cas(s: Arc<dyn Store>) {
    s.create("/t/cas/counter", b"0".to_vec()).await.unwrap();
    let mut handles = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..10 {
                loop {
                    let kv = s.get("/t/cas/counter").await.unwrap().unwrap();
                    let n: u64 = String::from_utf8(kv.value).unwrap().parse().unwrap();
                    match s
                        .update(
                            "/t/cas/counter",
                            (n + 1).to_string().into_bytes(),
                            Some(kv.mod_revision),
                        )
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let kv = s.get("/t/cas/counter").await.unwrap().unwrap();
    assert_eq!(kv.value, b"80");
}

/// The background compactor with a tiny policy: old revisions become `Compacted`, recent ones stay.
async fn background_compaction(s: &Arc<dyn Store>) {
    let r0 = s.current_revision().await.unwrap();
    for i in 0..30 {
        s.create(&format!("/t/bg/{i}"), vec![]).await.unwrap();
    }
    let policy = CompactionPolicy {
        min_age: Duration::ZERO,
        min_revisions: 10,
        interval: Duration::from_millis(100),
    };
    let task = spawn_compactor(s.clone(), policy);
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let compacted = match s.watch("/t/bg/", r0).await {
            Err(StoreError::Compacted { .. }) => true,
            Err(e) => panic!("{e}"),
            Ok(mut w) => matches!(next(&mut w).await, Err(StoreError::Compacted { .. })),
        };
        if compacted {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "compactor did not run"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    task.abort();
    let cur = s.current_revision().await.unwrap();
    let mut w = s.watch("/t/bg/", cur - 5).await.unwrap();
    assert_eq!(next(&mut w).await.unwrap().revision(), cur - 4);
}

async fn suite(s: Arc<dyn Store>) {
    crud(&s).await;
    paging(&s).await;
    watching(&s).await;
    concurrent_cas(s.clone()).await;
    many_events_in_order(&s).await;
    compaction(&s).await;
    background_compaction(&s).await;
}

#[tokio::test(flavor = "current_thread")]
async fn sqlite_backend_passes_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    suite(store.clone()).await;
    // A second store on the same database is refused while the first is open.
    assert!(matches!(
        SqliteStore::open(dir.path()),
        Err(StoreError::Locked(_))
    ));
    drop(store);
    // Reopening keeps data and the revision (once background watch tasks let go of the store).
    let deadline = tokio::time::Instant::now() + T;
    let reopened = loop {
        match SqliteStore::open(dir.path()) {
            Ok(s) => break s,
            Err(StoreError::Locked(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(reopened.current_revision().await.unwrap() > 6000);
}

#[tokio::test(flavor = "current_thread")]
async fn etcd_backend_passes_suite() {
    let etcd = EtcdServer::start().await;
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "/kennel-test")
        .await
        .unwrap();
    suite(Arc::new(store)).await;
}
