//! Export: `docker save` tarballs and OCI archives, streamed from a store.
//!
//! Blobs go from the store's verifying reader straight into the tar
//! writer; the tar header of each file needs its size first, which the
//! descriptors give for blobs and uncompressed layers. A compressed layer
//! written into a docker-save archive must be decompressed (docker-save
//! layers are plain tars whose sha256 is the diff ID): it is decompressed
//! **twice**, a first pass counting its size and checking its diff ID, a
//! second one streaming it into the archive, so export needs no temporary
//! disk space and never writes a layer that does not match its config.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read, Write};

use image_core::codec;
use image_core::manifest::{descriptor, descriptor_media_type};
use image_core::platform::select_manifest;
use image_core::reference::Reference;
use image_core::DescriptorExt;
use image_core::{
    Compression, Descriptor, Digest, Document, ImageConfig, Manifest, MediaType, MediaTypeError,
    Platform, Tracker, VerifyError,
};
use serde_json::{json, Value};

use super::tarstream::{CopyFail, TarWriter};
use super::ArchiveError;
use crate::content::{ContentError, Provider};
use crate::refs::MAX_DOCUMENT_SIZE;
use crate::tags::{resolve_reference, TagStore, REF_NAME};

/// An image to write into an archive: a manifest or index, and its names.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SaveImage {
    /// The manifest or index.
    pub descriptor: Descriptor,
    /// Its names (`busybox:latest`, normalised when written); may be empty.
    pub names: Vec<String>,
    /// Write the names of an OCI archive's `index.json` (its `ref.name`
    /// annotations) as given, not normalised, as skopeo writes
    /// `oci-archive:PATH:REF` (each is still checked as a reference).
    pub names_as_given: bool,
}

impl SaveImage {
    /// An image with these names.
    pub fn new(descriptor: Descriptor, names: Vec<String>) -> SaveImage {
        SaveImage {
            descriptor,
            names,
            names_as_given: false,
        }
    }

    /// Writes its names into an OCI archive as given (see
    /// [`names_as_given`](SaveImage::names_as_given)).
    pub fn with_names_as_given(mut self, as_given: bool) -> SaveImage {
        self.names_as_given = as_given;
        self
    }

    /// The image `name` names (see [`resolve_reference`]), named by it
    /// when it is a tag; a digest reference gives an unnamed image, as
    /// `docker save` writes no digest into `RepoTags`.
    ///
    /// # Errors
    /// [`ArchiveError::Tag`] when `name` names no image.
    pub fn from_tag<T: Provider + TagStore + ?Sized>(
        tags: &T,
        name: &str,
    ) -> Result<SaveImage, ArchiveError> {
        let descriptor = resolve_reference(tags, name)?;
        let names = if name.contains('@') {
            Vec::new()
        } else {
            vec![name.to_owned()]
        };
        Ok(SaveImage::new(descriptor, names))
    }
}

/// The docker-save layout to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DockerLayout {
    /// `<config hex>.json`, `<layer id>/{VERSION,json,layer.tar}`,
    /// `manifest.json`, `repositories`: what Docker before 25 and skopeo
    /// write, and what every reader reads.
    #[default]
    Legacy,
    /// Docker 25+: `blobs/sha256/<hex>` for configs, layers and manifests,
    /// `oci-layout`, `index.json`, `manifest.json`, `repositories`.
    Oci,
}

/// How names are written in `manifest.json`'s `RepoTags` and in `repositories`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RepoTagForm {
    /// The full normalised reference (`docker.io/library/busybox:latest`),
    /// as skopeo writes it. Docker loads it as `busybox:latest`; podman
    /// lists it under the same normalised name.
    #[default]
    Normalized,
    /// Docker's familiar form (`busybox:latest`), as `docker save` writes
    /// it. Podman 4 reads such a short name as `localhost/busybox:latest`.
    Familiar,
}

/// Options of [`save_docker`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SaveOptions {
    /// The layout to write.
    pub layout: DockerLayout,
    /// The form of the names written.
    pub repo_tags: RepoTagForm,
    /// The platform to pick from an index (`linux/arm64`, `linux/arm/v7`),
    /// matched as [`select_manifest`] does; default: this machine's
    /// ([`Platform::host`]).
    pub platform: Option<Platform>,
    /// Reports the archive written as one item, `"archive"` (bytes written,
    /// total unknown), and stops the export at the next write once its
    /// interrupt is set (the output is then unusable, as after any failed
    /// write; the store is only read).
    pub tracker: Tracker,
}

impl SaveOptions {
    /// Sets the layout.
    pub fn layout(mut self, layout: DockerLayout) -> Self {
        self.layout = layout;
        self
    }

    /// Sets the form of the names written.
    pub fn repo_tags(mut self, form: RepoTagForm) -> Self {
        self.repo_tags = form;
        self
    }

    /// Sets the platform.
    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = Some(platform);
        self
    }

    /// Sets [`tracker`](SaveOptions::tracker), under the setter name every
    /// options type of the family uses.
    pub fn with_tracker(mut self, tracker: Tracker) -> Self {
        self.tracker = tracker;
        self
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SaveReport {
    /// Images (distinct manifests) written.
    pub images: usize,
    /// Files written (blobs, layers, configs, metadata).
    pub files: usize,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// Writes `images` as a `docker save` archive to `out`.
///
/// Index images are resolved to the manifest of
/// [`SaveOptions::platform`]. Names are written as
/// [`SaveOptions::repo_tags`] says: normalised by default, which both
/// Docker and podman read back as the same reference. Layers are written uncompressed (see the [module
/// documentation](self) for how compressed ones are handled).
///
/// # Errors
/// [`ArchiveError`]: a missing or corrupt blob, a layer that does not match
/// its diff ID, an unknown layer media type, an invalid name, a failed write
/// (after which the output is unusable).
pub fn save_docker<P, W>(
    store: &P,
    images: &[SaveImage],
    mut out: W,
    options: &SaveOptions,
) -> Result<SaveReport, ArchiveError>
where
    P: Provider + ?Sized,
    W: Write,
{
    tracked(options, &mut out, |out| {
        save_docker_dyn(&store, images, out, options)
    })
}

/// Runs `save` on `out` seen through [`SaveOptions::tracker`], as the
/// item `"archive"`, finished when `save` succeeds.
fn tracked(
    options: &SaveOptions,
    out: &mut dyn Write,
    save: impl FnOnce(&mut dyn Write) -> Result<SaveReport, ArchiveError>,
) -> Result<SaveReport, ArchiveError> {
    let mut out = options.tracker.writer("archive", None, out);
    let report = save(&mut out)?;
    out.finish();
    Ok(report)
}

/// Writes `images` as an OCI archive (a tar of an image layout) to `out`:
/// `oci-layout`, every blob reachable from the images once, and
/// `index.json` with one entry per name (annotation
/// `org.opencontainers.image.ref.name`, the normalised name) or one
/// unnamed entry.
///
/// # Errors
/// [`ArchiveError`]: missing or corrupt blobs, invalid names, a failed write.
pub fn save_oci<P, W>(
    store: &P,
    images: &[SaveImage],
    mut out: W,
) -> Result<SaveReport, ArchiveError>
where
    P: Provider + ?Sized,
    W: Write,
{
    save_oci_dyn(&store, images, &mut out)
}

/// [`save_oci`] reporting to and stopped by [`SaveOptions::tracker`] (the
/// other options are those of docker-save archives and are not used).
///
/// # Errors
/// As [`save_oci`]; an [`ArchiveError::Write`] of class
/// [`Cancelled`](image_core::ErrorKind::Cancelled) once the interrupt is set.
pub fn save_oci_with<P, W>(
    store: &P,
    images: &[SaveImage],
    mut out: W,
    options: &SaveOptions,
) -> Result<SaveReport, ArchiveError>
where
    P: Provider + ?Sized,
    W: Write,
{
    tracked(options, &mut out, |out| save_oci_dyn(&store, images, out))
}

fn parse_name(name: &str) -> Result<Reference, ArchiveError> {
    name.parse::<Reference>()
        .map_err(|source| ArchiveError::InvalidName {
            name: name.chars().take(200).collect(),
            source,
        })
}

fn read_doc(store: &dyn Provider, d: &Descriptor) -> Result<(Digest, Document), ArchiveError> {
    let digest = d.checked_digest().map_err(|source| ArchiveError::Parse {
        what: "descriptor".into(),
        source,
    })?;
    let bytes = store
        .read_blob_to_vec(&digest, MAX_DOCUMENT_SIZE)
        .map_err(|e| ArchiveError::content(&digest, e))?;
    let doc = Document::from_bytes(bytes, Some(&descriptor_media_type(d)))
        .map_err(|source| ArchiveError::Parse {
            what: digest.to_string(),
            source,
        })?
        .with_algorithm(digest.algorithm());
    Ok((digest, doc))
}

/// Resolves a descriptor to one manifest, choosing a platform from indexes.
fn resolve_manifest(
    store: &dyn Provider,
    d: &Descriptor,
    platform: &Platform,
) -> Result<Manifest, ArchiveError> {
    let mut d = d.clone();
    for _ in 0..8 {
        let (digest, doc) = read_doc(store, &d)?;
        match doc {
            Document::Manifest(m) => return Ok(*m),
            Document::Index(i) => {
                // An index of one manifest is that image, whatever its
                // platform says.
                let pick = match i.manifests() {
                    [only] => Ok(only),
                    _ => select_manifest(&i, platform),
                };
                match pick {
                    Ok(m) => d = m.clone(),
                    Err(_) => {
                        return Err(ArchiveError::NoPlatform {
                            digest,
                            platform: platform.to_string(),
                        })
                    }
                }
            }
        }
    }
    Err(ArchiveError::Unsupported {
        what: "indexes nested more than 8 deep".into(),
    })
}

/// A resolved image: manifest, config, names.
struct Resolved {
    manifest: Manifest,
    config: ImageConfig,
    config_size: u64,
    names: Vec<Reference>,
}

fn resolve_all(
    store: &dyn Provider,
    images: &[SaveImage],
    platform: &Platform,
) -> Result<Vec<Resolved>, ArchiveError> {
    let mut out: Vec<Resolved> = Vec::new();
    for image in images {
        let names = image
            .names
            .iter()
            .map(|n| parse_name(n))
            .collect::<Result<Vec<_>, _>>()?;
        let manifest = resolve_manifest(store, &image.descriptor, platform)?;
        if let Some(r) = out
            .iter_mut()
            .find(|r| r.manifest.digest() == manifest.digest())
        {
            for n in names {
                if !r.names.contains(&n) {
                    r.names.push(n);
                }
            }
            continue;
        }
        let config_digest = manifest.config_digest();
        let bytes = store
            .read_blob_to_vec(&config_digest, MAX_DOCUMENT_SIZE)
            .map_err(|e| ArchiveError::content(&config_digest, e))?;
        let config_size = bytes.len() as u64;
        let config = ImageConfig::from_bytes(bytes).map_err(|source| ArchiveError::Parse {
            what: config_digest.to_string(),
            source,
        })?;
        if config.diff_ids().len() != manifest.layers().len() {
            return Err(ArchiveError::LayerCount {
                image: manifest.digest().to_string(),
                layers: manifest.layers().len(),
                diff_ids: config.diff_ids().len(),
            });
        }
        out.push(Resolved {
            manifest,
            config,
            config_size,
            names,
        });
    }
    Ok(out)
}

fn read_fail(what: &Digest, e: CopyFail, compression: Compression) -> ArchiveError {
    match e {
        CopyFail::Write(source) => ArchiveError::Write { source },
        CopyFail::Header(e) => e,
        CopyFail::Read(source) => {
            let verify = source
                .get_ref()
                .is_some_and(|i| i.downcast_ref::<VerifyError>().is_some());
            if compression != Compression::None && !verify {
                ArchiveError::Decompress {
                    digest: what.clone(),
                    source,
                }
            } else {
                ArchiveError::content(
                    what,
                    ContentError::Read {
                        what: "the blob".into(),
                        source,
                    },
                )
            }
        }
        CopyFail::Short(n) => ArchiveError::content(
            what,
            ContentError::Read {
                what: "the blob".into(),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("ended after {n} bytes"),
                ),
            },
        ),
        CopyFail::Long => ArchiveError::content(
            what,
            ContentError::Read {
                what: "the blob".into(),
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    "longer than its descriptor says",
                ),
            },
        ),
    }
}

/// Streams a blob of known size into the archive.
fn write_blob(
    tar: &mut TarWriter<'_>,
    store: &dyn Provider,
    path: &str,
    digest: &Digest,
    size: u64,
) -> Result<(), ArchiveError> {
    let mut r = store
        .reader(digest)
        .map_err(|e| ArchiveError::content(digest, e))?;
    tar.add_stream(path, size, &mut r)
        .map_err(|e| read_fail(digest, e, Compression::None))
}

/// Streams a layer into the archive uncompressed, checking its diff ID.
fn write_layer(
    tar: &mut TarWriter<'_>,
    store: &dyn Provider,
    path: &str,
    layer: &Descriptor,
    diff_id: &Digest,
) -> Result<u64, ArchiveError> {
    let media_type = descriptor_media_type(layer);
    let digest = layer_digest(layer)?;
    let compression =
        media_type
            .require_layer_compression()
            .map_err(|source| ArchiveError::MediaType {
                what: format!("layer {digest}"),
                source,
            })?;
    if media_type.is_non_distributable()
        && !store
            .exists(&digest)
            .map_err(|e| ArchiveError::content(&digest, e))?
    {
        return Err(ArchiveError::Unsupported {
            what: format!("non-distributable layer {digest} absent from the store"),
        });
    }
    let mismatch = |found: Digest| ArchiveError::LayerMismatch {
        image: String::new(),
        path: path.to_owned(),
        expected: diff_id.clone(),
        found,
    };
    let open = || -> Result<Box<dyn Read + Send>, ArchiveError> {
        let r = store
            .reader(&digest)
            .map_err(|e| ArchiveError::content(&digest, e))?;
        let d = codec::decoder(compression, r).map_err(|source| ArchiveError::Decompress {
            digest: digest.clone(),
            source,
        })?;
        Ok(Box::new(d))
    };
    let size = if compression == Compression::None && digest.algorithm() == diff_id.algorithm() {
        if &digest != diff_id {
            return Err(mismatch(digest));
        }
        layer.size()
    } else {
        // In the diff ID's algorithm, which may not be the blob's (a layer
        // named by sha512 keeps a sha256 diff ID).
        let (found, size) = Digest::of_reader(diff_id.algorithm(), open()?).map_err(|source| {
            ArchiveError::Decompress {
                digest: digest.clone(),
                source,
            }
        })?;
        if &found != diff_id {
            return Err(mismatch(found));
        }
        size
    };
    let mut r = open()?;
    tar.add_stream(path, size, &mut r)
        .map_err(|e| read_fail(&digest, e, compression))?;
    Ok(size)
}

/// The repository name in the chosen form.
fn repo_name(r: &Reference, form: RepoTagForm) -> String {
    match form {
        RepoTagForm::Normalized => r.name(),
        RepoTagForm::Familiar => r.familiar_name(),
    }
}

/// The `name:tag` of a reference in the chosen form, when it has a tag.
fn repo_tag(r: &Reference, form: RepoTagForm) -> Option<String> {
    r.tag().map(|t| format!("{}:{}", repo_name(r, form), t))
}

fn save_docker_dyn(
    store: &dyn Provider,
    images: &[SaveImage],
    out: &mut dyn Write,
    options: &SaveOptions,
) -> Result<SaveReport, ArchiveError> {
    let platform = options.platform.clone().unwrap_or_else(Platform::host);
    let resolved = resolve_all(store, images, &platform)?;
    let mut tar = TarWriter::new(out);
    let mut report = SaveReport {
        images: resolved.len(),
        ..SaveReport::default()
    };
    let mut written: HashSet<String> = HashSet::new();
    let mut entries = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut index_entries = Vec::new();
    let legacy = options.layout == DockerLayout::Legacy;
    if !legacy {
        tar.add_dir("blobs")?;
        tar.add_dir("blobs/sha256")?;
    }
    for image in &resolved {
        let config_digest = image.config.digest();
        let config_path = if legacy {
            format!("{}.json", config_digest.hex())
        } else {
            format!(
                "blobs/{}/{}",
                config_digest.algorithm(),
                config_digest.hex()
            )
        };
        if written.insert(config_path.clone()) {
            tar.add_bytes(&config_path, image.config.raw())?;
            report.files += 1;
            report.bytes += image.config_size;
        }
        let chain_ids = image.config.chain_ids();
        let mut layer_paths = Vec::new();
        let mut new_layers = Vec::new();
        let mut parent: Option<&Digest> = None;
        for ((layer, diff_id), chain_id) in image
            .manifest
            .layers()
            .iter()
            .zip(image.config.diff_ids())
            .zip(&chain_ids)
        {
            let (dir, path) = if legacy {
                (
                    Some(chain_id.hex().to_owned()),
                    format!("{}/layer.tar", chain_id.hex()),
                )
            } else {
                (
                    None,
                    format!("blobs/{}/{}", diff_id.algorithm(), diff_id.hex()),
                )
            };
            let size = if written.insert(path.clone()) {
                if let Some(dir) = &dir {
                    tar.add_dir(dir)?;
                    tar.add_bytes(&format!("{dir}/VERSION"), b"1.0")?;
                    let mut v1 = json!({"id": dir, "created": image.config.file().created.clone().unwrap_or_else(|| "1970-01-01T00:00:00Z".into())});
                    if let Some(p) = parent {
                        v1["parent"] = Value::String(p.hex().to_owned());
                    }
                    let bytes = image_core::json::to_canonical_vec(&v1).map_err(|source| {
                        ArchiveError::Json {
                            path: format!("{dir}/json"),
                            source,
                        }
                    })?;
                    tar.add_bytes(&format!("{dir}/json"), &bytes)?;
                    report.files += 2;
                }
                let size =
                    write_layer(&mut tar, store, &path, layer, diff_id).map_err(|e| match e {
                        ArchiveError::LayerMismatch {
                            path,
                            expected,
                            found,
                            ..
                        } => ArchiveError::LayerMismatch {
                            image: image.manifest.digest().to_string(),
                            path,
                            expected,
                            found,
                        },
                        e => e,
                    })?;
                report.files += 1;
                report.bytes += size;
                size
            } else if descriptor_media_type(layer).layer_compression() == Some(Compression::None) {
                layer.size()
            } else {
                // Written before: its size is only needed for the OCI
                // layout's manifest, which the first writer already knew.
                0
            };
            new_layers.push((diff_id.clone(), size));
            layer_paths.push(path);
            parent = Some(chain_id);
        }
        let repo_tags: Vec<String> = image
            .names
            .iter()
            .filter_map(|r| repo_tag(r, options.repo_tags))
            .collect();
        if let (Some(top), true) = (chain_ids.last(), legacy) {
            for r in &image.names {
                if let Some(t) = r.tag() {
                    repositories
                        .entry(repo_name(r, options.repo_tags))
                        .or_default()
                        .insert(t.to_owned(), top.hex().to_owned());
                }
            }
        }
        if !legacy {
            let manifest = docker_oci_manifest(store, image, &new_layers)?;
            let path = format!("blobs/sha256/{}", manifest.digest().hex());
            if written.insert(path.clone()) {
                tar.add_bytes(&path, manifest.raw())?;
                report.files += 1;
                report.bytes += manifest.raw().len() as u64;
            }
            index_entries.push((manifest.descriptor(), image.names.clone()));
        }
        entries.push(json!({
            "Config": config_path,
            "RepoTags": if repo_tags.is_empty() { Value::Null } else { json!(repo_tags) },
            "Layers": layer_paths,
        }));
    }
    if !legacy {
        tar.add_bytes("index.json", &docker_index(&index_entries)?)?;
        tar.add_bytes("oci-layout", crate::oci_dir::OCI_LAYOUT.as_bytes())?;
        report.files += 2;
    }
    let manifest_json = serde_json::to_vec(&entries).map_err(|source| ArchiveError::Json {
        path: "manifest.json".into(),
        source,
    })?;
    tar.add_bytes("manifest.json", &manifest_json)?;
    if legacy {
        let repos = serde_json::to_vec(&repositories).map_err(|source| ArchiveError::Json {
            path: "repositories".into(),
            source,
        })?;
        tar.add_bytes("repositories", &repos)?;
        report.files += 1;
    }
    report.files += 1;
    tar.finish()?;
    Ok(report)
}

/// The manifest of a Docker 25+ archive: the original when its layers are
/// already uncompressed, else one pointing at the uncompressed layers.
fn docker_oci_manifest(
    store: &dyn Provider,
    image: &Resolved,
    layers: &[(Digest, u64)],
) -> Result<Manifest, ArchiveError> {
    let same = image
        .manifest
        .layers()
        .iter()
        .zip(layers)
        .all(|(l, (diff_id, _))| l.checked_digest().is_ok_and(|d| &d == diff_id));
    if same && image.manifest.media_type() == &MediaType::OciManifest {
        return Ok(image.manifest.clone());
    }
    let mut descs = Vec::with_capacity(layers.len());
    for (diff_id, size) in layers {
        let size = if *size == 0 {
            // A layer shared with an earlier image: count it again.
            let l = image
                .manifest
                .layers()
                .iter()
                .zip(image.config.diff_ids())
                .find(|(_, d)| *d == diff_id)
                .map(|(l, _)| l.clone());
            match l {
                Some(l) => uncompressed_size(store, &l)?,
                None => 0,
            }
        } else {
            *size
        };
        descs.push(descriptor(&MediaType::OciLayer, diff_id, size));
    }
    super::load::build_manifest(
        image.config.digest(),
        image.config_size,
        descs,
        &image.manifest.digest().to_string(),
    )
}

/// The checked digest of a layer's descriptor.
fn layer_digest(layer: &Descriptor) -> Result<Digest, ArchiveError> {
    layer
        .checked_digest()
        .map_err(|source| ArchiveError::Parse {
            what: "layer".into(),
            source,
        })
}

fn uncompressed_size(store: &dyn Provider, layer: &Descriptor) -> Result<u64, ArchiveError> {
    let compression = descriptor_media_type(layer)
        .layer_compression()
        .unwrap_or_default();
    let digest = layer_digest(layer)?;
    if compression == Compression::None {
        return Ok(layer.size());
    }
    let r = store
        .reader(&digest)
        .map_err(|e| ArchiveError::content(&digest, e))?;
    let mut d = codec::decoder(compression, r).map_err(|source| ArchiveError::Decompress {
        digest: digest.clone(),
        source,
    })?;
    io::copy(&mut d, &mut io::sink()).map_err(|source| ArchiveError::Decompress { digest, source })
}

/// `index.json` of a Docker 25+ archive: one entry per name, annotated as
/// Docker does (`io.containerd.image.name` full, ref.name the tag).
fn docker_index(entries: &[(Descriptor, Vec<Reference>)]) -> Result<Vec<u8>, ArchiveError> {
    let mut manifests = Vec::new();
    for (d, names) in entries {
        let base = serde_json::to_value(d).map_err(|source| ArchiveError::Json {
            path: "index.json".into(),
            source,
        })?;
        if names.is_empty() {
            manifests.push(base.clone());
        }
        for n in names {
            let mut v = base.clone();
            let mut a = serde_json::Map::new();
            a.insert(
                "io.containerd.image.name".into(),
                Value::String(n.to_string()),
            );
            if let Some(t) = n.tag() {
                a.insert(REF_NAME.into(), Value::String(t.to_owned()));
            }
            v["annotations"] = Value::Object(a);
            manifests.push(v);
        }
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    image_core::json::to_canonical_vec(&index).map_err(|source| ArchiveError::Json {
        path: "index.json".into(),
        source,
    })
}

/// Every blob reachable from `root`, once, in a depth-first order, with
/// its size.
fn reachable(
    store: &dyn Provider,
    root: &Descriptor,
    seen: &mut HashSet<Digest>,
    out: &mut Vec<(Digest, u64)>,
) -> Result<(), ArchiveError> {
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        let digest = d.checked_digest().map_err(|source| ArchiveError::Parse {
            what: "descriptor".into(),
            source,
        })?;
        if !seen.insert(digest.clone()) {
            continue;
        }
        let media_type = descriptor_media_type(&d);
        if media_type.is_manifest() || media_type.is_index() {
            let (_, doc) = read_doc(store, &d)?;
            stack.extend(crate::refs::children(&doc));
        } else if media_type.is_non_distributable()
            && !store
                .exists(&digest)
                .map_err(|e| ArchiveError::content(&digest, e))?
        {
            continue;
        }
        out.push((digest, d.size()));
    }
    Ok(())
}

fn save_oci_dyn(
    store: &dyn Provider,
    images: &[SaveImage],
    out: &mut dyn Write,
) -> Result<SaveReport, ArchiveError> {
    let mut blobs = Vec::new();
    let mut seen = HashSet::new();
    let mut index = Vec::new();
    let mut distinct = HashSet::new();
    for image in images {
        let names = image
            .names
            .iter()
            .map(|n| {
                let parsed = parse_name(n)?;
                Ok(match image.names_as_given {
                    true => n.clone(),
                    false => parsed.to_string(),
                })
            })
            .collect::<Result<Vec<_>, ArchiveError>>()?;
        let media_type = descriptor_media_type(&image.descriptor);
        if !(media_type.is_manifest() || media_type.is_index()) {
            return Err(ArchiveError::MediaType {
                what: "image to save".into(),
                source: MediaTypeError::WrongKind {
                    expected: "a manifest or an index",
                    found: media_type.as_str().to_owned(),
                },
            });
        }
        reachable(store, &image.descriptor, &mut seen, &mut blobs)?;
        distinct.insert(image.descriptor.digest().to_string());
        let mut plain = image.descriptor.clone();
        let mut annotations: HashMap<String, String> =
            plain.annotations().clone().unwrap_or_default();
        annotations.remove(REF_NAME);
        if names.is_empty() {
            plain.set_annotations(if annotations.is_empty() {
                None
            } else {
                Some(annotations)
            });
            index.push(plain);
        } else {
            for n in names {
                let mut d = plain.clone();
                let mut a = annotations.clone();
                a.insert(REF_NAME.to_owned(), n);
                d.set_annotations(Some(a));
                index.push(d);
            }
        }
    }
    let mut tar = TarWriter::new(out);
    let mut report = SaveReport {
        images: distinct.len(),
        ..SaveReport::default()
    };
    tar.add_bytes("oci-layout", crate::oci_dir::OCI_LAYOUT.as_bytes())?;
    tar.add_dir("blobs")?;
    let mut dirs = HashSet::new();
    // Leaves first, documents last: a reader streaming the archive sees
    // a manifest's blobs before the manifest.
    blobs.reverse();
    for (digest, size) in &blobs {
        let alg = digest.algorithm().as_str();
        if dirs.insert(alg) {
            tar.add_dir(&format!("blobs/{alg}"))?;
        }
        write_blob(
            &mut tar,
            store,
            &format!("blobs/{alg}/{}", digest.hex()),
            digest,
            *size,
        )?;
        report.files += 1;
        report.bytes += size;
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": index,
    });
    let bytes =
        image_core::json::to_canonical_vec(&index).map_err(|source| ArchiveError::Json {
            path: "index.json".into(),
            source,
        })?;
    tar.add_bytes("index.json", &bytes)?;
    report.files += 2;
    tar.finish()?;
    Ok(report)
}
