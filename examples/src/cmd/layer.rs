//! Layer and image-filesystem commands: `layer pack|apply|ls`, `diff`,
//! `unpack`, `append`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use image_core::{Compression, Digest, Platform};
use image_overlay::append::{append_source, AppendSource, ConfigChanges};
use image_overlay::list::{list, ListOptions};
use image_overlay::pack::{pack_dir, PackOptions};
use image_overlay::unpack::{unpack, UnpackOptions};
use image_overlay::{diff_dirs, flatten_image};
use image_store::image::resolve_image;

use super::progress::UiArgs;
use super::store::StoreArgs;

fn pack_options(compression: &str, level: Option<i32>) -> anyhow::Result<PackOptions> {
    let mut o =
        PackOptions::new(compression.parse::<Compression>()?).with_source_date_epoch_from_env();
    if let Some(l) = level {
        o = o.with_level(l);
    }
    Ok(o)
}

/// Arguments of `imagectl layer`.
#[derive(Debug, clap::Subcommand)]
pub enum LayerCommand {
    /// Pack a directory into a layer tarball; prints its digest and diff ID.
    Pack {
        /// The directory.
        dir: PathBuf,
        /// The output file.
        #[arg(short, long)]
        output: PathBuf,
        /// gzip, zstd or none.
        #[arg(long, default_value = "gzip")]
        compression: String,
        /// The compression level.
        #[arg(long)]
        level: Option<i32>,
    },
    /// Apply a layer tarball onto a directory, whiteouts included.
    Apply {
        /// The layer file (plain, gzip or zstd: sniffed).
        file: PathBuf,
        /// The directory (created when missing).
        dir: PathBuf,
        /// The expected blob digest.
        #[arg(long)]
        digest: Option<Digest>,
        /// The expected diff ID.
        #[arg(long)]
        diff_id: Option<Digest>,
    },
    /// List a layer's entries, like `tar -tv`.
    Ls {
        /// The layer file (plain, gzip or zstd: sniffed).
        file: PathBuf,
    },
}

/// Runs `imagectl layer ...`.
pub fn layer(cmd: LayerCommand) -> anyhow::Result<()> {
    match cmd {
        LayerCommand::Pack {
            dir,
            output,
            compression,
            level,
        } => {
            let out =
                File::create(&output).with_context(|| format!("creating {}", output.display()))?;
            let mut out = BufWriter::new(out);
            let r = pack_dir(&dir, &mut out, &pack_options(&compression, level)?)?;
            out.flush()?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            println!("digest:  {}", r.digest);
            println!("diff_id: {}", r.diff_id);
            println!(
                "size:    {} ({} uncompressed, {} entries)",
                r.size, r.uncompressed_size, r.entries
            );
            println!("type:    {}", r.media_type);
        }
        LayerCommand::Apply {
            file,
            dir,
            digest,
            diff_id,
        } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let f = File::open(&file).with_context(|| format!("opening {}", file.display()))?;
            let mut o = UnpackOptions::default();
            o.digest = digest;
            o.diff_id = diff_id;
            let r = unpack(BufReader::with_capacity(1 << 20, f), &dir, &o)?;
            println!("digest:  {}", r.digest);
            println!("diff_id: {}", r.diff_id);
            println!("entries: {} ({} skipped)", r.entries, r.skipped_total);
        }
        LayerCommand::Ls { file } => {
            let f = BufReader::with_capacity(
                1 << 20,
                File::open(&file).with_context(|| format!("opening {}", file.display()))?,
            );
            let stdout = std::io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            // The first write error stops the output; it is reported after
            // the listing (which still reads the layer to its end).
            let mut write_err = None;
            list(f, &ListOptions::default(), |e| {
                if write_err.is_some() {
                    return;
                }
                let link = e
                    .link_target
                    .as_ref()
                    .map(|l| format!(" -> {}", String::from_utf8_lossy(l)))
                    .unwrap_or_default();
                if let Err(err) = writeln!(
                    out,
                    "{}{} {}/{} {:>10} {}{link}",
                    e.kind.letter(),
                    mode_string(e.mode),
                    e.uid,
                    e.gid,
                    e.size,
                    e.path_lossy()
                ) {
                    write_err = Some(err);
                }
            })
            .with_context(|| format!("listing {}", file.display()))?;
            if let Some(err) = write_err {
                return Err(err.into());
            }
            out.flush()?;
        }
    }
    Ok(())
}

fn mode_string(mode: u32) -> String {
    let mut s = String::with_capacity(9);
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        let bit = 1 << (8 - i);
        s.push(if mode & bit != 0 { c } else { '-' });
    }
    s
}

/// Arguments of `imagectl diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The old tree.
    pub lower: PathBuf,
    /// The new tree.
    pub upper: PathBuf,
    /// The layer file to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// gzip, zstd or none.
    #[arg(long, default_value = "gzip")]
    pub compression: String,
}

/// Writes the layer that turns one tree into the other.
pub fn diff(args: DiffArgs) -> anyhow::Result<()> {
    let out = File::create(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let mut out = BufWriter::new(out);
    let r = diff_dirs(
        &args.lower,
        &args.upper,
        &mut out,
        &pack_options(&args.compression, None)?,
    )?;
    out.flush()?;
    println!("digest:  {}", r.digest);
    println!("diff_id: {}", r.diff_id);
    println!("entries: {}", r.entries);
    Ok(())
}

/// Arguments of `imagectl unpack`.
#[derive(Debug, clap::Args)]
pub struct UnpackArgs {
    /// The image.
    pub reference: String,
    /// The directory to make the root filesystem in (must be empty or absent).
    pub dir: PathBuf,
    /// The platform to choose from an index (default: the host's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Unpack into snapshots of this driver rooted at DIR (one per layer,
    /// named by chain ID, which are printed) instead of flattening.
    #[arg(long, value_enum)]
    pub driver: Option<super::snapshot::DriverArg>,
}

/// Flattens an image's layers onto a directory (or, with `--driver`,
/// unpacks them into snapshots there).
pub fn unpack_image(store: &StoreArgs, ui: &UiArgs, args: UnpackArgs) -> anyhow::Result<()> {
    let platform = args
        .platform
        .as_deref()
        .map(str::parse::<Platform>)
        .transpose()?;
    if let Some(driver) = args.driver {
        return super::snapshot::unpack_into_snapshots(
            store,
            &args.reference,
            platform.as_ref(),
            &args.dir,
            driver,
            ui,
        );
    }
    let s = store.open()?;
    let image = resolve_image(&s, &args.reference, platform.as_ref())?;
    if args.dir.exists() && std::fs::read_dir(&args.dir)?.next().is_some() {
        bail!("{} is not empty", args.dir.display());
    }
    let options = UnpackOptions::default().with_tracker(ui.tracker());
    let reports = flatten_image(&s, &image, &args.dir, &options)?;
    let entries: u64 = reports.iter().map(|r| r.entries).sum();
    println!(
        "unpacked {} ({} layers, {entries} entries) into {}",
        image.id(),
        reports.len(),
        args.dir.display()
    );
    Ok(())
}

/// Arguments of `imagectl append`.
#[derive(Debug, clap::Args)]
pub struct AppendArgs {
    /// The base image (default: none, an empty image).
    #[arg(long)]
    pub base: Option<String>,
    /// A directory to pack as the new layer.
    #[arg(long, conflicts_with = "layer")]
    pub rootfs: Option<PathBuf>,
    /// A layer tarball (plain, gzip or zstd) to add as it is.
    #[arg(long)]
    pub layer: Option<PathBuf>,
    /// The name to give the new image.
    #[arg(short, long)]
    pub tag: String,
    /// Set the command (the remaining arguments).
    #[arg(long, num_args = 1.., allow_hyphen_values = true)]
    pub cmd: Option<Vec<String>>,
    /// Set the entrypoint.
    #[arg(long, num_args = 1.., allow_hyphen_values = true)]
    pub entrypoint: Option<Vec<String>>,
    /// Add or replace an environment variable (KEY=VALUE), repeatable.
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Set the working directory.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Set the user.
    #[arg(short, long)]
    pub user: Option<String>,
    /// The platform of a new image without a base (default: the host's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Compression of a packed layer: gzip, zstd or none.
    #[arg(long, default_value = "gzip")]
    pub compression: String,
}

/// Makes a new image from a base plus a layer, with config changes.
pub fn append(store: &StoreArgs, args: AppendArgs) -> anyhow::Result<()> {
    let platform = match &args.platform {
        Some(p) => p.parse::<Platform>()?,
        None => Platform::host(),
    };
    let mut changes = ConfigChanges::new();
    changes.cmd = args.cmd;
    changes.entrypoint = args.entrypoint;
    changes.env = args.env;
    changes.working_dir = args.workdir;
    changes.user = args.user;
    let pack = pack_options(&args.compression, None)?;
    let mut file;
    let source = if let Some(dir) = &args.rootfs {
        changes.created_by = Some(format!("imagectl append --rootfs {}", dir.display()));
        AppendSource::Dir(dir, &pack)
    } else if let Some(path) = &args.layer {
        changes.created_by = Some(format!("imagectl append --layer {}", path.display()));
        file = BufReader::with_capacity(
            1 << 20,
            File::open(path).with_context(|| format!("opening {}", path.display()))?,
        );
        AppendSource::Tarball(&mut file)
    } else {
        changes.created_by = Some("imagectl append (config only)".into());
        AppendSource::ConfigOnly
    };
    let store = store.open()?;
    let appended = append_source(
        &store,
        args.base.as_deref(),
        source,
        &platform,
        &changes,
        &args.tag,
    )?;
    println!("{} {}", args.tag, appended.manifest.digest());
    println!("image id: {}", appended.config.image_id());
    Ok(())
}
