//! `kennel-images`: manage kennel's OCI image store, and build/push the project's test images.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use images::auth::Credentials;
use images::progress::Progress;
use images::registry::{RegistryClient, RegistryConfig};
use images::store::Store;

/// kennel's OCI image store: pull, import, list, remove, unpack, build block images.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Store directory.
    #[arg(long, global = true, default_value = "/var/lib/kennel/images")]
    store: PathBuf,
    /// Registries to reach over plain HTTP (host:port); may repeat.
    #[arg(long = "plain-http", global = true)]
    plain_http: Vec<String>,
    /// Extra trusted CA certificate (PEM) for HTTPS registries.
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// Credentials `user:password` for the registry of the image named.
    #[arg(long, global = true)]
    user: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pull an image (by tag or digest) from a registry.
    Pull {
        /// Image reference, e.g. 127.0.0.1:5000/kubia:latest.
        image: String,
    },
    /// Import a `docker save` or OCI-layout archive.
    Import {
        /// The archive (tar, optionally gzip).
        archive: PathBuf,
        /// Name to tag the image with.
        #[arg(long)]
        name: Option<String>,
    },
    /// List images.
    List,
    /// Remove an image reference (tag, digest or id).
    Rm {
        /// Reference.
        image: String,
    },
    /// Unpack an image's layers into a directory.
    Unpack {
        /// Reference.
        image: String,
        /// Target directory.
        dir: PathBuf,
    },
    /// Build (or find) an image's read-only ext4 block image; prints its path.
    Block {
        /// Reference.
        image: String,
    },
    /// Disk usage of the store.
    Df,
    /// Build the test images (busybox, kubia, kubia-pet) and write OCI archives and/or push them.
    BuildTestImages {
        /// Write `<name>.oci.tar` archives here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Push to this registry (host:port), e.g. 127.0.0.1:5000.
        #[arg(long)]
        push: Option<String>,
        /// Static busybox binary.
        #[arg(long, default_value = images::testimages::HOST_BUSYBOX)]
        busybox: PathBuf,
        /// Prebuilt static kubia binary (default: build it with cargo).
        #[arg(long, requires = "kubia_pet")]
        kubia: Option<PathBuf>,
        /// Prebuilt static kubia-pet binary.
        #[arg(long, requires = "kubia")]
        kubia_pet: Option<PathBuf>,
    },
}

fn client(cli: &Cli, registry: Option<&str>) -> Result<RegistryClient> {
    let mut cfg = RegistryConfig {
        plain_http: cli.plain_http.clone(),
        ..Default::default()
    };
    if let Some(ca) = &cli.ca {
        cfg.ca_pem
            .push(std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?);
    }
    if let (Some(u), Some(reg)) = (&cli.user, registry) {
        let (username, password) = u.split_once(':').context("--user wants user:password")?;
        cfg.credentials.insert(
            reg.to_string(),
            Credentials {
                username: username.into(),
                password: password.into(),
            },
        );
    }
    Ok(RegistryClient::new(cfg)?)
}

fn find(store: &Store, image: &str) -> Result<images::store::ImageRecord> {
    store
        .resolve(image)?
        .with_context(|| format!("image {image:?} not found"))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let progress = Progress::auto();
    let open = || -> Result<Arc<Store>> {
        Ok(Arc::new(Store::open(&cli.store).with_context(|| {
            format!("opening store {}", cli.store.display())
        })?))
    };
    match &cli.cmd {
        Cmd::Pull { image } => {
            let r: images::reference::Reference = image.parse()?;
            let c = client(&cli, Some(&r.registry))?;
            let rec = open()?.pull(&c, image, &progress).await?;
            println!("{}", rec.id);
        }
        Cmd::Import { archive, name } => {
            let store = open()?;
            for rec in store.import_archive(archive, name.as_deref(), &progress)? {
                println!("{} {}", rec.id, rec.repo_tags.join(","));
            }
        }
        Cmd::List => {
            println!("{:<20} {:>12}  TAGS", "IMAGE ID", "SIZE");
            for rec in open()?.list()? {
                println!(
                    "{:<20} {:>12}  {}",
                    &rec.id.hex()[..12],
                    rec.size,
                    rec.repo_tags.join(",")
                );
            }
        }
        Cmd::Rm { image } => println!("{:?}", open()?.remove(image)?),
        Cmd::Unpack { image, dir } => {
            let store = open()?;
            let stats = store.unpack(&find(&store, image)?, dir)?;
            println!("{stats:?}");
        }
        Cmd::Block { image } => {
            let store = open()?;
            let b = store.block_image(&find(&store, image)?)?;
            println!("{}", b.path.display());
        }
        Cmd::Df => {
            let u = open()?.disk_usage()?;
            println!("bytes {} inodes {}", u.bytes, u.inodes);
        }
        Cmd::BuildTestImages {
            out,
            push,
            busybox,
            kubia,
            kubia_pet,
        } => {
            if out.is_none() && push.is_none() {
                bail!("nothing to do: pass --out DIR and/or --push HOST:PORT");
            }
            let (kubia, kubia_pet) = match (kubia, kubia_pet) {
                (Some(a), Some(b)) => (a.clone(), b.clone()),
                _ => {
                    let cargo = std::env::var_os("CARGO")
                        .map(PathBuf::from)
                        .unwrap_or_else(|| "cargo".into());
                    let ws = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
                    eprintln!("building static kubia binaries...");
                    images::testimages::build_kubia_binaries(&cargo, &ws)?
                }
            };
            let built = images::testimages::test_images(busybox, &kubia, &kubia_pet)?;
            let c = match push {
                Some(reg) => Some(client(&cli, Some(reg))?),
                None => None,
            };
            for (name, img) in &built {
                if let Some(dir) = out {
                    std::fs::create_dir_all(dir)?;
                    let file = dir.join(format!(
                        "{}.oci.tar",
                        name.split(':').next().unwrap_or(name)
                    ));
                    img.write_oci_archive(&file, name)?;
                    println!("wrote {} ({} bytes)", file.display(), img.size());
                }
                if let (Some(reg), Some(c)) = (push, &c) {
                    let target = format!("{reg}/{name}");
                    let d = img.push(c, &target).await?;
                    println!("pushed {target}@{d}");
                }
            }
        }
    }
    Ok(())
}
