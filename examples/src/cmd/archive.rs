//! Archive and copy commands: `load`, `save`, `copy`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use image_store::archive::{
    load as load_archive, save_docker, save_oci_with, DockerLayout, LoadOptions, RepoTagForm,
    SaveImage, SaveOptions,
};
use image_store::copy::{copy_tag_with, CopyOptions};
use image_store::OciDir;

use super::progress::UiArgs;
use super::store::StoreArgs;

/// Arguments of `imagectl load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// A `docker save` tarball (either layout) or an OCI archive; `-` for standard input.
    pub file: PathBuf,
    /// The repository for OCI archives whose ref names are bare tags (`latest`).
    #[arg(long)]
    pub repository: Option<String>,
    /// The most bytes a layer may expand to while its diff ID is checked
    /// (`512m`, `8g`; default 64 GiB, unpack's limit): a decompression bomb
    /// is refused once it passes this, without expanding the rest.
    #[arg(long, value_name = "SIZE")]
    pub max_layer_size: Option<String>,
}

/// Imports an archive into the store, as a stream.
pub fn load(store: &StoreArgs, ui: &UiArgs, args: LoadArgs) -> anyhow::Result<()> {
    let s = store.open()?;
    let mut options = LoadOptions::default().with_tracker(ui.tracker());
    if let Some(r) = args.repository {
        options = options.repository(r);
    }
    if let Some(size) = &args.max_layer_size {
        options.max_expanded_bytes =
            image_runtime::spec::resources::parse_bytes("--max-layer-size", size)?;
    }
    let report = if args.file.as_os_str() == "-" {
        load_archive(&s, std::io::stdin().lock(), &options)?
    } else {
        let f =
            File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
        load_archive(&s, BufReader::with_capacity(1 << 20, f), &options)?
    };
    for image in &report.images {
        let names = if image.tags.is_empty() {
            "<untagged>".to_string()
        } else {
            image.tags.join(", ")
        };
        println!("Loaded image: {names} ({})", image.descriptor.digest());
    }
    println!(
        "{} blobs, {} bytes ({:?})",
        report.blobs, report.bytes, report.format
    );
    Ok(())
}

/// Arguments of `imagectl save`.
#[derive(Debug, clap::Args)]
pub struct SaveArgs {
    /// The images to save.
    #[arg(required = true)]
    pub references: Vec<String>,
    /// The output file (`-` for standard output).
    #[arg(short, long)]
    pub output: PathBuf,
    /// docker (`docker save` layout, which docker/podman/skopeo load) or oci (an OCI layout in a tar).
    #[arg(long, default_value = "docker")]
    pub format: String,
    /// In docker format, write RepoTags in Docker's short form (`busybox:latest`)
    /// instead of the full one (`docker.io/library/busybox:latest`, which podman needs).
    #[arg(long)]
    pub familiar: bool,
    /// In docker format, also lay the archive out as Docker 25+ does (blobs/, index.json).
    #[arg(long)]
    pub oci_layout: bool,
    /// The platform to choose from an index (docker format).
    #[arg(long)]
    pub platform: Option<String>,
}

/// Exports images to an archive, as a stream.
pub fn save(store: &StoreArgs, ui: &UiArgs, args: SaveArgs) -> anyhow::Result<()> {
    let s = store.open()?;
    let options = SaveOptions::default().with_tracker(ui.tracker());
    let images = args
        .references
        .iter()
        .map(|r| SaveImage::from_tag(&s, r))
        .collect::<Result<Vec<_>, _>>()?;
    if args.output.as_os_str() == "-" {
        let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        let report = save_to(&s, &images, &args, options.clone(), &mut out)?;
        out.flush()?;
        return saved(&report);
    }
    let report = write_file(&args.output, |out| {
        save_to(&s, &images, &args, options.clone(), out)
    })?;
    saved(&report)
}

/// Writes `output` with `write`, beside it and renamed over it only when
/// complete and synced: a refused or failed write leaves no partial file.
pub fn write_file<R>(
    output: &Path,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<R>,
) -> anyhow::Result<R> {
    let partial = partial_path(output);
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let written = write(&mut out).and_then(|r| {
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&partial, output)
            .with_context(|| format!("renaming {} to {}", partial.display(), output.display()))?;
        Ok(r)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// `<dir>/.<name>.<pid>.partial` for the output `<dir>/<name>`.
fn partial_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "archive".into());
    output.with_file_name(format!(".{name}.{}.partial", std::process::id()))
}

fn save_to(
    s: &OciDir,
    images: &[SaveImage],
    args: &SaveArgs,
    options: SaveOptions,
    out: &mut dyn Write,
) -> anyhow::Result<image_store::archive::SaveReport> {
    Ok(match args.format.as_str() {
        "docker" => {
            let mut o = options;
            if args.familiar {
                o = o.repo_tags(RepoTagForm::Familiar);
            }
            if args.oci_layout {
                o = o.layout(DockerLayout::Oci);
            }
            if let Some(p) = &args.platform {
                o = o.platform(p.parse()?);
            }
            save_docker(s, images, out, &o)?
        }
        "oci" => save_oci_with(s, images, out, &options)?,
        other => bail!("unknown archive format {other:?} (docker or oci)"),
    })
}

fn saved(report: &image_store::archive::SaveReport) -> anyhow::Result<()> {
    eprintln!(
        "saved {} images, {} files, {} bytes",
        report.images, report.files, report.bytes
    );
    Ok(())
}

/// Arguments of `imagectl copy`.
#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// The source: `REF` (or `store:REF`) in the store, `oci:DIR[:REF]`
    /// in an OCI layout, `oci-archive:PATH[:REF]` in an OCI archive (read
    /// in place; written whole, then renamed into place), `docker://REF`
    /// on a registry. A source layout or archive without `:REF` means its
    /// only image (referrers listed beside it aside; several images are
    /// refused).
    pub source: String,
    /// The destination, in the same forms. A destination layout or
    /// archive without `:REF` gets the image without a name (in a
    /// layout, an entry of `index.json` without
    /// `org.opencontainers.image.ref.name`, added beside the others, as
    /// skopeo does).
    pub destination: String,
    #[command(flatten)]
    pub registry: super::registry::CopyFlags,
}

/// The store and reference `spec` names. A source layout must exist (a
/// directory without `oci-layout` is refused and left untouched, as umoci
/// does); a destination layout is created when missing.
fn location<'a>(
    store: &StoreArgs,
    spec: &'a str,
    create: bool,
) -> anyhow::Result<(OciDir, &'a str)> {
    if spec.starts_with(super::registry::DOCKER_PREFIX)
        || spec.starts_with(super::registry::ARCHIVE_PREFIX)
    {
        // A registry or an archive: no store at this end (the store is
        // opened, unused).
        return Ok((store.open()?, spec));
    }
    if let Some(rest) = spec.strip_prefix("oci:") {
        // A layout without a reference (an empty name) means its only
        // image at a source and an unnamed entry at a destination, as
        // skopeo's `oci:DIR` does.
        let (dir, reference) = rest.split_once(':').unwrap_or((rest, ""));
        let layout = if create {
            OciDir::open_or_create(dir)
        } else {
            OciDir::open(dir)
        }
        .with_context(|| format!("opening {dir}"))?;
        Ok((layout, reference))
    } else {
        Ok((store.open()?, spec.strip_prefix("store:").unwrap_or(spec)))
    }
}

/// Copies an image (or a whole index) between stores, layouts, archives
/// and registries, skipping blobs the destination has.
pub fn copy(store: &StoreArgs, ui: &UiArgs, args: CopyArgs) -> anyhow::Result<()> {
    let archive = [&args.source, &args.destination]
        .iter()
        .any(|s| s.starts_with(super::registry::ARCHIVE_PREFIX));
    // `oci:DIR`: the layout's only image at a source, an unnamed entry
    // at a destination, both image-registry's copy's.
    let unnamed_layout = [&args.source, &args.destination].iter().any(|s| {
        s.strip_prefix(super::registry::LAYOUT_PREFIX)
            .is_some_and(|rest| !rest.contains(':'))
    });
    if archive
        || unnamed_layout
        || super::registry::wants_registry_copy(&args.source, &args.destination, &args.registry)
    {
        let (src, src_ref) = location(store, &args.source, false)?;
        let (dst, dst_ref) = location(store, &args.destination, true)?;
        return super::registry::copy(
            (&src, src_ref, &args.source),
            (&dst, dst_ref, &args.destination),
            ui,
            &args.registry,
        );
    }
    let (src, src_ref) = location(store, &args.source, false)?;
    let (dst, dst_ref) = location(store, &args.destination, true)?;
    let options = CopyOptions::default().with_tracker(ui.tracker());
    let report = copy_tag_with(&src, src_ref, &dst, Some(dst_ref), &options)?;
    println!(
        "copied {} blobs ({} bytes), skipped {} already present: {}",
        report.copied,
        report.bytes,
        report.skipped,
        report.descriptor.digest()
    );
    Ok(())
}
