//! Squash: an image's layers, all of them or those above a base, merged
//! into one layer (crane `flatten`, `docker build --squash`).
//!
//! The merged layer is the newest-wins merge of the squashed layers
//! (the [module](super)'s `merge`); on a base it keeps the removals and opaque
//! directories that reach into the base, so the root filesystem is the
//! original's. The config keeps every history entry, those of the squashed
//! layers marked `empty_layer`, and gains one for the new layer; the
//! manifest keeps its format and annotations.
//!
//! ```no_run
//! use image_overlay::surgery::{squash, SquashFrom, SquashOptions};
//! use image_store::OciDir;
//!
//! let store = OciDir::open("/var/lib/images")?;
//! let options = SquashOptions::new(SquashFrom::Layer(1));
//! let report = squash(&store, "example/app:1", "example/app:squashed", &options)?;
//! println!("freed {} compressed bytes", report.freed_compressed());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use image_core::config::History;
use image_core::{Compression, ImageConfig, Manifest, Platform};
use image_store::content::unique_reference;
use image_store::{Ingester, Leases, Provider, TagStore};

use crate::pack::{LayerStream, PackOptions};
use crate::tarwriter::TarWriter;

use super::merge::{emit, plan, MergeLimits, Source};
use super::{
    check_tag, is_base_of, layer_descriptor, layers_of, resolve, set_tag, write_image, SurgeryError,
};

/// Which layers a squash merges.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SquashFrom {
    /// All of them: the result has one layer.
    All,
    /// Those from this position (0 is the base layer) to the top.
    Layer(usize),
    /// Those above this image, which must be a base of the image (its diff
    /// IDs the image's first ones).
    Base(String),
}

/// Knobs of a squash.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SquashOptions {
    /// Which layers to merge.
    pub from: SquashFrom,
    /// The platform to pick from an index (`None`: the host's).
    pub platform: Option<Platform>,
    /// How the new layer is compressed (gzip by default).
    pub pack: PackOptions,
    /// The created time of the new layer's history entry (RFC 3339);
    /// `None`: now, or `SOURCE_DATE_EPOCH`. The image's own `created` is kept.
    pub created: Option<String>,
    /// The new history entry's `created_by`; `None`: says which layers.
    pub created_by: Option<String>,
    /// Bounds of the merge.
    pub limits: MergeLimits,
}

impl SquashOptions {
    /// Squashes `from`, gzip, default limits.
    pub fn new(from: SquashFrom) -> SquashOptions {
        SquashOptions {
            from,
            platform: None,
            pack: PackOptions::new(Compression::Gzip),
            created: None,
            created_by: None,
            limits: MergeLimits::default(),
        }
    }
}

/// Compressed and uncompressed bytes of a set of layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerSizes {
    /// Bytes of the blobs as stored.
    pub compressed: u64,
    /// Bytes of their tar streams.
    pub uncompressed: u64,
}

/// What a squash made.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SquashReport {
    /// The new manifest.
    pub manifest: Manifest,
    /// The new config.
    pub config: ImageConfig,
    /// The first layer squashed (layers below it are kept).
    pub from: usize,
    /// How many layers were squashed into one.
    pub squashed: usize,
    /// The squashed layers' sizes.
    pub before: LayerSizes,
    /// The new layer's sizes.
    pub after: LayerSizes,
    /// Entries in the squashed layers.
    pub entries_before: u64,
    /// Entries in the new layer.
    pub entries_after: u64,
}

impl SquashReport {
    /// Compressed bytes freed (0 when the new layer is larger).
    pub fn freed_compressed(&self) -> u64 {
        self.before.compressed.saturating_sub(self.after.compressed)
    }

    /// Uncompressed bytes freed: what later layers overwrote or deleted.
    pub fn freed_uncompressed(&self) -> u64 {
        self.before
            .uncompressed
            .saturating_sub(self.after.uncompressed)
    }
}

/// Squashes the image `reference` of `store` as `options` say and tags the
/// result `tag`; the original is unchanged.
///
/// # Errors
/// [`SurgeryError`]: `InvalidTag` first; `Resolve` for a missing image or
/// base; `NotABase` when the base is not one; `NothingToSquash` when no
/// layer is above the base; a layer refused (`Layer`, `Entry`, limits);
/// `Pack`, `Store`, `Tag` when writing fails.
pub fn squash<S>(
    store: &S,
    reference: &str,
    tag: &str,
    options: &SquashOptions,
) -> Result<SquashReport, SurgeryError>
where
    S: Provider + Ingester + TagStore + Leases + ?Sized,
{
    check_tag(tag)?;
    let lease = store.begin_lease()?;
    let s = lease.protect(store);
    let platform = options.platform.clone().unwrap_or_else(Platform::host);
    let image = resolve(&s, reference, Some(&platform))?;
    let layers = layers_of(&image)?;
    let from = match &options.from {
        SquashFrom::All => 0,
        SquashFrom::Layer(n) => *n,
        SquashFrom::Base(base) => {
            let b = resolve(&s, base, Some(&platform))?;
            if !is_base_of(&b, &image) {
                return Err(SurgeryError::NotABase {
                    image: reference.to_owned(),
                    base: base.clone(),
                    base_layers: b.diff_ids().len(),
                });
            }
            b.diff_ids().len()
        }
    };
    if from >= layers.len() {
        return Err(SurgeryError::NothingToSquash {
            from,
            layers: layers.len(),
        });
    }
    let all: Vec<Source<'_>> = layers
        .iter()
        .enumerate()
        .map(|(index, (descriptor, diff_id))| Source {
            descriptor,
            diff_id,
            index,
        })
        .collect();
    let (base, sources) = all.split_at(from);
    let planned = plan(&s, sources, base, options.limits)?;

    let mut w = s.writer(&unique_reference()).map_err(SurgeryError::Store)?;
    let stream = LayerStream::new(&mut w, &options.pack).map_err(SurgeryError::Pack)?;
    let mut tar = TarWriter::new(stream);
    let entries = emit(&s, sources, &planned, options.limits.layer, &mut tar)?;
    let stream = tar
        .finish()
        .map_err(|source| SurgeryError::Write { source })?;
    let packed = stream.finish(entries).map_err(SurgeryError::Pack)?;
    w.commit(Some(packed.size), Some(&packed.digest))
        .map_err(SurgeryError::Store)?;

    let squashed = layers.len() - from;
    let mut file = image.config.file().clone();
    file.rootfs.diff_ids.truncate(from);
    file.rootfs.diff_ids.push(packed.diff_id.clone());
    let mut history = file.history.take().unwrap_or_default();
    let mut layer = 0usize;
    for h in &mut history {
        if !h.empty_layer {
            if layer >= from {
                h.empty_layer = true;
            }
            layer += 1;
        }
    }
    history.push(History {
        created: Some(
            options
                .created
                .clone()
                .unwrap_or_else(image_core::time::created_now),
        ),
        created_by: Some(
            options
                .created_by
                .clone()
                .unwrap_or_else(|| format!("squash of layers {from} to {}", layers.len() - 1)),
        ),
        comment: Some(format!("{squashed} layers squashed into one")),
        ..History::default()
    });
    file.history = Some(history);

    let manifest_type = image.manifest.media_type().clone();
    let mut descriptors: Vec<_> = image.layers()[..from].to_vec();
    descriptors.push(layer_descriptor(
        &manifest_type,
        &packed.media_type,
        &packed.digest,
        packed.size,
    ));
    let annotations = image.manifest.inner().annotations().clone();
    let (manifest, config) = write_image(&s, &manifest_type, file, descriptors, annotations)?;
    set_tag(&s, tag, &manifest)?;
    drop(lease);
    Ok(SquashReport {
        manifest,
        config,
        from,
        squashed,
        before: LayerSizes {
            compressed: planned.read.compressed,
            uncompressed: planned.read.uncompressed,
        },
        after: LayerSizes {
            compressed: packed.size,
            uncompressed: packed.uncompressed_size,
        },
        entries_before: planned.read.entries,
        entries_after: entries,
    })
}
