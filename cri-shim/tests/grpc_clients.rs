//! kennel-cri's real gRPC server (`server::serve`) on a temp Unix socket, called by clients that
//! are not tonic: Python grpcio (grpc-core, Debian's python3-grpcio) with every `:authority`
//! gRPC clients send on a Unix socket — its default, the percent-encoded socket path of
//! grpc-core >= 1.57, the raw path of grpc-java — and the k8s-cri tonic client beside it.
//! No VM: the runtime has no node network and no sandbox; the calls need none.

use cri_shim::image_service::ImageServiceOptions;
use cri_shim::runtime::{Runtime, RuntimeOptions};
use cri_shim::vm::VmOptions;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{StopContainerRequest, VersionRequest};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Endpoint, Uri};

fn runtime(dir: &Path) -> Arc<Runtime> {
    let store = Arc::new(images::store::Store::open(dir.join("images")).unwrap());
    let missing = dir.join("absent");
    let opts = RuntimeOptions {
        state_dir: dir.join("state"),
        vm: VmOptions {
            vmm: missing.clone(),
            kernel: missing.clone(),
            initramfs: missing.clone(),
            template_cache: missing,
            netns: None,
            disk_slots: 1,
            volume_slots: 0,
            vcpus: 1,
        },
        // Not a CIDR: the node network is not set up (nothing is touched on the host).
        pod_cidr: "none".into(),
        bridge: "kcri-unused".into(),
        netns: None,
    };
    Runtime::new(opts, store).unwrap()
}

#[tokio::test]
async fn python_grpcio_with_any_authority() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("cri.sock");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let sock = sock.clone();
        let rt = runtime(dir.path());
        async move {
            cri_shim::server::serve(rt, ImageServiceOptions::default(), &sock, async {
                let _ = stopped.await;
            })
            .await
        }
    });
    for _ in 0..200 {
        if tokio::net::UnixStream::connect(&sock).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // kubelet's kind of client (tonic, authority from a placeholder URI)
    let path = sock.clone();
    let ch = Endpoint::from_static("http://cri.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .unwrap();
    let mut rt = RuntimeServiceClient::new(ch);
    let v = rt
        .version(VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "kennel");
    rt.stop_container(StopContainerRequest {
        container_id: "0".repeat(64),
        timeout: 0,
    })
    .await
    .expect("StopContainer of an unknown id is OK");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/authority_client.py");
    let out = tokio::process::Command::new("/usr/bin/python3")
        .arg(script)
        .arg(&sock)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), out)
        .await
        .expect("the Python client finishes")
        .expect("/usr/bin/python3 runs (apt-get install python3-grpcio)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "Python grpcio client:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("ok ").count(), 6, "{stdout}");

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
