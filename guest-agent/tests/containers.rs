//! Host integration tests (root): the real agent binary in its own namespaces, driven over
//! gRPC through the agent-proto client: busybox containers, stdio, exec, exit codes,
//! signals, OOM kills, stats, bad input.

mod common;

use std::time::Duration;

use agent_proto::pb;
use common::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_a_container_and_reads_its_output() {
    let (agent, mut c) = TestAgent::start().await;
    let v = c.version(pb::Empty {}).await.unwrap().into_inner();
    assert_eq!(v.protocol_version, agent_proto::PROTOCOL_VERSION);

    c.create_sandbox(pb::CreateSandboxRequest {
        hostname: "pod-a".into(),
        dns: Some(pb::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        hosts: vec![pb::HostEntry {
            ip: "10.0.0.7".into(),
            names: vec!["pod-a".into()],
        }],
        interfaces: vec![pb::Interface {
            name: "lo".into(),
            address: "127.0.0.1".into(),
            prefix_len: 8,
            routes: vec![pb::Route {
                destination: "10.123.0.0".into(),
                prefix_len: 16,
                gateway: String::new(),
            }],
            ..Default::default()
        }],
        clock_unix_nanos: 0,
        random_seed: vec![7u8; 64],
    })
    .await
    .unwrap();
    let resolv = std::fs::read_to_string(agent.etc.join("resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");
    assert!(std::fs::read_to_string(agent.etc.join("hosts"))
        .unwrap()
        .contains("10.0.0.7\tpod-a"));

    let script = "echo hello; hostname; cat /etc/image-file; echo written > /etc/new-file; \
                  cat /etc/new-file; echo $$; grep -c 007B0A /proc/net/route; echo oops >&2; exit 3";
    let r = c
        .create_container(create_req(&agent, "c1", spec(&["sh", "-c", script], None)))
        .await
        .unwrap()
        .into_inner();
    assert!(r.pid > 1);
    let out = stdout_of(&mut c, "c1", "").await;
    let err = stderr_of(&mut c, "c1", "").await;
    c.start_container(pb::ContainerRequest {
        container_id: "c1".into(),
    })
    .await
    .unwrap();
    let w = c.wait_process(preq("c1", "")).await.unwrap().into_inner();
    assert_eq!((w.exit_code, w.signal, w.oom_killed), (3, 0, false));
    let out = String::from_utf8(out.await.unwrap()).unwrap();
    // hostname from the spec (own UTS namespace), the image's file, a write into the
    // private upper layer, PID 1 of its own PID namespace, and the sandbox's route.
    assert_eq!(
        out,
        "hello\nctr\nfrom-the-image\nwritten\n1\n1\n",
        "log: {}",
        agent.log()
    );
    assert_eq!(err.await.unwrap(), b"oops\n");
    assert!(
        !agent.rootfs.join("etc/new-file").exists(),
        "lower dir untouched"
    );

    c.remove_container(pb::RemoveContainerRequest {
        container_id: "c1".into(),
    })
    .await
    .unwrap();
    let e = c.wait_process(preq("c1", "")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_stdin_exit_codes_signals_and_stats() {
    let (agent, mut c) = TestAgent::start().await;
    c.create_container(create_req(
        &agent,
        "web",
        spec(&["sleep", "1000"], Some(64 << 20)),
    ))
    .await
    .unwrap();
    c.start_container(pb::ContainerRequest {
        container_id: "web".into(),
    })
    .await
    .unwrap();

    // An exec sees the container's PID namespace and filesystem.
    c.exec_process(pb::ExecProcessRequest {
        container_id: "web".into(),
        exec_id: "e1".into(),
        oci_process_json: process(&[
            "sh",
            "-c",
            "cat /proc/1/cmdline | tr '\\0' ' '; hostname; exit 7",
        ]),
    })
    .await
    .unwrap();
    let out = stdout_of(&mut c, "web", "e1").await;
    let w = c
        .wait_process(preq("web", "e1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.exit_code, 7);
    assert_eq!(
        String::from_utf8(out.await.unwrap()).unwrap(),
        "sleep 1000 ctr\n"
    );

    // stdin round trip.
    c.exec_process(pb::ExecProcessRequest {
        container_id: "web".into(),
        exec_id: "cat".into(),
        oci_process_json: process(&["cat"]),
    })
    .await
    .unwrap();
    let out = stdout_of(&mut c, "web", "cat").await;
    let n = c
        .write_stdin(pb::WriteStdinRequest {
            container_id: "web".into(),
            exec_id: "cat".into(),
            data: b"ping\n".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(n.written, 5);
    c.close_stdin(preq("web", "cat")).await.unwrap();
    assert_eq!(
        c.wait_process(preq("web", "cat"))
            .await
            .unwrap()
            .into_inner()
            .exit_code,
        0
    );
    assert_eq!(out.await.unwrap(), b"ping\n");

    // A signal reported as such.
    c.exec_process(pb::ExecProcessRequest {
        container_id: "web".into(),
        exec_id: "s".into(),
        oci_process_json: process(&["sleep", "1000"]),
    })
    .await
    .unwrap();
    c.signal_process(pb::SignalProcessRequest {
        container_id: "web".into(),
        exec_id: "s".into(),
        signal: libc::SIGUSR1,
        all: false,
    })
    .await
    .unwrap();
    let w = c.wait_process(preq("web", "s")).await.unwrap().into_inner();
    assert_eq!(
        (w.signal, w.exit_code),
        (libc::SIGUSR1, 128 + libc::SIGUSR1)
    );

    // Exec of a missing program fails cleanly; a duplicate exec id is rejected.
    let e = c
        .exec_process(pb::ExecProcessRequest {
            container_id: "web".into(),
            exec_id: "missing".into(),
            oci_process_json: process(&["/no/such/program"]),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("/no/such/program"), "{e:?}");
    let e = c
        .exec_process(pb::ExecProcessRequest {
            container_id: "web".into(),
            exec_id: "e1".into(),
            oci_process_json: process(&["true"]),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);

    let s = c
        .stats_container(pb::ContainerRequest {
            container_id: "web".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.memory_limit_bytes, 64 << 20);
    assert!(s.memory_usage_bytes > 0, "{s:?}");
    assert!(s.cpu_usage_nanos > 0, "{s:?}");
    assert!(s.pids_current >= 1, "{s:?}");

    // UpdateContainer changes the limit of the running container; bad JSON names the field.
    c.update_container(pb::UpdateContainerRequest {
        container_id: "web".into(),
        oci_resources_json: br#"{"memory": {"limit": 100663296}}"#.to_vec(),
    })
    .await
    .expect("UpdateContainer");
    let s = c
        .stats_container(pb::ContainerRequest {
            container_id: "web".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.memory_limit_bytes, 96 << 20);
    let e = c
        .update_container(pb::UpdateContainerRequest {
            container_id: "web".into(),
            oci_resources_json: b"[1]".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("resources"), "{e:?}");
    let e = c
        .update_container(pb::UpdateContainerRequest {
            container_id: "nope".into(),
            oci_resources_json: b"{}".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Terminating the init ends the container.
    c.signal_process(pb::SignalProcessRequest {
        container_id: "web".into(),
        exec_id: String::new(),
        signal: libc::SIGKILL,
        all: true,
    })
    .await
    .unwrap();
    let w = c.wait_process(preq("web", "")).await.unwrap().into_inner();
    assert_eq!(w.signal, libc::SIGKILL);
    assert!(!w.oom_killed);
    let e = c
        .exec_process(pb::ExecProcessRequest {
            container_id: "web".into(),
            exec_id: "late".into(),
            oci_process_json: process(&["true"]),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    c.remove_container(pb::RemoveContainerRequest {
        container_id: "web".into(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_kill_is_reported() {
    let (agent, mut c) = TestAgent::start().await;
    let mut events = c.get_oom_events(pb::Empty {}).await.unwrap().into_inner();
    // dd allocates and fills a 256 MiB buffer under a 32 MiB limit (no swap on CI).
    let args = ["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"];
    c.create_container(create_req(&agent, "hog", spec(&args, Some(32 << 20))))
        .await
        .unwrap();
    c.start_container(pb::ContainerRequest {
        container_id: "hog".into(),
    })
    .await
    .unwrap();
    let w = c.wait_process(preq("hog", "")).await.unwrap().into_inner();
    assert_eq!(w.signal, libc::SIGKILL, "{w:?}");
    assert!(w.oom_killed, "{w:?}");
    let ev = tokio::time::timeout(Duration::from_secs(60), events.message())
        .await
        .expect("an OOM event within a minute")
        .unwrap()
        .unwrap();
    assert_eq!(ev.container_id, "hog");
    let s = c
        .stats_container(pb::ContainerRequest {
            container_id: "hog".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(s.oom_kills >= 1);
    c.remove_container(pb::RemoveContainerRequest {
        container_id: "hog".into(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_specific_statuses() {
    let (agent, mut c) = TestAgent::start().await;
    let e = c
        .create_container(create_req(&agent, "x", b"{not json".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("oci_spec_json"), "{e:?}");
    let e = c
        .create_container(create_req(&agent, "x", spec(&[], None)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("process.args"), "{e:?}");
    let e = c
        .create_container(create_req(&agent, "../evil", spec(&["true"], None)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("container_id"), "{e:?}");
    let mut req = create_req(&agent, "x", spec(&["true"], None));
    req.rootfs = Some(pb::Rootfs {
        lower_dirs: vec!["/does/not/exist".into()],
        readonly: false,
    });
    let e = c.create_container(req).await.unwrap_err();
    assert!(e.message().contains("rootfs.lower_dirs[0]"), "{e:?}");

    for e in [
        c.start_container(pb::ContainerRequest {
            container_id: "nope".into(),
        })
        .await
        .unwrap_err(),
        c.wait_process(preq("nope", "")).await.unwrap_err(),
        c.stats_container(pb::ContainerRequest {
            container_id: "nope".into(),
        })
        .await
        .unwrap_err(),
        c.remove_container(pb::RemoveContainerRequest {
            container_id: "nope".into(),
        })
        .await
        .unwrap_err(),
        c.read_stdout(preq("nope", ""))
            .await
            .map(|_| ())
            .unwrap_err(),
    ] {
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
    }

    c.create_container(create_req(&agent, "dup", spec(&["true"], None)))
        .await
        .unwrap();
    let e = c
        .create_container(create_req(&agent, "dup", spec(&["true"], None)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = c.exec_process(pb::ExecProcessRequest {
        container_id: "dup".into(),
        exec_id: "e".into(),
        oci_process_json: process(&["true"]),
    });
    assert_eq!(
        e.await.unwrap_err().code(),
        Code::FailedPrecondition,
        "not started yet"
    );
    let e = c
        .signal_process(pb::SignalProcessRequest {
            container_id: "dup".into(),
            exec_id: String::new(),
            signal: 999,
            all: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .create_sandbox(pb::CreateSandboxRequest {
            interfaces: vec![pb::Interface {
                name: "lo".into(),
                address: "300.1.1.1".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("interfaces[0].address"), "{e:?}");
    // A program that does not exist fails StartContainer with the reason.
    c.create_container(create_req(&agent, "noexe", spec(&["/no/such/exe"], None)))
        .await
        .unwrap();
    let e = c
        .start_container(pb::ContainerRequest {
            container_id: "noexe".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("/no/such/exe"), "{e:?}");
    let w = c
        .wait_process(preq("noexe", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.exit_code, 127);
    c.remove_container(pb::RemoveContainerRequest {
        container_id: "noexe".into(),
    })
    .await
    .unwrap();
    // A created-but-never-started container is removed cleanly.
    c.remove_container(pb::RemoveContainerRequest {
        container_id: "dup".into(),
    })
    .await
    .unwrap();
    c.health(pb::Empty {}).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_sandbox_stops_the_agent() {
    let (mut agent, mut c) = TestAgent::start().await;
    c.create_container(create_req(&agent, "long", spec(&["sleep", "1000"], None)))
        .await
        .unwrap();
    c.start_container(pb::ContainerRequest {
        container_id: "long".into(),
    })
    .await
    .unwrap();
    c.destroy_sandbox(pb::Empty {}).await.unwrap();
    let st = agent
        .wait_exit(Duration::from_secs(60))
        .expect("agent exits after DestroySandbox");
    assert!(st.success(), "{st}: {}", agent.log());
    assert!(!agent.cgroup_root.exists() || std::fs::read_dir(&agent.cgroup_root).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_reader_continues_the_output_stream() {
    let (agent, mut c) = TestAgent::start().await;
    c.create_container(create_req(
        &agent,
        "talk",
        spec(&["sh", "-c", "echo one; read x; echo two"], None),
    ))
    .await
    .unwrap();
    let mut first = c.read_stdout(preq("talk", "")).await.unwrap().into_inner();
    c.start_container(pb::ContainerRequest {
        container_id: "talk".into(),
    })
    .await
    .unwrap();
    let chunk = first.message().await.unwrap().unwrap();
    assert_eq!(chunk.data, b"one\n");
    // The host goes away mid-stream (e.g. kennel-cri restarts) ...
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let second = loop {
        match c.read_stdout(preq("talk", "")).await {
            Ok(s) => break s.into_inner(),
            Err(e)
                if e.code() == Code::FailedPrecondition && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("second reader: {e:?}"),
        }
    };
    // ... and a new reader gets what follows.
    c.write_stdin(pb::WriteStdinRequest {
        container_id: "talk".into(),
        exec_id: String::new(),
        data: b"go\n".to_vec(),
    })
    .await
    .unwrap();
    assert_eq!(tokio_stream_compat::collect(second).await, b"two\n");
    let w = c.wait_process(preq("talk", "")).await.unwrap().into_inner();
    assert_eq!(w.exit_code, 0);
}
