//! Proof against a real Debian `docker-registry` on 127.0.0.1: push the project's test images, pull them
//! back by tag and digest, unpack, build block images, run the unpacked kubia; corrupted blobs fail
//! with a digest error; TLS + basic auth; parallel pulls share work; skopeo-written archives import.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;

use images::digest::DigestError;
use images::progress::Progress;
use images::pull::PullError;
use images::registry::{RegistryClient, RegistryError};
use images::store::{Removed, Store};

use common::*;

fn store() -> (tempfile::TempDir, Arc<Store>) {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(Store::open(d.path().join("store")).unwrap());
    (d, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_pull_unpack_block_and_run_kubia() {
    let (reg, client) = registry();
    let host = reg.host();
    let mut digests = std::collections::HashMap::new();
    for (name, img) in test_images() {
        let d = img.push(&client, &format!("{host}/{name}")).await.unwrap();
        assert_eq!(d, img.manifest_digest());
        digests.insert(name.split(':').next().unwrap(), d);
    }
    let (dir, s) = store();
    let p = Progress::hidden();

    // by tag, and by digest
    let kubia = s
        .pull(&client, &format!("{host}/kubia:latest"), &p)
        .await
        .unwrap();
    assert_eq!(kubia.id, image("kubia").id());
    let bb_ref = format!("{host}/busybox@{}", digests["busybox"]);
    let busybox = s.pull(&client, &bb_ref, &p).await.unwrap();
    assert_eq!(busybox.id, image("busybox").id());
    assert!(busybox.repo_tags.is_empty());
    assert_eq!(busybox.repo_digests, vec![bb_ref.clone()]);
    // the busybox layer is shared with kubia: downloaded once
    let unique: u64 = kubia.size + busybox.config.size;
    assert_eq!(s.downloaded_bytes(), unique);
    let pet = s
        .pull(&client, &format!("{host}/kubia-pet:latest"), &p)
        .await
        .unwrap();

    // CRI lookups: tag, digest, id, id prefix; sizes > 0
    for r in [
        format!("{host}/kubia:latest"),
        format!("{host}/kubia@{}", digests["kubia"]),
        kubia.id.to_string(),
        kubia.id.hex()[..12].to_string(),
    ] {
        assert_eq!(s.resolve(&r).unwrap().unwrap().id, kubia.id, "{r}");
    }
    assert_eq!(s.resolve(&bb_ref).unwrap().unwrap().id, busybox.id);
    let list = s.list().unwrap();
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|i| i.size > 0));
    let cfg = s.config(&kubia).unwrap().config.unwrap();
    assert_eq!(cfg.entrypoint, Some(vec!["/app/kubia".to_string()]));

    // unpack and run the static kubia from the unpacked rootfs
    let root = dir.path().join("kubia-root");
    let stats = s.unpack(&kubia, &root).unwrap();
    assert!(stats.symlinks > 100 && stats.files >= 4, "{stats:?}");
    assert_eq!(
        std::fs::read_link(root.join("bin/sh")).unwrap().to_str(),
        Some("busybox")
    );
    let port = free_port();
    assert!(
        images::testimages::is_static_elf(&std::fs::read(root.join("app/kubia")).unwrap()),
        "kubia must be static"
    );
    let _k = Proc(
        Command::new(root.join("app/kubia"))
            .env("KUBIA_PORT", port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(
        http(port, "GET", ""),
        format!("You've hit {}\n", hostname.trim())
    );

    // kubia-pet stores POSTed data
    let pet_root = dir.path().join("pet-root");
    s.unpack(&pet, &pet_root).unwrap();
    assert!(pet_root.join("var/data").is_dir());
    let port = free_port();
    let data_dir = dir.path().join("pet-data");
    let _p = Proc(
        Command::new(pet_root.join("app/kubia-pet"))
            .env("KUBIA_PORT", port.to_string())
            .env("KUBIA_DATA_DIR", &data_dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(http(port, "GET", "").ends_with("Data stored on this pod: No data posted yet\n"));
    assert!(http(port, "POST", "hello pet").starts_with("Data stored on pod"));
    assert!(http(port, "GET", "").ends_with("Data stored on this pod: hello pet\n"));
    assert_eq!(
        std::fs::read_to_string(data_dir.join("kubia.txt")).unwrap(),
        "hello pet"
    );

    // block image: built once, then cached; a valid ext4 with the app inside
    let b = s.block_image(&kubia).unwrap();
    assert!(b.built && b.size > 0);
    let again = s.block_image(&kubia).unwrap();
    assert!(!again.built);
    assert_eq!(again.path, b.path);
    assert!(std::fs::metadata(&b.path).unwrap().permissions().readonly());
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&b.path)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let stat = Command::new("debugfs")
        .arg("-R")
        .arg("stat /app/kubia")
        .arg(&b.path)
        .output()
        .unwrap();
    let kubia_len = std::fs::metadata(root.join("app/kubia")).unwrap().len();
    assert!(String::from_utf8_lossy(&stat.stdout).contains(&format!("Size: {kubia_len}")));
    assert!(s.disk_usage().unwrap().bytes > b.size / 4);

    // removing the image removes its block image too, keeps the shared layer for busybox
    assert_eq!(
        s.remove(&format!("{host}/kubia:latest")).unwrap(),
        Removed::Image(kubia.id.clone())
    );
    assert!(!b.path.exists());
    s.unpack(&busybox, &dir.path().join("bb-root")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_blob_fails_with_digest_error_and_leaves_nothing() {
    let (reg, client) = registry();
    let img = image("busybox");
    let reference = format!("{}/busybox:latest", reg.host());
    img.push(&client, &reference).await.unwrap();
    let layer = &img.layers[0].descriptor.digest;
    let data_path = reg.blob_data_path(layer);
    let mut data = std::fs::read(&data_path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&data_path, &data).unwrap();

    let (_d, s) = store();
    let err = s
        .pull(&client, &reference, &Progress::hidden())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PullError::Registry(RegistryError::Digest(DigestError::Mismatch { expected, .. })) if expected == layer),
        "{err}"
    );
    assert!(err.to_string().contains("digest mismatch"));
    assert!(s.list().unwrap().is_empty());
    assert!(s.resolve(&reference).unwrap().is_none());
    assert!(!s.has_blob(layer));
    assert_eq!(
        std::fs::read_dir(s.tmp_dir()).unwrap().count(),
        0,
        "temp files left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_pulls_share_work() {
    let (reg, client) = registry();
    let img = image("kubia");
    let reference = format!("{}/kubia:latest", reg.host());
    img.push(&client, &reference).await.unwrap();
    let (d, s) = store();
    // a second handle on the same directory stands for another process (file locks, not memory)
    let other = Arc::new(Store::open(d.path().join("store")).unwrap());
    let p = Progress::hidden();
    let (a, b, c) = tokio::join!(
        s.pull(&client, &reference, &p),
        s.pull(&client, &reference, &p),
        other.pull(&client, &reference, &p)
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!(a.id, b.id);
    assert_eq!(b.id, c.id);
    assert_eq!(s.downloaded_bytes() + other.downloaded_bytes(), img.size());
    assert_eq!(s.list().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_basic_auth() {
    use images::auth::Credentials;
    use images::testing::{TestRegistry, TestRegistryOptions};
    let creds = Credentials {
        username: "kennel".into(),
        password: "s3cret-pw".into(),
    };
    let reg = TestRegistry::start(TestRegistryOptions {
        tls: true,
        basic_auth: Some(creds.clone()),
        ..Default::default()
    })
    .unwrap();
    let reference = format!("{}/busybox:latest", reg.host());
    let img = image("busybox");
    let good = RegistryClient::new(reg.client_config(Some(creds.clone()))).unwrap();
    img.push(&good, &reference).await.unwrap();

    let p = Progress::hidden();
    let (_d, s) = store();
    let anon = RegistryClient::new(reg.client_config(None)).unwrap();
    let err = s.pull(&anon, &reference, &p).await.unwrap_err();
    assert!(
        matches!(err, PullError::Registry(RegistryError::Unauthorized { .. })),
        "{err}"
    );
    let wrong = Credentials {
        password: "nope".into(),
        ..creds.clone()
    };
    let err = s
        .pull(
            &RegistryClient::new(reg.client_config(Some(wrong))).unwrap(),
            &reference,
            &p,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, PullError::Registry(RegistryError::Unauthorized { .. })),
        "{err}"
    );
    // without the CA the certificate is not trusted (loopback falls back to plain HTTP, which a TLS port refuses)
    let untrusted = RegistryClient::new(images::registry::RegistryConfig::default()).unwrap();
    assert!(s.pull(&untrusted, &reference, &p).await.is_err());

    let rec = s.pull(&good, &reference, &p).await.unwrap();
    assert_eq!(rec.id, img.id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_removal_keeps_image_while_other_tags_point_at_it() {
    let (reg, client) = registry();
    let img = image("busybox");
    let (v1, latest) = (
        format!("{}/busybox:v1", reg.host()),
        format!("{}/busybox:latest", reg.host()),
    );
    img.push(&client, &v1).await.unwrap();
    img.push(&client, &latest).await.unwrap();
    let (_d, s) = store();
    let p = Progress::hidden();
    let a = s.pull(&client, &v1, &p).await.unwrap();
    let b = s.pull(&client, &latest, &p).await.unwrap();
    assert_eq!(a.id, b.id);
    assert_eq!(
        s.list().unwrap()[0].repo_tags,
        vec![latest.clone(), v1.clone()]
    );
    assert_eq!(s.remove(&v1).unwrap(), Removed::Untagged);
    assert!(s.resolve(&v1).unwrap().is_none());
    assert_eq!(s.resolve(&latest).unwrap().unwrap().id, a.id);
    assert_eq!(s.remove(&latest).unwrap(), Removed::Image(a.id.clone()));
    assert!(s.list().unwrap().is_empty());
    assert!(!s.has_blob(&img.layers[0].descriptor.digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malicious_image_is_rejected_without_writing_outside() {
    use images::build::{BuiltImage, Layer};
    use images::spec::{ContainerConfig, Descriptor, OCI_LAYER_GZIP};
    use std::io::Write as _;
    // a layer with an escaping symlink and then a file through it, and a `../` entry
    let mut t = tar::Builder::new(Vec::new());
    for (name, kind, link) in [
        ("esc", tar::EntryType::Symlink, "../../../.."),
        ("ok", tar::EntryType::Regular, ""),
        ("../evil", tar::EntryType::Regular, ""),
    ] {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        t.append(&h, &[][..]).unwrap();
    }
    let raw = t.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    let data = gz.finish().unwrap();
    let layer = Layer {
        descriptor: Descriptor::for_bytes(OCI_LAYER_GZIP, &data),
        diff_id: images::digest::Digest::of(&raw),
        data,
    };
    let img = BuiltImage::new(vec![layer], ContainerConfig::default());
    let (reg, client) = registry();
    let reference = format!("{}/evil:latest", reg.host());
    img.push(&client, &reference).await.unwrap();
    let (d, s) = store();
    let rec = s
        .pull(&client, &reference, &Progress::hidden())
        .await
        .unwrap();
    let outside = d.path().join("outside");
    let target = outside.join("inner/rootfs");
    std::fs::create_dir_all(&target).unwrap();
    let err = s.unpack(&rec, &target).unwrap_err();
    assert!(
        matches!(err, images::unpack::UnpackError::EscapingSymlink { .. }),
        "{err}"
    );
    let entries: Vec<_> = walk(&outside);
    assert_eq!(entries, vec![outside.join("inner"), target.clone()]);
    let err = s.block_image(&rec).unwrap_err();
    assert!(err.to_string().contains("escapes"), "{err}");
    assert!(!s.block_path(&rec).exists());
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_archives_written_by_skopeo() {
    let (reg, client) = registry();
    let img = image("kubia");
    let reference = format!("{}/kubia:latest", reg.host());
    img.push(&client, &reference).await.unwrap();
    let (d, s) = store();
    for (transport, name) in [("oci-archive", "oci.tar"), ("docker-archive", "docker.tar")] {
        let path = d.path().join(name);
        let out = Command::new("skopeo")
            .args([
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{reference}"),
            ])
            .arg(format!("{transport}:{}:kubia:latest", path.display()))
            .output()
            .expect("run skopeo (Debian package skopeo)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let recs = s.import_archive(&path, None, &Progress::hidden()).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].id, img.id(), "{transport}");
        assert_eq!(s.resolve("kubia:latest").unwrap().unwrap().id, img.id());
        let root = d.path().join(format!("root-{transport}"));
        s.unpack(&recs[0], &root).unwrap();
        assert!(root.join("app/kubia").is_file());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_auth() {
    use images::auth::Credentials;
    use images::testing::{TestRegistry, TestRegistryOptions};
    let creds = Credentials {
        username: "puller".into(),
        password: "token-pw".into(),
    };
    let reg = TestRegistry::start(TestRegistryOptions {
        token_auth: Some(creds.clone()),
        ..Default::default()
    })
    .unwrap();
    let reference = format!("{}/kubia:latest", reg.host());
    let img = image("kubia");
    let good = RegistryClient::new(reg.client_config(Some(creds.clone()))).unwrap();
    img.push(&good, &reference).await.unwrap();
    assert!(
        reg.token_server
            .as_ref()
            .unwrap()
            .issued
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );

    let p = Progress::hidden();
    let (_d, s) = store();
    let anon = RegistryClient::new(reg.client_config(None)).unwrap();
    let err = s.pull(&anon, &reference, &p).await.unwrap_err();
    assert!(
        matches!(err, PullError::Registry(RegistryError::Unauthorized { .. })),
        "{err}"
    );
    let rec = s.pull(&good, &reference, &p).await.unwrap();
    assert_eq!(rec.id, img.id());
}

/// A pull stopped at any point (task aborted, as when a CRI request is cancelled or the process dies
/// between steps) never leaves a half image visible, and a later pull completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_pulls_leave_no_half_image() {
    let (reg, client) = registry();
    let img = image("kubia");
    let reference = format!("{}/kubia:latest", reg.host());
    img.push(&client, &reference).await.unwrap();
    for delay_us in [0u64, 200, 1_000, 3_000, 10_000, 30_000] {
        let (_d, s) = store();
        let (s2, c2, r2) = (s.clone(), client.clone(), reference.clone());
        let task = tokio::spawn(async move { s2.pull(&c2, &r2, &Progress::hidden()).await });
        tokio::time::sleep(std::time::Duration::from_micros(delay_us)).await;
        task.abort();
        let _ = task.await;
        for rec in s.list().unwrap() {
            // visible means complete
            assert!(s.has_blob(&rec.config.digest));
            assert!(rec.layers.iter().all(|l| s.has_blob(&l.digest)));
        }
        let rec = s
            .pull(&client, &reference, &Progress::hidden())
            .await
            .unwrap();
        assert_eq!(rec.id, img.id());
        assert_eq!(std::fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
    }
}

/// Two `kennel-images pull` processes on one store at once: both succeed, one consistent image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pull_processes_share_one_store() {
    let (reg, client) = registry();
    let img = image("kubia-pet");
    let reference = format!("{}/kubia-pet:latest", reg.host());
    img.push(&client, &reference).await.unwrap();
    let d = tempfile::tempdir().unwrap();
    let store_dir = d.path().join("store");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_kennel-images"))
            .arg("--store")
            .arg(&store_dir)
            .args(["--plain-http", &reg.host(), "pull", &reference])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            img.id().to_string()
        );
    }
    let s = Store::open(&store_dir).unwrap();
    let list = s.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].repo_tags, vec![reference.clone()]);
    let root = d.path().join("root");
    s.unpack(&list[0], &root).unwrap();
    assert!(root.join("app/kubia-pet").is_file());
}
