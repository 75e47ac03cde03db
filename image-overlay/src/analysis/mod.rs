//! Layer analysis: what each layer changes, what is wasted (as dive counts
//! it), and what secrets leaked, from one read of each layer.
//!
//! [`analyze`] reads an image's layers from any [`Provider`] (the store, an
//! OCI layout, a registry client's provider) through the layer reader that
//! [`list`](crate::list()) and [`unpack`](crate::unpack()) use: each blob is
//! streamed once, decompressed and parsed, never written to disk; its
//! digest, size and diff ID are checked against the manifest and config.
//! In that pass every entry goes to the change list ([`changes`]) and
//! dive's efficiency ([`efficiency`]), and the start of every regular file
//! to the secret rules ([`secrets`]). The history and config are scanned
//! after. [`html`] renders the result as one self-contained page.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use image_overlay::analysis::{analyze, AnalyzeOptions};
//! use image_store::{image::resolve_image, OciDir};
//!
//! let store = OciDir::open("/var/lib/images")?;
//! let image = resolve_image(&store, "docker.io/library/debian:12", None)?;
//! let analysis = analyze(&store, &image, &AnalyzeOptions::default())?;
//! println!("efficiency {:.2}, {} bytes wasted", analysis.efficiency.efficiency,
//!     analysis.efficiency.wasted_bytes);
//! for f in &analysis.findings {
//!     println!("{} in {:?}: {}", f.rule, f.path, f.excerpt);
//! }
//! # Ok(()) }
//! ```
//!
//! # Security
//! Layers are hostile input: every entry count, header and expanded size is
//! bounded by [`Limits`] as for unpack; a file is read only up to
//! [`SecretOptions::max_scan_bytes`]; the change list and the filesystem
//! model are sorted maps where a deleted directory's tree is one range
//! (each path removed at most once after it was added), so the work is
//! linear (times a logarithm) in the entries. Nothing is written.

pub mod changes;
pub mod efficiency;
pub mod html;
pub mod secrets;

use std::io::Read;

use image_core::config::History;
use image_core::error::unless_named;
use image_core::manifest::descriptor_media_type;
use image_core::{Classify, Compression, Descriptor, Digest, ErrorKind};
use image_store::image::Image;
use image_store::Provider;

use crate::flatten::{layer_compressions, open_layer, FlattenError};
use serde::Serialize;

use crate::list::{list_reading, EntryKind, ListOptions};
use crate::unpack::{Limits, UnpackError};

pub use changes::{Change, ChangeKind, FileType, Previous};
pub use efficiency::{Efficiency, GateError, Gates, PathWaste};
pub use secrets::{AllowList, AllowListError, Finding, LayerRef, SecretOptions, Source};

use changes::{LayerEntry, Stack};

/// Knobs of an analysis.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AnalyzeOptions {
    /// Cost limits of each layer, as for unpack.
    pub limits: Limits,
    /// The secret scan.
    pub secrets: SecretOptions,
    /// Keep each layer's change list ([`LayerAnalysis::changes`]); without
    /// it only their counts are kept, and memory holds the filesystem's
    /// paths and one layer's entries whatever the number of layers.
    pub keep_changes: bool,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions {
            limits: Limits::default(),
            secrets: SecretOptions::default(),
            keep_changes: true,
        }
    }
}

impl AnalyzeOptions {
    /// Keeps each layer's change list, or only their counts.
    pub fn with_changes(mut self, keep: bool) -> Self {
        self.keep_changes = keep;
        self
    }

    /// Uses these secret-scan options.
    pub fn with_secrets(mut self, secrets: SecretOptions) -> Self {
        self.secrets = secrets;
        self
    }

    /// Uses these limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

/// Errors of an analysis.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnalysisError {
    /// The layers cannot be read: the config and manifest disagree on
    /// their number, a media type is not a layer's, a descriptor is
    /// invalid, a blob is missing (the checks of a flatten, shared).
    #[error(transparent)]
    Open(#[from] FlattenError),
    /// A layer could not be read, or is not the blob its descriptor names.
    #[error("image {image}: layer {index}{}", unless_named(.digest, &**.source))]
    Layer {
        /// The image.
        image: String,
        /// The layer's position.
        index: usize,
        /// The layer's digest.
        digest: Digest,
        /// The error.
        source: Box<UnpackError>,
    },
}

impl Classify for AnalysisError {
    fn kind(&self) -> ErrorKind {
        match self {
            AnalysisError::Open(source) => source.kind(),
            AnalysisError::Layer { source, .. } => source.kind(),
        }
    }
}

/// What one layer holds and changes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct LayerAnalysis {
    /// Position, base first, from 0.
    pub index: usize,
    /// The blob digest.
    pub digest: Digest,
    /// The diff ID (of the uncompressed tar).
    pub diff_id: Digest,
    /// The blob's media type.
    pub media_type: String,
    /// The history entry that made it (dive's matching: the next entry
    /// without `empty_layer`), if any.
    pub history: Option<usize>,
    /// That entry's `created_by`.
    pub created_by: Option<String>,
    /// Bytes of the blob.
    pub compressed_size: u64,
    /// Bytes of the uncompressed tar.
    pub uncompressed_size: u64,
    /// Entries of the tar.
    pub entries: u64,
    /// The sum of its entries' sizes (dive's layer size).
    pub bytes: u64,
    /// Of `bytes`, those of paths this layer wrote last (in the final
    /// filesystem).
    pub useful_bytes: u64,
    /// `bytes - useful_bytes`: overwritten or deleted by later layers.
    pub wasted_bytes: u64,
    /// Paths added, modified, deleted (with opaque directories).
    pub added: u64,
    /// See `added`.
    pub modified: u64,
    /// See `added`.
    pub deleted: u64,
    /// The changes, in archive order (whiteouts first); empty unless
    /// [`AnalyzeOptions::keep_changes`].
    pub changes: Vec<Change>,
}

/// A path of the final filesystem, for views of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinalPath<'a> {
    /// The path, without the leading `/`.
    pub path: &'a str,
    /// Its type.
    pub file_type: FileType,
    /// Its size.
    pub size: u64,
    /// The layer that last wrote it.
    pub layer: usize,
}

/// The analysis of an image.
#[derive(Debug)]
#[non_exhaustive]
pub struct Analysis {
    /// The name the image was resolved from.
    pub image: String,
    /// The manifest digest.
    pub manifest: Digest,
    /// The layers, base first.
    pub layers: Vec<LayerAnalysis>,
    /// dive's efficiency numbers.
    pub efficiency: Efficiency,
    /// Secrets found (allowed ones left out), files first, then history,
    /// then config.
    pub findings: Vec<Finding>,
    /// More findings than [`SecretOptions::max_findings`] were found.
    pub findings_truncated: bool,
    stack: Stack,
}

impl Analysis {
    /// The final filesystem, sorted by path.
    pub fn final_paths(&self) -> impl Iterator<Item = FinalPath<'_>> {
        self.stack.paths.iter().map(|(p, n)| FinalPath {
            path: p,
            file_type: n.file_type,
            size: n.size,
            layer: n.layer,
        })
    }
}

/// For each of `layers` layers, the history entry that made it: the next
/// entry without `empty_layer`, in order (as Docker and dive match them).
pub fn history_for_layers(history: &[History], layers: usize) -> Vec<Option<usize>> {
    let mut next = 0;
    (0..layers)
        .map(|_| {
            while next < history.len() && history[next].empty_layer {
                next += 1;
            }
            (next < history.len()).then(|| {
                next += 1;
                next - 1
            })
        })
        .collect()
}

/// Analyses `image`, reading its layers from `provider` once each.
///
/// # Errors
/// [`AnalysisError`]: a layer missing, unreadable, malformed, over a
/// limit, or not the blob its descriptor and diff ID name.
pub fn analyze<P: Provider + ?Sized>(
    provider: &P,
    image: &Image,
    options: &AnalyzeOptions,
) -> Result<Analysis, AnalysisError> {
    let compressions = layer_compressions(image)?;
    let open = |index: usize, d: &Descriptor| open_layer(provider, image, index, d);
    analyze_core(&open, &compressions, image, options)
}

type Open<'a> =
    dyn Fn(usize, &Descriptor) -> Result<(Digest, Box<dyn Read + Send>), FlattenError> + 'a;

fn analyze_core(
    open: &Open<'_>,
    compressions: &[Compression],
    image: &Image,
    options: &AnalyzeOptions,
) -> Result<Analysis, AnalysisError> {
    let layers = image.layers();
    let diff_ids = image.diff_ids();
    let config = image.config.file();
    let history = config.history.as_deref().unwrap_or(&[]);
    let made_by = history_for_layers(history, layers.len());
    let mut collector = secrets::Collector::new(&options.secrets);
    let mut stack = Stack::default();
    let mut eff = efficiency::Builder::default();
    let mut out = Vec::with_capacity(layers.len());
    let mut refs = Vec::with_capacity(layers.len());
    for (index, ((desc, diff_id), &compression)) in
        layers.iter().zip(diff_ids).zip(compressions).enumerate()
    {
        let (digest, reader) = open(index, desc)?;
        let layer_ref = LayerRef {
            index,
            digest: digest.clone(),
        };
        let layer_err = |source: UnpackError| AnalysisError::Layer {
            image: image.name.clone(),
            index,
            digest: digest.clone(),
            source: Box::new(source),
        };
        let read = read_layer(reader, compression, &layer_ref, options, &mut collector)
            .map_err(layer_err)?;
        verify(&read.report, &digest, desc.size(), diff_id).map_err(layer_err)?;
        eff.add_layer(&read.entries, read.bytes, &stack);
        let (changes, buried) = stack.apply(index, &read.entries);
        for b in buried {
            let Some(holder) = refs.get(b.node.layer).cloned() else {
                continue;
            };
            let (rule, verb) = if b.deleted {
                ("sensitive-file-deleted", "deleted")
            } else {
                ("sensitive-file-overwritten", "overwritten")
            };
            collector.push(
                rule,
                Some(holder),
                Some(format!("/{}", b.path)),
                None,
                secrets::Source::File,
                format!(
                    "{} bytes written in layer {}, {verb} in layer {index} ({})",
                    b.node.size,
                    b.node.layer,
                    b.node.sensitive.unwrap_or("sensitive")
                ),
            );
        }
        let count = |k: ChangeKind| changes.iter().filter(|c| c.kind == k).count() as u64;
        out.push(LayerAnalysis {
            index,
            digest: digest.clone(),
            diff_id: diff_id.clone(),
            media_type: descriptor_media_type(desc).to_string(),
            history: made_by[index],
            created_by: made_by[index].and_then(|h| history[h].created_by.clone()),
            compressed_size: read.report.compressed_size,
            uncompressed_size: read.report.size,
            entries: read.report.entries,
            bytes: read.bytes,
            useful_bytes: 0,
            wasted_bytes: 0,
            added: count(ChangeKind::Added),
            modified: count(ChangeKind::Modified),
            deleted: count(ChangeKind::Deleted) + count(ChangeKind::Opaque),
            changes: if options.keep_changes {
                changes
            } else {
                Vec::new()
            },
        });
        refs.push(layer_ref);
    }
    let mut useful = vec![0u64; out.len()];
    for node in stack.paths.values() {
        useful[node.layer] += node.size;
    }
    for (l, u) in out.iter_mut().zip(useful) {
        l.useful_bytes = u.min(l.bytes);
        l.wasted_bytes = l.bytes - l.useful_bytes;
    }
    let mut layer_of: Vec<Option<LayerRef>> = vec![None; history.len()];
    for (layer, h) in made_by.iter().enumerate() {
        if let Some(h) = *h {
            layer_of[h] = Some(refs[layer].clone());
        }
    }
    collector.scan_config(config, &layer_of);
    Ok(Analysis {
        image: image.name.clone(),
        manifest: image.manifest_digest().clone(),
        layers: out,
        efficiency: eff.finish(),
        findings: collector.findings,
        findings_truncated: collector.truncated,
        stack,
    })
}

struct ReadLayer {
    entries: Vec<LayerEntry>,
    bytes: u64,
    report: crate::list::ListReport,
}

/// Streams one layer: its entries, and the start of each regular file to
/// the secret rules.
fn read_layer(
    mut reader: Box<dyn Read + Send>,
    compression: Compression,
    layer: &LayerRef,
    options: &AnalyzeOptions,
    collector: &mut secrets::Collector<'_>,
) -> Result<ReadLayer, UnpackError> {
    let list_options = ListOptions::default()
        .with_limits(options.limits)
        .with_compression(compression);
    let mut entries = Vec::new();
    let mut bytes = 0u64;
    let mut head = Vec::with_capacity(options.secrets.max_scan_bytes);
    let report = list_reading(&mut reader, &list_options, &mut |e, data| {
        bytes = bytes.saturating_add(e.size);
        let Some(mut entry) = LayerEntry::from_list(e) else {
            return Ok(());
        };
        if entry.whiteout.is_none() && e.kind == EntryKind::Regular {
            let named = secrets::rules::sensitive_name(&entry.path);
            let mut found = None;
            if options.secrets.enabled && e.size > 0 && !collector.full() {
                head.clear();
                data.take(options.secrets.max_scan_bytes as u64)
                    .read_to_end(&mut head)?;
                found = collector.scan_file(layer, &entry.path, &head);
            }
            entry.sensitive = found.or(named);
        }
        entries.push(entry);
        Ok(())
    })?;
    Ok(ReadLayer {
        entries,
        bytes,
        report,
    })
}

/// Checks what was read against the descriptor and the config.
fn verify(
    report: &crate::list::ListReport,
    digest: &Digest,
    size: u64,
    diff_id: &Digest,
) -> Result<(), UnpackError> {
    if report.compressed_size != size {
        return Err(UnpackError::SizeMismatch {
            expected: size,
            found: report.compressed_size,
        });
    }
    if &report.digest != digest {
        return Err(UnpackError::DigestMismatch {
            expected: digest.clone(),
            found: report.digest.clone(),
        });
    }
    if &report.diff_id != diff_id {
        return Err(UnpackError::DiffIdMismatch {
            expected: diff_id.clone(),
            found: report.diff_id.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(empty: bool) -> History {
        History {
            empty_layer: empty,
            ..History::default()
        }
    }

    #[test]
    fn history_matches_layers_skipping_empty_entries() {
        let hist = [h(true), h(false), h(true), h(true), h(false)];
        assert_eq!(history_for_layers(&hist, 3), [Some(1), Some(4), None]);
    }
}
