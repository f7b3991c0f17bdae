//! `kennel-initramfs`: packs a static `/init` and extra files into an uncompressed newc cpio.

use anyhow::Context;
use clap::Parser;
use images::initramfs::Initramfs;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "kennel-initramfs",
    version,
    about = "Build a guest initramfs (newc cpio)"
)]
struct Cli {
    /// Static binary to run as /init.
    #[arg(long)]
    init: PathBuf,
    /// Extra file as HOST_PATH:GUEST_PATH (repeatable); mode is taken from the host file.
    #[arg(long = "file")]
    files: Vec<String>,
    /// Output file.
    #[arg(short, long)]
    output: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut img = Initramfs::new();
    img.init(&cli.init)?;
    for spec in &cli.files {
        let (src, dst) = spec
            .split_once(':')
            .with_context(|| format!("--file {spec:?}: expected HOST_PATH:GUEST_PATH"))?;
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(src)
                .with_context(|| format!("--file {spec:?}"))?
                .permissions(),
        );
        img.file_from(dst, src.as_ref(), mode)?;
    }
    img.write_file(&cli.output)?;
    Ok(())
}
