//! An OCI archive (`oci-archive:PATH[:REF]`) at either end of a copy.
//!
//! A source archive is read in place ([`OciArchive`]) and copied as any
//! store is. A destination is written by image-store's OCI archive writer
//! ([`save_oci_with`]) into a temporary file beside `PATH`, renamed over
//! it once whole (image-store's atomic write), from the source store, or
//! from a scratch store beside `PATH` that a registry source is pulled
//! into first (verified as any pull; removed after).
//!
//! With referrers, the image and its referrers are first copied into the
//! scratch store, as into any store (whatever the source), then written
//! with the referrers as untagged entries of the archive's `index.json`:
//! the OCI image layout's form, which oras reads and writes, and which a
//! source archive is read in ([`image_store::referrers::in_index`]).

use std::path::{Path, PathBuf};

use image_core::{Descriptor, Reference};
use image_store::archive::{save_oci_with, ArchiveError, OciArchive, SaveImage, SaveOptions};
use image_store::fs::Root;
use image_store::referrers::{only_image, OnlyImageError};
use image_store::{OciDir, Provider, TagStore};

use super::{
    from_registry, from_store, pull_options, resolve, select, the_only_image, CopyError,
    CopyOptions, CopyReport, Location,
};
use crate::client::Client;
use crate::pull::pull;
use crate::push::Source;

/// `e`, met reading or writing the archive at `path`.
pub(super) fn error(path: &Path, e: ArchiveError) -> CopyError {
    CopyError::Archive {
        path: path.to_owned(),
        source: Box::new(e),
    }
}

/// The image `name` names in `archive`, or its only image (its
/// referrers aside: [`image_store::referrers::only_image`]).
pub(super) fn image(archive: &OciArchive, name: Option<&str>) -> Result<Descriptor, CopyError> {
    let Some(name) = name else {
        let path = archive.path();
        return only_image(archive).map_err(|source| match source {
            OnlyImageError::Several { images } => CopyError::ArchiveImage {
                path: path.to_owned(),
                images,
            },
            source => CopyError::OnlyImage {
                of: path.display().to_string(),
                source: Box::new(source),
            },
        });
    };
    resolve(archive, name)
}

/// Copies the image `src` names into a new OCI archive at `path`, named
/// `name` there (as given); with referrers, through a scratch store.
pub(super) async fn to_archive<S: Provider + TagStore + Sync>(
    client: &Client,
    src: &Location<'_, S>,
    path: &Path,
    name: Option<&str>,
    options: &CopyOptions,
) -> Result<CopyReport, CopyError> {
    match src {
        Location::Store { store, name: from } => {
            let top = resolve(*store, from)?;
            from_a_store(client, *store, top, path, name, options).await
        }
        Location::OnlyImage { store } => {
            let top = the_only_image(*store)?;
            from_a_store(client, *store, top, path, name, options).await
        }
        Location::Archive {
            path: from,
            name: in_it,
        } => {
            let archive = OciArchive::open(from).map_err(|e| error(from, e))?;
            let top = image(&archive, in_it.as_deref())?;
            from_a_store(client, &archive, top, path, name, options).await
        }
        Location::Registry(from) => {
            let scratch = Scratch::beside(path)?;
            if options.referrers {
                let report = from_registry(client, from, &scratch.staged(), options).await?;
                return with_referrers(&scratch.store, report, path, name, options);
            }
            let top = pulled(client, from, &scratch.store, options).await?;
            write(&scratch.store, top, path, name, options).await
        }
        Location::Layout { .. } | Location::Untagged { .. } => {
            unreachable!("a layout source is read as a store")
        }
    }
}

/// Writes `top` of a source store (or archive) as the archive `path`;
/// with referrers, through a scratch store they are copied into first.
async fn from_a_store<S: Provider + TagStore + Sync + ?Sized>(
    client: &Client,
    store: &S,
    top: Descriptor,
    path: &Path,
    name: Option<&str>,
    options: &CopyOptions,
) -> Result<CopyReport, CopyError> {
    if !options.referrers {
        return write(store, top, path, name, options).await;
    }
    let scratch = Scratch::beside(path)?;
    let report = from_store(client, store, top, &scratch.staged(), options).await?;
    with_referrers(&scratch.store, report, path, name, options)
}

/// The image's name in the scratch store.
const STAGED: &str = "localhost/copy/staged:latest";

/// Writes the image staged in `scratch` and the referrers `report`
/// names as the OCI archive `path`: the image named `name`, each referrer
/// an untagged entry.
fn with_referrers(
    scratch: &OciDir,
    mut report: CopyReport,
    path: &Path,
    name: Option<&str>,
    options: &CopyOptions,
) -> Result<CopyReport, CopyError> {
    let top = resolve(scratch, STAGED)?;
    let mut images = vec![image_named(top.clone(), name)];
    for digest in &report.referrers {
        let read_err = |source| CopyError::StoreReferrers {
            digest: digest.clone(),
            source: Box::new(source),
        };
        let bytes = scratch
            .read_blob_to_vec(digest, image_store::refs::MAX_DOCUMENT_SIZE)
            .map_err(|source| {
                read_err(image_store::referrers::ReferrersError::Read {
                    subject: digest.clone(),
                    source: Box::new(source),
                })
            })?;
        let doc = image_core::Document::from_bytes(bytes, None)
            .map_err(|source| {
                read_err(image_store::referrers::ReferrersError::Parse {
                    subject: digest.clone(),
                    source,
                })
            })?
            .with_algorithm(digest.algorithm());
        images.push(SaveImage::new(
            image_store::referrers::entry(&doc),
            Vec::new(),
        ));
    }
    let files = write_images(scratch, images, path, options)?;
    report.descriptor = Some(top);
    report.tag = name.map(str::to_owned);
    report.copied = files;
    Ok(report)
}

/// The image `top` to save, named `name` (as given) when named.
fn image_named(top: Descriptor, name: Option<&str>) -> SaveImage {
    SaveImage::new(top, name.map(str::to_owned).into_iter().collect()).with_names_as_given(true)
}

/// Pulls `from` into the scratch store; the descriptor pulled.
async fn pulled(
    client: &Client,
    from: &Reference,
    store: &OciDir,
    options: &CopyOptions,
) -> Result<Descriptor, CopyError> {
    let r = pull(client, from, store, &pull_options(options))
        .await
        .map_err(|e| CopyError::Pull(Box::new(e)))?;
    Ok(r.descriptor
        .expect("a pull that succeeds names what it pulled"))
}

/// Writes `top` (or its manifest for the platform asked for) from
/// `store` as the OCI archive `path`, atomically.
async fn write<P: Provider + Sync + ?Sized>(
    store: &P,
    top: Descriptor,
    path: &Path,
    name: Option<&str>,
    options: &CopyOptions,
) -> Result<CopyReport, CopyError> {
    let top = select(&Source::Store(store), top, options).await?;
    let copied = write_images(store, vec![image_named(top.clone(), name)], path, options)?;
    Ok(CopyReport {
        descriptor: Some(top),
        tag: name.map(str::to_owned),
        copied,
        ..CopyReport::default()
    })
}

/// Writes `images` from `store` as the OCI archive `path`, atomically;
/// returns the blobs written.
fn write_images<P: Provider + Sync + ?Sized>(
    store: &P,
    images: Vec<SaveImage>,
    path: &Path,
    options: &CopyOptions,
) -> Result<usize, CopyError> {
    let (dir, file) = split(path)?;
    let root = Root::open(&dir).map_err(|source| error(path, ArchiveError::Write { source }))?;
    let save_options = SaveOptions::default().with_tracker(options.tracker.clone());
    let mut saved = None;
    root.write_atomic_with(
        &dir.join(file),
        |out| {
            saved = Some(save_oci_with(store, &images, out, &save_options)?);
            Ok(())
        },
        |source| ArchiveError::Write { source },
    )
    .map_err(|e| error(path, e))?;
    // Every file but `oci-layout` and `index.json` is a blob.
    Ok(saved.map_or(0, |s| s.files.saturating_sub(2)))
}

/// The directory of `path` (`.` for a bare name) and its file name.
fn split(path: &Path) -> Result<(PathBuf, &std::ffi::OsStr), CopyError> {
    let file = path.file_name().ok_or_else(|| {
        error(
            path,
            ArchiveError::Unsupported {
                what: "an archive path without a file name".into(),
            },
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    Ok((dir, file))
}

/// A store a registry source is pulled into before it is written as an
/// archive: a new directory beside the archive (same file system, the
/// space the archive needs anyway), removed when done.
struct Scratch {
    dir: PathBuf,
    store: OciDir,
}

impl Scratch {
    /// The scratch store as a copy's destination, the image named
    /// [`STAGED`] there.
    fn staged(&self) -> Location<'_, OciDir> {
        Location::Store {
            store: &self.store,
            name: STAGED.to_owned(),
        }
    }

    fn beside(path: &Path) -> Result<Scratch, CopyError> {
        let (dir, file) = split(path)?;
        let dir = dir.join(format!(
            ".{}.copy-{}-{:016x}",
            file.to_string_lossy(),
            std::process::id(),
            fastrand::u64(..)
        ));
        // A new directory (never one already there, nor a link).
        std::fs::create_dir(&dir).map_err(|source| error(path, ArchiveError::Write { source }))?;
        match OciDir::open_or_create(&dir) {
            Ok(store) => Ok(Scratch { dir, store }),
            Err(source) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(CopyError::Scratch {
                    path: dir,
                    source: Box::new(source),
                })
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
