//! Shared fixtures: the project's test images, built once per test binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use images::build::BuiltImage;
use images::registry::RegistryClient;
use images::testing::{TestRegistry, TestRegistryOptions};

/// busybox, kubia, kubia-pet (built with cargo once per test binary).
pub fn test_images() -> &'static Vec<(&'static str, BuiltImage)> {
    static IMAGES: OnceLock<Vec<(&'static str, BuiltImage)>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let (kubia, pet) = kubia_binaries();
        images::testimages::test_images(images::testimages::HOST_BUSYBOX.as_ref(), &kubia, &pet)
            .expect("build test images")
    })
}

/// The static kubia binaries.
pub fn kubia_binaries() -> (PathBuf, PathBuf) {
    static BINS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BINS.get_or_init(|| {
        let cargo = std::env::var_os("CARGO")
            .map(PathBuf::from)
            .unwrap_or_else(|| env!("CARGO").into());
        let ws = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        images::testimages::build_kubia_binaries(&cargo, &ws).expect("build kubia")
    })
    .clone()
}

pub fn image(name: &str) -> &'static BuiltImage {
    &test_images()
        .iter()
        .find(|(n, _)| n.starts_with(&format!("{name}:")))
        .expect("known test image")
        .1
}

/// A plain-HTTP registry and a client for it.
pub fn registry() -> (TestRegistry, RegistryClient) {
    let reg = TestRegistry::start(TestRegistryOptions::default()).expect("start docker-registry");
    let client = RegistryClient::new(reg.client_config(None)).unwrap();
    (reg, client)
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Minimal HTTP/1.0 request; returns the body.
pub fn http(port: u16, method: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut s) => {
                write!(
                    s,
                    "{method} / HTTP/1.0\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                return out
                    .split_once("\r\n\r\n")
                    .map(|(_, b)| b.to_string())
                    .unwrap_or(out);
            }
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            Err(e) => panic!("connect to {port}: {e}"),
        }
    }
}

/// Kills the child on drop.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
