//! `imagectl analyze`, `secrets` and `layers`: image_overlay's analysis of
//! an image's layers (each read once, nothing unpacked).
//!
//! Sources: `REF` in the store, `oci:DIR:REF` in an OCI layout,
//! `archive:FILE` for a `docker save` tarball or an OCI archive (loaded
//! into a temporary store first, removed after), and `docker://REF` on a
//! registry (the manifest and config fetched into memory, each layer
//! streamed once from its blob GET and verified: nothing written to disk).
//!
//! JSON shapes (documented in `imagectl analyze --help`):
//! - `analyze --json`: `{"image", "manifest", "efficiency" (0..1),
//!   "wastedBytes", "totalBytes", "userBytes", "wastedUserPercent"
//!   (0..100 or null), "layers": [{"index", "digest", "diffId",
//!   "mediaType", "history", "createdBy", "compressedSize",
//!   "uncompressedSize", "entries", "bytes", "usefulBytes",
//!   "wastedBytes", "added", "modified", "deleted"}], "inefficiencies":
//!   [{"path", "count", "cumulativeSize"}], "secrets" (count)}`;
//! - `secrets --json`: `{"findings": [{"rule", "layer": {"index",
//!   "digest"} | null, "path" | null, "history" | null, "source",
//!   "excerpt", "hint", "fingerprint"}]}`, plus `"truncated": true` when
//!   more were found than kept;
//! - `layers --json`: `{"layers": [{... as analyze, "changes": [{"path",
//!   "kind", "type", "size", "mode", "previous"?, "removed"?}]}]}`.

use std::io::{BufReader, Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use image_core::{Descriptor, DescriptorExt, Digest, MediaType, Platform};
use image_overlay::analysis::{
    analyze, html, AllowList, Analysis, AnalyzeOptions, ChangeKind, Gates, SecretOptions,
};
use image_store::archive::{load, LoadOptions};
use image_store::image::{resolve_descriptor, resolve_image, Image};
use image_store::{ContentError, Info, OciDir, Provider};
use serde::Serialize;

use super::store::StoreArgs;

/// Where the image is, and what keeps it readable.
#[derive(Debug, clap::Args)]
pub struct SourceArgs {
    /// The image: `REF` in the store, `oci:DIR:REF`, `archive:FILE` (a
    /// docker-save tarball or OCI archive), or `docker://REF` (a registry).
    pub reference: String,
    /// The platform to choose from an index (default: the host's).
    #[arg(long)]
    pub platform: Option<String>,
    /// For `docker://REF`: allow plain HTTP and unverified TLS.
    #[arg(long)]
    pub insecure: bool,
}

/// Arguments of `imagectl analyze`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "JSON (--json): {\"image\", \"manifest\", \"efficiency\" (0..1), \
\"wastedBytes\", \"totalBytes\", \"userBytes\", \"wastedUserPercent\" (0..100 or null), \
\"layers\": [{\"index\", \"digest\", \"diffId\", \"compressedSize\", \"uncompressedSize\", \
\"bytes\", \"usefulBytes\", \"wastedBytes\", \"history\", \"createdBy\", ...}], \
\"inefficiencies\": [{\"path\", \"count\", \"cumulativeSize\"}], \"secrets\": N}.\n\
Efficiency and waste are computed as dive computes them. A threshold not met \
exits with status 1 and a one-line reason."
)]
pub struct AnalyzeArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as a self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Fail when more bytes than this are wasted (suffixes k, m, g).
    #[arg(long, value_name = "N")]
    pub max_wasted_bytes: Option<String>,
    /// Fail when the wasted bytes are more than P percent of the bytes
    /// above the first layer.
    #[arg(long, value_name = "P")]
    pub max_wasted_percent: Option<f64>,
    /// Fail when the efficiency score (0..1) is below F.
    #[arg(long, value_name = "F")]
    pub min_efficiency: Option<f64>,
}

/// Arguments of `imagectl secrets`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "JSON (--json): {\"findings\": [{\"rule\", \"layer\": {\"index\", \
\"digest\"} or null, \"path\" or null, \"history\" or null, \"source\", \"excerpt\" \
(redacted), \"hint\", \"fingerprint\"}]} (and \"truncated\": true when more were found \
than kept). An allow list has one path glob (`*`, `?`, `**`) or `fingerprint:HEX` \
per line."
)]
pub struct SecretsArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
    /// A file of accepted findings (path globs and fingerprints).
    #[arg(long, value_name = "FILE")]
    pub allow: Option<PathBuf>,
}

/// Arguments of `imagectl layers`.
#[derive(Debug, clap::Args)]
pub struct LayersArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Print the changes as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Resolves the source and runs the analysis on it; a temporary store
/// (archives, registries) lives until the analysis is done.
fn run(
    store: &StoreArgs,
    source: &SourceArgs,
    options: &AnalyzeOptions,
) -> anyhow::Result<Analysis> {
    let platform = source
        .platform
        .as_deref()
        .map(str::parse::<Platform>)
        .transpose()?;
    let spec = source.reference.as_str();
    if let Some(rest) = spec.strip_prefix("oci:") {
        let (dir, reference) = rest
            .split_once(':')
            .with_context(|| format!("{spec}: expected oci:DIR:REF"))?;
        let layout = OciDir::open(dir).with_context(|| format!("opening {dir}"))?;
        let image = resolve_image(&layout, reference, platform.as_ref())?;
        return Ok(analyze(&layout, &image, options)?);
    }
    if let Some(file) = spec.strip_prefix("archive:") {
        let tmp = temp_store()?;
        let f = std::fs::File::open(file).with_context(|| format!("opening {file}"))?;
        let report = load(
            &tmp.1,
            BufReader::with_capacity(1 << 20, f),
            &LoadOptions::default(),
        )?;
        let Some(first) = report.images.first() else {
            bail!("{file}: the archive holds no image");
        };
        let image = resolve_descriptor(&tmp.1, file, &first.descriptor, platform.as_ref())?;
        return Ok(analyze(&tmp.1, &image, options)?);
    }
    if let Some(reference) = spec.strip_prefix("docker://") {
        let parsed = image_core::Reference::parse_name(reference)?;
        let client = connect(&parsed, source.insecure)?;
        let remote = Remote {
            client: &client,
            reference: parsed.clone(),
        };
        let root = client.get_manifest(&parsed)?.descriptor();
        let image = resolve_descriptor(&remote, reference, &root, platform.as_ref())?;
        return Ok(analyze(&remote, &image, options)?);
    }
    let s = store.open()?;
    let image: Image = resolve_image(&s, spec, platform.as_ref())?;
    Ok(analyze(&s, &image, options)?)
}

/// A blocking client for `reference`'s registry (plain HTTP and unverified
/// TLS allowed for its host when `insecure`), with the default credentials.
fn connect(
    reference: &image_core::Reference,
    insecure: bool,
) -> anyhow::Result<image_registry::blocking::Client> {
    use image_registry::{blocking, Client, RegistryConfig};
    let mut config = RegistryConfig::new();
    if insecure {
        config = config.with_insecure(reference.domain());
    }
    Ok(blocking::Client::from_builder(
        Client::builder()
            .config(config)
            .docker_config(image_registry::DockerConfig::load_default()?),
    )?)
}

/// A registry repository as a read-only [`Provider`]: manifests and indexes
/// from the manifest endpoint (their digest checked by the client), every
/// other blob streamed from its blob GET and verified as it is read. The
/// analysis reads each layer from it once; nothing is written to disk.
struct Remote<'c> {
    client: &'c image_registry::blocking::Client,
    reference: image_core::Reference,
}

impl Remote<'_> {
    fn failed(&self, digest: &Digest, e: image_registry::RegistryError) -> ContentError {
        ContentError::Read {
            what: format!("{}@{digest}", self.reference.name()),
            source: std::io::Error::other(e),
        }
    }
}

impl Provider for Remote<'_> {
    fn reader(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, ContentError> {
        let size = self
            .try_info(digest)?
            .ok_or_else(|| ContentError::NotFound {
                digest: digest.clone(),
            })?
            .size;
        let d = image_core::manifest::descriptor(
            &MediaType::Other("application/octet-stream".into()),
            digest,
            size,
        );
        self.reader_for(&d)
    }

    fn try_info(&self, digest: &Digest) -> Result<Option<Info>, ContentError> {
        let size = self
            .client
            .blob_size(&self.reference, digest)
            .map_err(|e| self.failed(digest, e))?;
        Ok(size.map(|size| Info::new(digest.clone(), size, None)))
    }

    fn reader_for(&self, descriptor: &Descriptor) -> Result<Box<dyn Read + Send>, ContentError> {
        self.open(descriptor, true)
    }

    /// Raw registry bytes: never checked by a store, so hashed where read.
    fn verified_at_ingest(&self) -> bool {
        false
    }

    /// The layers: the analysis hashes what it reads and checks digest,
    /// size and diff ID itself before it returns, so each is hashed once.
    fn reader_for_unverified(
        &self,
        descriptor: &Descriptor,
    ) -> Result<Box<dyn Read + Send>, ContentError> {
        self.open(descriptor, false)
    }
}

impl Remote<'_> {
    /// A manifest or index from the manifest endpoint (its digest checked
    /// by the client), any other blob streamed from its blob GET, verified
    /// as it is read when `verify`.
    fn open(
        &self,
        descriptor: &Descriptor,
        verify: bool,
    ) -> Result<Box<dyn Read + Send>, ContentError> {
        let digest = descriptor
            .checked_digest()
            .map_err(|source| ContentError::InvalidDescriptor { source })?;
        let media_type = image_core::manifest::descriptor_media_type(descriptor);
        if media_type.is_manifest() || media_type.is_index() {
            let doc = self
                .client
                .get_manifest(&self.reference.with_digest(digest.clone()))
                .map_err(|e| self.failed(&digest, e))?;
            return Ok(Box::new(std::io::Cursor::new(doc.raw().to_vec())));
        }
        let blob = if verify {
            self.client.blob_reader(&self.reference, descriptor)
        } else {
            self.client
                .blob_reader_unverified(&self.reference, descriptor)
        };
        Ok(Box::new(blob.map_err(|e| self.failed(&digest, e))?))
    }
}

/// A store in a temporary directory (removed when dropped).
fn temp_store() -> anyhow::Result<(tempfile::TempDir, OciDir)> {
    let dir = tempfile::Builder::new()
        .prefix("imagectl-analyze-")
        .tempdir()
        .context("creating a temporary store")?;
    let store =
        OciDir::open_or_create(dir.path().join("layout")).context("creating a temporary store")?;
    Ok((dir, store))
}

/// A layer without its change list.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LayerView<'a> {
    index: usize,
    digest: String,
    diff_id: String,
    media_type: &'a str,
    history: Option<usize>,
    created_by: Option<&'a str>,
    compressed_size: u64,
    uncompressed_size: u64,
    entries: u64,
    bytes: u64,
    useful_bytes: u64,
    wasted_bytes: u64,
    added: u64,
    modified: u64,
    deleted: u64,
}

fn layer_views(a: &Analysis) -> Vec<LayerView<'_>> {
    a.layers
        .iter()
        .map(|l| LayerView {
            index: l.index,
            digest: l.digest.to_string(),
            diff_id: l.diff_id.to_string(),
            media_type: &l.media_type,
            history: l.history,
            created_by: l.created_by.as_deref(),
            compressed_size: l.compressed_size,
            uncompressed_size: l.uncompressed_size,
            entries: l.entries,
            bytes: l.bytes,
            useful_bytes: l.useful_bytes,
            wasted_bytes: l.wasted_bytes,
            added: l.added,
            modified: l.modified,
            deleted: l.deleted,
        })
        .collect()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AnalyzeJson<'a> {
    image: &'a str,
    manifest: String,
    efficiency: f64,
    wasted_bytes: u64,
    total_bytes: u64,
    user_bytes: u64,
    wasted_user_percent: Option<f64>,
    layers: Vec<LayerView<'a>>,
    inefficiencies: &'a [image_overlay::analysis::PathWaste],
    secrets: usize,
}

/// Prints the efficiency report (and writes the HTML page), then checks
/// the thresholds.
pub fn analyze_cmd(store: &StoreArgs, args: AnalyzeArgs) -> anyhow::Result<()> {
    let mut gates = Gates::new();
    if let Some(n) = &args.max_wasted_bytes {
        gates = gates.max_wasted_bytes(image_runtime::spec::resources::parse_bytes(
            "--max-wasted-bytes",
            n,
        )?);
    }
    if let Some(p) = args.max_wasted_percent {
        if !(0.0..=100.0).contains(&p) {
            bail!("--max-wasted-percent {p}: expected 0 to 100");
        }
        gates = gates.max_wasted_percent(p);
    }
    if let Some(f) = args.min_efficiency {
        if !(0.0..=1.0).contains(&f) {
            bail!("--min-efficiency {f}: expected 0 to 1");
        }
        gates = gates.min_efficiency(f);
    }
    let a = run(
        store,
        &args.source,
        &AnalyzeOptions::default().with_changes(false),
    )?;
    let e = &a.efficiency;
    let mut out = std::io::stdout().lock();
    if args.json {
        let json = AnalyzeJson {
            image: &a.image,
            manifest: a.manifest.to_string(),
            efficiency: e.efficiency,
            wasted_bytes: e.wasted_bytes,
            total_bytes: e.total_bytes,
            user_bytes: e.user_bytes,
            wasted_user_percent: e.wasted_user_percent,
            layers: layer_views(&a),
            inefficiencies: &e.inefficiencies,
            secrets: a.findings.len(),
        };
        serde_json::to_writer_pretty(&mut out, &json)?;
        writeln!(out)?;
    } else {
        writeln!(out, "image:       {} ({})", a.image, a.manifest)?;
        writeln!(out, "efficiency:  {:.4} %", 100.0 * e.efficiency)?;
        writeln!(out, "total bytes: {}", e.total_bytes)?;
        writeln!(
            out,
            "wasted:      {} bytes ({} of the bytes above the base)",
            e.wasted_bytes,
            e.wasted_user_percent
                .map_or("n/a".to_owned(), |p| format!("{p:.2} %"))
        )?;
        writeln!(
            out,
            "\n  # {:>12} {:>12} {:>12}  created by",
            "bytes", "useful", "wasted"
        )?;
        for l in &a.layers {
            writeln!(
                out,
                "{:>3} {:>12} {:>12} {:>12}  {}",
                l.index,
                l.bytes,
                l.useful_bytes,
                l.wasted_bytes,
                l.created_by.as_deref().unwrap_or("")
            )?;
        }
        if !e.inefficiencies.is_empty() {
            writeln!(out, "\ncount {:>12}  path", "total bytes")?;
            for p in e.inefficiencies.iter().take(20) {
                writeln!(out, "{:>5} {:>12}  {}", p.count, p.cumulative_size, p.path)?;
            }
        }
        if !a.findings.is_empty() {
            writeln!(
                out,
                "\n{} possible secrets: see `imagectl secrets {}`",
                a.findings.len(),
                args.source.reference
            )?;
        }
    }
    out.flush()?;
    if let Some(path) = &args.html {
        std::fs::write(path, html::render(&a))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    e.check(&gates)?;
    Ok(())
}

#[derive(Serialize)]
struct SecretsJson<'a> {
    findings: &'a [image_overlay::analysis::Finding],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

/// Prints the secrets found.
pub fn secrets_cmd(store: &StoreArgs, args: SecretsArgs) -> anyhow::Result<()> {
    let mut secrets = SecretOptions::default();
    if let Some(path) = &args.allow {
        secrets = secrets.with_allow(AllowList::read(path)?);
    }
    let a = run(
        store,
        &args.source,
        &AnalyzeOptions::default()
            .with_secrets(secrets)
            .with_changes(false),
    )?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(
            &mut out,
            &SecretsJson {
                findings: &a.findings,
                truncated: a.findings_truncated,
            },
        )?;
        writeln!(out)?;
    } else {
        for f in &a.findings {
            let layer = f
                .layer
                .as_ref()
                .map_or("config".to_owned(), |l| format!("layer {}", l.index));
            let place = match (&f.path, f.history) {
                (Some(p), _) => p.clone(),
                (None, Some(h)) => format!("history[{h}]"),
                (None, None) => format!("{:?}", f.source),
            };
            writeln!(
                out,
                "{}  {layer}  {place}  {}  [{}]",
                f.rule, f.excerpt, f.fingerprint
            )?;
            writeln!(out, "    {}", f.hint)?;
        }
        if a.findings_truncated {
            writeln!(out, "(more findings than kept)")?;
        }
        if a.findings.is_empty() {
            writeln!(out, "no secrets found")?;
        }
    }
    out.flush()?;
    Ok(())
}

#[derive(Serialize)]
struct LayersJson<'a> {
    layers: &'a [image_overlay::analysis::LayerAnalysis],
}

/// Prints each layer's changes, sorted by path.
pub fn layers_cmd(store: &StoreArgs, args: LayersArgs) -> anyhow::Result<()> {
    let options =
        AnalyzeOptions::default().with_secrets(SecretOptions::default().with_enabled(false));
    let a = run(store, &args.source, &options)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &LayersJson { layers: &a.layers })?;
        writeln!(out)?;
        return Ok(out.flush()?);
    }
    for l in &a.layers {
        writeln!(
            out,
            "layer {} {} ({} bytes, +{} ~{} -{}){}",
            l.index,
            l.digest,
            l.bytes,
            l.added,
            l.modified,
            l.deleted,
            l.created_by
                .as_deref()
                .map_or(String::new(), |c| format!(": {c}"))
        )?;
        let mut changes: Vec<&image_overlay::analysis::Change> = l.changes.iter().collect();
        changes.sort_by(|a, b| a.path.cmp(&b.path));
        for c in changes {
            let mark = match c.kind {
                ChangeKind::Added => 'A',
                ChangeKind::Modified => 'M',
                ChangeKind::Deleted => 'D',
                ChangeKind::Opaque => 'O',
                _ => '?',
            };
            let dir = if c.file_type == image_overlay::analysis::FileType::Dir {
                "/"
            } else {
                ""
            };
            writeln!(
                out,
                "  {mark} {:>12} {:04o} {}{dir}",
                c.size, c.mode, c.path
            )?;
        }
    }
    Ok(out.flush()?)
}
