//! Transports: the host client's Firecracker-style hybrid vsock connector (through a Unix
//! socket relay that answers the `CONNECT`/`OK` handshake the way the VMM does), and the
//! agent's AF_VSOCK listener.

mod common;

use std::time::{Duration, Instant};

use agent_proto::pb;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_vsock_client_runs_a_container() {
    let (agent, _) = TestAgent::start().await;
    let hv = agent.dir.path().join("hybrid.sock");
    let listener = UnixListener::bind(&hv).unwrap();
    let target = agent.sock.clone();
    // Relay: read "CONNECT <port>\n", answer "OK <port>\n", then splice bytes to the agent.
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                while s.read_exact(&mut b).await.is_ok() && b[0] != b'\n' {
                    line.push(b[0]);
                }
                let line = String::from_utf8_lossy(&line).to_string();
                let Some(port) = line.strip_prefix("CONNECT ") else {
                    return;
                };
                let mut up = UnixStream::connect(&target).await.unwrap();
                s.write_all(format!("OK {port}\n").as_bytes())
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
            });
        }
    });
    let mut c = agent_proto::client::connect_hybrid_vsock(&hv, agent_proto::DEFAULT_VSOCK_PORT)
        .await
        .unwrap();
    let v = c.version(pb::Empty {}).await.unwrap().into_inner();
    assert_eq!(v.protocol_version, agent_proto::PROTOCOL_VERSION);
    c.create_container(create_req(
        &agent,
        "hv",
        spec(&["echo", "over-vsock"], None),
    ))
    .await
    .unwrap();
    let out = stdout_of(&mut c, "hv", "").await;
    c.start_container(pb::ContainerRequest {
        container_id: "hv".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        c.wait_process(preq("hv", ""))
            .await
            .unwrap()
            .into_inner()
            .exit_code,
        0
    );
    assert_eq!(out.await.unwrap(), b"over-vsock\n");

    // A refused handshake is reported as such.
    let bad = agent.dir.path().join("refuse.sock");
    let l2 = UnixListener::bind(&bad).unwrap();
    tokio::spawn(async move {
        if let Ok((mut s, _)) = l2.accept().await {
            let _ = s.write_all(b"FAILURE\n").await;
        }
    });
    let e = agent_proto::client::connect_hybrid_vsock(&bad, 1024)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("handshake"), "{e}");
}

#[test]
fn listens_on_af_vsock() {
    // The host has no vsock loopback transport, so this proves the listener binds and
    // serves (the connection itself is proven in the VM).
    let port = 20_000 + std::process::id() % 20_000;
    let mut agent = TestAgent::spawn(false, Some(format!("vsock:{port}")));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !agent.log().contains(&format!("listening on vsock:{port}")) {
        assert!(agent.running(), "agent exited: {}", agent.log());
        assert!(Instant::now() < deadline, "no listener: {}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(agent.running(), "agent keeps serving: {}", agent.log());
}
