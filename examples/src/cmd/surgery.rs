//! Image surgery commands: `squash`, `rebase`, `mutate`, `export`
//! (image_overlay::surgery).

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use image_core::Platform;
use image_overlay::surgery::{
    export, mutate, rebase, squash, MergeLimits, Mutation, NewLayer, SquashFrom, SquashOptions,
};

use super::store::StoreArgs;

fn platform(p: Option<&str>) -> anyhow::Result<Option<Platform>> {
    p.map(|p| p.parse::<Platform>().map_err(anyhow::Error::from))
        .transpose()
}

/// Prints the new image's name, manifest digest and ID.
fn made(name: &str, manifest: &image_core::Manifest, config: &image_core::ImageConfig) {
    println!("{name} {}", manifest.digest());
    println!("image id: {}", config.image_id());
}

/// Arguments of `imagectl squash`.
#[derive(Debug, clap::Args)]
pub struct SquashArgs {
    /// The image to squash.
    pub reference: String,
    /// The name of the new image.
    pub new_reference: String,
    /// Squash the layers from this one (0 is the bottom layer) to the top.
    #[arg(long, conflicts_with = "base")]
    pub from: Option<usize>,
    /// Squash the layers above this image, which must be the image's base.
    #[arg(long)]
    pub base: Option<String>,
    /// The platform to pick from an index (default: the host's).
    #[arg(long)]
    pub platform: Option<String>,
}

/// Squashes an image's layers into one; prints the new image and the bytes freed.
pub fn squash_cmd(store: &StoreArgs, args: SquashArgs) -> anyhow::Result<()> {
    let from = match (args.from, args.base) {
        (Some(n), _) => SquashFrom::Layer(n),
        (None, Some(b)) => SquashFrom::Base(b),
        (None, None) => SquashFrom::All,
    };
    let mut options = SquashOptions::new(from);
    options.platform = platform(args.platform.as_deref())?;
    options.created_by = Some(format!("imagectl squash {}", args.reference));
    let store = store.open()?;
    let r = squash(&store, &args.reference, &args.new_reference, &options)?;
    made(&args.new_reference, &r.manifest, &r.config);
    println!(
        "squashed {} layers (from layer {}): {} -> {} bytes compressed, {} -> {} bytes uncompressed",
        r.squashed,
        r.from,
        r.before.compressed,
        r.after.compressed,
        r.before.uncompressed,
        r.after.uncompressed
    );
    println!(
        "freed: {} bytes compressed, {} bytes uncompressed",
        r.freed_compressed(),
        r.freed_uncompressed()
    );
    Ok(())
}

/// Arguments of `imagectl rebase`.
#[derive(Debug, clap::Args)]
pub struct RebaseArgs {
    /// The image to rebase.
    pub reference: String,
    /// Its current base (its layers must be the image's first ones).
    #[arg(long)]
    pub old_base: String,
    /// The base to put under the image's own layers.
    #[arg(long)]
    pub new_base: String,
    /// The name of the new image.
    pub new_reference: String,
    /// The platform to pick from an index (default: the host's).
    #[arg(long)]
    pub platform: Option<String>,
}

/// Swaps an image's base layers for another base's.
pub fn rebase_cmd(store: &StoreArgs, args: RebaseArgs) -> anyhow::Result<()> {
    let platform = platform(args.platform.as_deref())?;
    let store = store.open()?;
    let r = rebase(
        &store,
        &args.reference,
        &args.old_base,
        &args.new_base,
        &args.new_reference,
        platform.as_ref(),
    )?;
    made(&args.new_reference, &r.manifest, &r.config);
    Ok(())
}

/// Arguments of `imagectl mutate`.
#[derive(Debug, clap::Args)]
pub struct MutateArgs {
    /// The image to change (it stays as it is).
    pub reference: String,
    /// The name of the new image.
    pub new_reference: String,
    /// Add or replace an environment variable (KEY=VALUE), repeatable.
    #[arg(long)]
    pub env: Vec<String>,
    /// Add or replace a label (KEY=VALUE), repeatable.
    #[arg(long)]
    pub label: Vec<String>,
    /// Set the entrypoint (the remaining arguments up to the next option).
    #[arg(long, num_args = 1.., allow_hyphen_values = true)]
    pub entrypoint: Option<Vec<String>>,
    /// Set the command.
    #[arg(long, num_args = 1.., allow_hyphen_values = true)]
    pub cmd: Option<Vec<String>>,
    /// Set the user.
    #[arg(long)]
    pub user: Option<String>,
    /// Set the working directory.
    #[arg(long)]
    pub workdir: Option<String>,
    /// Expose a port (80, 80/tcp, 53/udp), repeatable.
    #[arg(long)]
    pub expose: Vec<String>,
    /// Declare a volume (an absolute path), repeatable.
    #[arg(long)]
    pub volume: Vec<String>,
    /// Set the stop signal.
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Add or replace a manifest annotation (KEY=VALUE), repeatable.
    #[arg(long)]
    pub annotation: Vec<String>,
    /// Set the created time (RFC 3339) of the image and of a new layer.
    #[arg(long)]
    pub created: Option<String>,
    /// Append a layer: a directory, or a layer tarball (plain, gzip or zstd).
    #[arg(long, conflicts_with = "remove")]
    pub append: Option<PathBuf>,
    /// Remove a path, as a new layer holding its whiteout.
    #[arg(long)]
    pub remove: Option<String>,
    /// The platform to pick from an index (default: the host's).
    #[arg(long)]
    pub platform: Option<String>,
}

fn pairs(what: &str, values: Vec<String>) -> anyhow::Result<Vec<(String, String)>> {
    values
        .into_iter()
        .map(|v| match v.split_once('=') {
            Some((k, val)) if !k.is_empty() => Ok((k.to_owned(), val.to_owned())),
            _ => bail!("--{what} {v:?}: not KEY=VALUE"),
        })
        .collect()
}

/// Makes a new image with config changes, a layer appended or a path removed.
pub fn mutate_cmd(store: &StoreArgs, args: MutateArgs) -> anyhow::Result<()> {
    let platform = platform(args.platform.as_deref())?;
    let mut m = Mutation {
        entrypoint: args.entrypoint,
        cmd: args.cmd,
        env: args.env,
        user: args.user,
        working_dir: args.workdir,
        labels: pairs("label", args.label)?,
        exposed_ports: args.expose,
        volumes: args.volume,
        stop_signal: args.stop_signal,
        annotations: pairs("annotation", args.annotation)?,
        created: args.created,
        created_by: None,
    };
    let mut file;
    let layer = match (&args.append, &args.remove) {
        (Some(path), _) => {
            m.created_by = Some(format!("imagectl mutate --append {}", path.display()));
            let meta =
                std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
            if meta.is_dir() {
                NewLayer::Dir(path)
            } else {
                file = BufReader::with_capacity(
                    1 << 20,
                    File::open(path).with_context(|| format!("opening {}", path.display()))?,
                );
                NewLayer::Tar(&mut file)
            }
        }
        (None, Some(p)) => {
            m.created_by = Some(format!("imagectl mutate --remove {p}"));
            NewLayer::Remove(p)
        }
        (None, None) => NewLayer::None,
    };
    let store = store.open()?;
    let r = mutate(
        &store,
        &args.reference,
        &args.new_reference,
        &m,
        layer,
        platform.as_ref(),
    )?;
    made(&args.new_reference, &r.manifest, &r.config);
    Ok(())
}

/// Arguments of `imagectl export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The image to export.
    pub reference: String,
    /// The file to write (default: standard output). Written under a
    /// temporary name and renamed when complete.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// The platform to pick from an index (default: the host's).
    #[arg(long)]
    pub platform: Option<String>,
}

/// Writes an image's final filesystem as one tar stream.
pub fn export_cmd(store: &StoreArgs, args: ExportArgs) -> anyhow::Result<()> {
    let platform = platform(args.platform.as_deref())?;
    let store = store.open()?;
    let limits = MergeLimits::default();
    match &args.output {
        None => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            export(&store, &args.reference, platform.as_ref(), &mut out, limits)?;
            out.flush().context("writing standard output")?;
        }
        Some(path) => {
            let name = path
                .file_name()
                .with_context(|| format!("{} names no file", path.display()))?;
            let mut tmp_name = std::ffi::OsString::from(".");
            tmp_name.push(name);
            tmp_name.push(format!(".tmp-{}", std::process::id()));
            let tmp = path.with_file_name(tmp_name);
            let result = (|| {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&tmp)
                    .with_context(|| format!("creating {}", tmp.display()))?;
                export(&store, &args.reference, platform.as_ref(), &mut f, limits)?;
                f.sync_all().context("syncing the export")?;
                std::fs::rename(&tmp, path)
                    .with_context(|| format!("renaming the export to {}", path.display()))
            })();
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            result?;
        }
    }
    Ok(())
}
