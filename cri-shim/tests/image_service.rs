//! kennel-cri's ImageService for real: a tonic server on a temp Unix socket serving
//! `ImageServiceImpl` over a temp `images::Store`, called with the k8s-cri client; images come from a
//! real Debian `docker-registry` on loopback (plain HTTP, and TLS + htpasswd basic auth) into which the
//! project's test images (busybox, kubia) are pushed. No VM needed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cri_shim::image_service::{ImageServiceImpl, ImageServiceOptions};
use hyper_util::rt::TokioIo;
use images::auth::Credentials;
use images::build::BuiltImage;
use images::registry::RegistryClient;
use images::spec::ContainerConfig;
use images::store::Store;
use images::testing::{TestRegistry, TestRegistryOptions};
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::{
    AuthConfig, Image, ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest,
    ListImagesRequest, PullImageRequest, RemoveImageRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::Code;

type Client = ImageServiceClient<Channel>;

/// busybox, kubia, and a busybox with `User: 1000:1000` and one with `User: nobody`.
struct TestImages {
    busybox: BuiltImage,
    kubia: BuiltImage,
    uid: BuiltImage,
    named: BuiltImage,
}

fn test_images() -> &'static TestImages {
    static IMAGES: OnceLock<TestImages> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let cargo = std::env::var_os("CARGO")
            .map(PathBuf::from)
            .unwrap_or_else(|| env!("CARGO").into());
        let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let (kubia, _pet) =
            images::testimages::build_kubia_binaries(&cargo, &ws).expect("build kubia");
        let base = images::testimages::busybox_layer(images::testimages::HOST_BUSYBOX.as_ref())
            .expect("busybox layer (install busybox-static)");
        let with_user = |user: &str| {
            BuiltImage::new(
                vec![base.clone()],
                ContainerConfig {
                    user: Some(user.into()),
                    cmd: Some(vec!["sh".into()]),
                    ..Default::default()
                },
            )
        };
        TestImages {
            busybox: images::testimages::busybox_image(&base),
            kubia: images::testimages::app_image(&base, "kubia", &kubia, None).unwrap(),
            uid: with_user("1000:1000"),
            named: with_user("nobody"),
        }
    })
}

/// A running ImageService on a temp socket, its store, and a client.
struct Cri {
    client: Client,
    store: Arc<Store>,
    _dir: tempfile::TempDir,
}

async fn serve(opts: ImageServiceOptions) -> Cri {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path().join("images")).unwrap());
    let sock = dir.path().join("cri.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let svc = ImageServiceServer::new(ImageServiceImpl::new(store.clone(), opts));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    let channel = Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let sock = sock.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(sock).await?))
            }
        }))
        .await
        .unwrap();
    Cri {
        client: ImageServiceClient::new(channel),
        store,
        _dir: dir,
    }
}

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

impl Cri {
    async fn pull(
        &mut self,
        image: &str,
        auth: Option<AuthConfig>,
    ) -> Result<String, tonic::Status> {
        self.client
            .pull_image(PullImageRequest {
                image: spec(image),
                auth,
                sandbox_config: None,
            })
            .await
            .map(|r| r.into_inner().image_ref)
    }

    async fn status(&mut self, image: &str) -> Result<Option<Image>, tonic::Status> {
        self.client
            .image_status(ImageStatusRequest {
                image: spec(image),
                verbose: false,
            })
            .await
            .map(|r| r.into_inner().image)
    }

    async fn list(&mut self, filter: Option<&str>) -> Vec<Image> {
        self.client
            .list_images(ListImagesRequest {
                filter: filter.map(|f| ImageFilter { image: spec(f) }),
            })
            .await
            .unwrap()
            .into_inner()
            .images
    }

    async fn remove(&mut self, image: &str) -> Result<(), tonic::Status> {
        self.client
            .remove_image(RemoveImageRequest { image: spec(image) })
            .await
            .map(|_| ())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_status_list_remove_fsinfo() {
    let imgs = test_images();
    let reg = TestRegistry::start(TestRegistryOptions::default()).expect("start docker-registry");
    let host = reg.host();
    let push = RegistryClient::new(reg.client_config(None)).unwrap();
    for (name, img) in [
        ("busybox:latest", &imgs.busybox),
        ("busybox:v1", &imgs.busybox),
        ("kubia:latest", &imgs.kubia),
        ("uid:latest", &imgs.uid),
        ("named:latest", &imgs.named),
    ] {
        img.push(&push, &format!("{host}/{name}")).await.unwrap();
    }
    let mut cri = serve(ImageServiceOptions {
        plain_http: vec![host.clone()],
        extra_ca: None,
        ..Default::default()
    })
    .await;
    let bb_id = imgs.busybox.id().to_string();
    let bb_tag = format!("{host}/busybox:latest");
    let bb_digest = format!("{host}/busybox@{}", imgs.busybox.manifest_digest());

    // pull: image_ref is the id every other call reports; the block image is built already
    let image_ref = cri.pull(&bb_tag, None).await.unwrap();
    assert_eq!(image_ref, bb_id);
    let rec = cri.store.resolve(&bb_id).unwrap().unwrap();
    assert!(
        cri.store.block_path(&rec).is_file(),
        "block image built at pull"
    );
    // pulling again is cheap and answers the same
    assert_eq!(cri.pull(&bb_tag, None).await.unwrap(), bb_id);

    // status by tag, short name of the tag, repo digest, full id, bare hex, 12-digit prefix
    let hex = bb_id.strip_prefix("sha256:").unwrap();
    for r in [
        bb_tag.clone(),
        bb_digest.clone(),
        bb_id.clone(),
        hex.to_string(),
        hex[..12].to_string(),
        format!("sha256:{}", &hex[..12]),
    ] {
        let img = cri
            .status(&r)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{r}"));
        assert_eq!(img.id, bb_id, "{r}");
        assert_eq!(img.repo_tags, vec![bb_tag.clone()]);
        assert_eq!(img.repo_digests, vec![bb_digest.clone()]);
        assert_eq!(img.size, imgs.busybox.size());
        assert_eq!(img.uid, None);
        assert_eq!(img.username, "");
        assert_eq!(img.spec.as_ref().unwrap().image, bb_id);
        assert!(!img.pinned);
    }
    // verbose: manifest, layers, config, block image
    let verbose = cri
        .client
        .image_status(ImageStatusRequest {
            image: spec(&bb_tag),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
    assert_eq!(
        info["manifestDigest"],
        imgs.busybox.manifest_digest().to_string()
    );
    assert_eq!(info["imageSpec"]["config"]["Cmd"][0], "sh");
    assert_eq!(info["layers"].as_array().unwrap().len(), 1);
    assert!(info["blockImage"].as_str().unwrap().ends_with(".ext4"));

    // uid / username from the image config's User
    let uid_id = cri.pull(&format!("{host}/uid:latest"), None).await.unwrap();
    let uid = cri.status(&uid_id).await.unwrap().unwrap();
    assert_eq!(uid.uid.map(|u| u.value), Some(1000));
    assert_eq!(uid.username, "");
    let named_id = cri
        .pull(&format!("{host}/named:latest"), None)
        .await
        .unwrap();
    let named = cri.status(&named_id).await.unwrap().unwrap();
    assert_eq!((named.uid, named.username.as_str()), (None, "nobody"));

    // list, with and without filter; kubia pulled by two requests at once: one image, each blob once
    let downloaded = cri.store.downloaded_bytes();
    let kubia_ref = format!("{host}/kubia:latest");
    let (mut c1, mut c2) = (cri.client.clone(), cri.client.clone());
    let req = || PullImageRequest {
        image: spec(&kubia_ref),
        auth: None,
        sandbox_config: None,
    };
    let (a, b) = tokio::join!(c1.pull_image(req()), c2.pull_image(req()));
    let kubia_id = a.unwrap().into_inner().image_ref;
    assert_eq!(b.unwrap().into_inner().image_ref, kubia_id);
    assert_eq!(kubia_id, imgs.kubia.id().to_string());
    // only kubia's own layer and config were new (the busybox layer is shared)
    let shared = imgs.busybox.size() - imgs.busybox.config.len() as u64;
    assert_eq!(
        cri.store.downloaded_bytes() - downloaded,
        imgs.kubia.size() - shared
    );
    // ImageStatus round trips through the socket (figure printed, not asserted)
    let started = std::time::Instant::now();
    for _ in 0..50 {
        cri.status(&kubia_ref).await.unwrap().unwrap();
    }
    println!(
        "ImageStatus by tag over the socket: {:.2} ms each (mean of 50, 4 images in the store)",
        started.elapsed().as_secs_f64() * 1e3 / 50.0
    );
    let all: BTreeSet<_> = cri.list(None).await.into_iter().map(|i| i.id).collect();
    let want: BTreeSet<_> = [&bb_id, &kubia_id, &uid_id, &named_id]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(all, want);
    let kubia = cri.list(Some(&format!("{host}/kubia"))).await;
    assert_eq!(kubia.len(), 1);
    assert_eq!(kubia[0].id, kubia_id);
    assert_eq!(cri.list(Some(&bb_digest)).await[0].id, bb_id);
    assert!(cri.list(Some("absent:latest")).await.is_empty());

    // a second tag of the same image; remove by tag drops only that tag
    let v1 = format!("{host}/busybox:v1");
    assert_eq!(cri.pull(&v1, None).await.unwrap(), bb_id);
    let tags = cri.status(&bb_id).await.unwrap().unwrap().repo_tags;
    assert_eq!(tags, vec![bb_tag.clone(), v1.clone()]);
    cri.remove(&v1).await.unwrap();
    assert!(cri.status(&v1).await.unwrap().is_none());
    assert_eq!(
        cri.status(&bb_id).await.unwrap().unwrap().repo_tags,
        vec![bb_tag.clone()]
    );
    // remove by id removes the image (and its block image); again is a no-op
    cri.remove(&bb_id).await.unwrap();
    assert!(cri.status(&bb_id).await.unwrap().is_none());
    assert!(cri.status(&bb_tag).await.unwrap().is_none());
    assert!(!cri.store.block_path(&rec).exists());
    cri.remove(&bb_id).await.unwrap();
    cri.remove(&bb_tag).await.unwrap();
    // kubia shares busybox's layer: still complete
    assert!(cri.status(&kubia_id).await.unwrap().is_some());
    assert_eq!(cri.list(None).await.len(), 3);

    // absent image: OK with no image
    assert!(cri.status("absent:latest").await.unwrap().is_none());
    assert!(cri
        .status(&format!("sha256:{}", "0".repeat(64)))
        .await
        .unwrap()
        .is_none());

    // bad references and missing images
    for bad in ["Bad Image!", "UPPER/case", "x@sha256:nothex", ""] {
        let e = cri.pull(bad, None).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "pull {bad:?}: {e:?}");
        assert!(!e.message().is_empty());
    }
    let e = cri.status("Bad Image!").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(
        cri.remove("").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let e = cri
        .pull(&format!("{host}/missing:latest"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("missing"), "{}", e.message());
    let e = cri
        .pull(&format!("{host}/kubia:nosuchtag"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // ImageFsInfo: the store's usage, at the store root, now
    let before = SystemTime::now();
    let fs = cri
        .client
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fs.image_filesystems.len(), 1);
    let u = &fs.image_filesystems[0];
    assert_eq!(
        u.fs_id.as_ref().unwrap().mountpoint,
        cri.store.root().display().to_string()
    );
    let used = u.used_bytes.as_ref().unwrap().value;
    let store_usage = cri.store.disk_usage().unwrap();
    assert!(used >= imgs.kubia.size(), "{used}");
    assert_eq!(used, store_usage.bytes);
    assert!(u.inodes_used.as_ref().unwrap().value > 4);
    let ts = UNIX_EPOCH + Duration::from_nanos(u.timestamp as u64);
    assert!(ts >= before - Duration::from_secs(1) && ts <= SystemTime::now());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_basic_auth() {
    let imgs = test_images();
    let creds = Credentials {
        username: "kennel".into(),
        password: "s3cret-pw".into(),
    };
    let reg = TestRegistry::start(TestRegistryOptions {
        tls: true,
        basic_auth: Some(creds.clone()),
        ..Default::default()
    })
    .expect("start docker-registry with TLS and htpasswd");
    let host = reg.host();
    let push = RegistryClient::new(reg.client_config(Some(creds.clone()))).unwrap();
    let reference = format!("{host}/busybox:latest");
    imgs.busybox.push(&push, &reference).await.unwrap();
    imgs.kubia
        .push(&push, &format!("{host}/kubia:latest"))
        .await
        .unwrap();
    let ca = reg.dir().join("ca-for-cri.pem");
    std::fs::write(&ca, reg.ca_pem.as_ref().unwrap()).unwrap();
    let mut cri = serve(ImageServiceOptions {
        plain_http: vec![],
        extra_ca: Some(ca.clone()),
        ..Default::default()
    })
    .await;

    // no credentials, wrong password, wrong user: UNAUTHENTICATED, nothing stored
    let user_pw = |u: &str, p: &str| AuthConfig {
        username: u.into(),
        password: p.into(),
        ..Default::default()
    };
    for auth in [
        None,
        Some(user_pw("kennel", "nope")),
        Some(user_pw("who", "s3cret-pw")),
    ] {
        let e = cri.pull(&reference, auth.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{auth:?}: {e:?}");
        assert!(e.message().contains("unauthorized"), "{}", e.message());
    }
    assert!(cri.list(None).await.is_empty());

    // username + password
    let id = cri
        .pull(&reference, Some(user_pw("kennel", "s3cret-pw")))
        .await
        .unwrap();
    assert_eq!(id, imgs.busybox.id().to_string());
    // `auth`: base64 of user:password (what the kubelet sends from a docker config)
    use base64::Engine as _;
    let auth = AuthConfig {
        auth: base64::engine::general_purpose::STANDARD.encode("kennel:s3cret-pw"),
        server_address: host.clone(),
        ..Default::default()
    };
    let kubia = cri
        .pull(&format!("{host}/kubia:latest"), Some(auth))
        .await
        .unwrap();
    assert_eq!(kubia, imgs.kubia.id().to_string());
    assert_eq!(cri.list(None).await.len(), 2);

    // malformed auth, unsupported tokens
    let e = cri
        .pull(
            &reference,
            Some(AuthConfig {
                auth: "not base64!".into(),
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = cri
        .pull(
            &reference,
            Some(AuthConfig {
                identity_token: "tok".into(),
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");

    // without the CA the registry's certificate is not trusted
    let mut untrusting = serve(ImageServiceOptions::default()).await;
    let e = untrusting
        .pull(&reference, Some(user_pw("kennel", "s3cret-pw")))
        .await
        .unwrap_err();
    assert_ne!(e.code(), Code::Ok);
    assert!(untrusting.list(None).await.is_empty());
    // an unreadable CA file is a clear precondition failure
    let mut bad_ca = serve(ImageServiceOptions {
        plain_http: vec![],
        extra_ca: Some(reg.dir().join("absent.pem")),
        ..Default::default()
    })
    .await;
    let e = bad_ca.pull(&reference, None).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("absent.pem"), "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_auth() {
    let imgs = test_images();
    let creds = Credentials {
        username: "puller".into(),
        password: "token-pw".into(),
    };
    let reg = TestRegistry::start(TestRegistryOptions {
        token_auth: Some(creds.clone()),
        ..Default::default()
    })
    .expect("start docker-registry with a token server");
    let host = reg.host();
    let push = RegistryClient::new(reg.client_config(Some(creds.clone()))).unwrap();
    let reference = format!("{host}/busybox:latest");
    imgs.busybox.push(&push, &reference).await.unwrap();
    let mut cri = serve(ImageServiceOptions {
        plain_http: vec![host.clone()],
        extra_ca: None,
        ..Default::default()
    })
    .await;
    let auth = |p: &str| AuthConfig {
        username: "puller".into(),
        password: p.into(),
        ..Default::default()
    };
    for a in [None, Some(auth("wrong"))] {
        let e = cri.pull(&reference, a.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{a:?}: {e:?}");
    }
    let started = std::time::Instant::now();
    let id = cri.pull(&reference, Some(auth("token-pw"))).await.unwrap();
    println!(
        "PullImage busybox (token auth, pull + block image): {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(id, imgs.busybox.id().to_string());
    assert!(cri.status(&reference).await.unwrap().is_some());

    // registry_token: a token a credential provider got from the token server, sent as it is.
    cri.remove(&reference).await.unwrap();
    let ts = reg.token_server.as_ref().expect("token server");
    let url = format!(
        "http://{}/token?service={}&scope=repository:busybox:pull",
        ts.addr,
        images::testing_token::SERVICE
    );
    let body = http_get_basic(&url, "puller", "token-pw");
    let token = serde_json::from_str::<serde_json::Value>(&body).unwrap()["token"]
        .as_str()
        .expect("token in the token server's answer")
        .to_string();
    let issued_before = ts.issued.load(std::sync::atomic::Ordering::Relaxed);
    let bad = AuthConfig {
        registry_token: "not-a-token".into(),
        ..Default::default()
    };
    let e = cri.pull(&reference, Some(bad)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let good = AuthConfig {
        registry_token: token,
        ..Default::default()
    };
    let id = cri.pull(&reference, Some(good)).await.unwrap();
    assert_eq!(id, imgs.busybox.id().to_string());
    assert_eq!(
        ts.issued.load(std::sync::atomic::Ordering::Relaxed),
        issued_before,
        "the registry token is used as it is, no new token is fetched"
    );
}

/// GET `url` with basic auth over plain HTTP/1.0 (the loopback token server); returns the body.
fn http_get_basic(url: &str, user: &str, password: &str) -> String {
    use base64::Engine as _;
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_at(rest.find('/').expect("path"));
    let mut s = std::net::TcpStream::connect(host).unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nAuthorization: Basic {basic}\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP answer");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200"),
        "{head}"
    );
    body.to_string()
}

/// A k3s-style registries file: a mirror that is down is skipped, a mirror that serves the
/// image is used (the image keeps its own name), and `configs` credentials log in to a
/// token-auth registry when the request brings none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registries_config_mirrors_and_credentials() {
    let imgs = test_images();
    let creds = Credentials {
        username: "puller".into(),
        password: "token-pw".into(),
    };
    let mirror = TestRegistry::start(TestRegistryOptions::default()).expect("mirror registry");
    let private = TestRegistry::start(TestRegistryOptions {
        token_auth: Some(creds.clone()),
        ..Default::default()
    })
    .expect("token-auth registry");
    let push = RegistryClient::new(mirror.client_config(None)).unwrap();
    imgs.busybox
        .push(&push, &format!("{}/library/busybox:latest", mirror.host()))
        .await
        .unwrap();
    let push = RegistryClient::new(private.client_config(Some(creds.clone()))).unwrap();
    imgs.kubia
        .push(&push, &format!("{}/kubia:latest", private.host()))
        .await
        .unwrap();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("registries.yaml");
    std::fs::write(
        &file,
        format!(
            "mirrors:\n  docker.io:\n    endpoint: [\"http://{dead}\", \"http://{}\"]\nconfigs:\n  \"{}\":\n    auth: {{username: puller, password: token-pw}}\n",
            mirror.host(),
            private.host()
        ),
    )
    .unwrap();
    let registries = cri_shim::registries::Registries::load(&file).expect("registries.yaml");
    let mut cri = serve(ImageServiceOptions {
        plain_http: vec![private.host()],
        registries,
        ..Default::default()
    })
    .await;
    // docker.io is never reached: the second mirror serves it.
    let id = cri
        .pull("busybox", None)
        .await
        .expect("pull through the mirror");
    assert_eq!(id, imgs.busybox.id().to_string());
    let listed = cri.list(None).await;
    assert!(
        listed.iter().any(|i| i
            .repo_tags
            .iter()
            .any(|t| t == "docker.io/library/busybox:latest")),
        "recorded under its own name: {listed:?}"
    );
    // No AuthConfig: the registries file's credentials get the token.
    let reference = format!("{}/kubia:latest", private.host());
    let id = cri
        .pull(&reference, None)
        .await
        .expect("pull with configs credentials");
    assert_eq!(id, imgs.kubia.id().to_string());
    // The request's own credentials win over the file's.
    cri.remove(&reference).await.unwrap();
    let wrong = AuthConfig {
        username: "puller".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    let e = cri.pull(&reference, Some(wrong)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
}
