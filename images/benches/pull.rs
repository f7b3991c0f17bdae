//! Benchmark: pull + unpack + block-image build time and sizes for the busybox and kubia test images,
//! against a real `docker-registry` on loopback. Prints figures; asserts nothing.
//!
//! Run: `cargo bench -p images --bench pull`

#[path = "../tests/common/mod.rs"]
mod common;

use std::os::unix::fs::MetadataExt as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use images::progress::Progress;
use images::store::Store;

const RUNS: usize = 3;

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (reg, client) = common::registry();
    eprintln!("building test images (cargo build of static kubia)...");
    let images = common::test_images();
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>10} {:>11} {:>11} {:>11}",
        "image", "pull", "unpack", "mkfs", "total", "compressed", "unpacked", "ext4 (used)"
    );
    for name in ["busybox", "kubia"] {
        let img = &images.iter().find(|(n, _)| n.starts_with(name)).unwrap().1;
        let reference = format!("{}/{name}:latest", reg.host());
        rt.block_on(img.push(&client, &reference)).unwrap();
        let mut best = [Duration::MAX; 3];
        let (mut unpacked, mut ext4, mut ext4_used) = (0, 0, 0);
        for _ in 0..RUNS {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(Store::open(dir.path().join("store")).unwrap());
            let t = Instant::now();
            let rec = rt
                .block_on(store.pull(&client, &reference, &Progress::hidden()))
                .unwrap();
            let pull = t.elapsed();
            let root = dir.path().join("rootfs");
            let t = Instant::now();
            let stats = store.unpack(&rec, &root).unwrap();
            let unpack = t.elapsed();
            let t = Instant::now();
            let out = dir.path().join("image.ext4");
            ext4 = images::block::build_ext4(&root, &out, "bench").unwrap();
            let mkfs = t.elapsed();
            ext4_used = std::fs::metadata(&out).unwrap().blocks() * 512;
            unpacked = stats.bytes;
            for (b, d) in best.iter_mut().zip([pull, unpack, mkfs]) {
                *b = (*b).min(d);
            }
        }
        let total: Duration = best.iter().sum();
        println!(
            "{name:<8} {:>10} {:>10} {:>10} {:>10} {:>10}K {:>10}K {:>5}K ({}K)",
            ms(best[0]),
            ms(best[1]),
            ms(best[2]),
            ms(total),
            img.size() / 1024,
            unpacked / 1024,
            ext4 / 1024,
            ext4_used / 1024
        );
    }
    println!("(best of {RUNS} runs each; pull = manifest + verified blobs into an empty store over loopback HTTP)");
}
