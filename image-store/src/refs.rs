//! The reference graph between blobs: index -> manifests, manifest ->
//! config and layers, and the OCI 1.1 `subject` link, shared by tagging,
//! image resolution, gc and fsck.

use std::collections::HashSet;

use image_core::{Descriptor, DescriptorExt, Digest, Document};

use crate::content::{ContentError, Provider};

/// The largest manifest or index this crate reads into memory.
pub const MAX_DOCUMENT_SIZE: u64 = 8 * 1024 * 1024;

/// Whether a blob with this media type may be a manifest or an index.
fn may_be_document(d: &Descriptor) -> bool {
    let m = image_core::manifest::descriptor_media_type(d);
    m.is_manifest() || m.is_index()
}

/// The descriptors a manifest or index refers to (config, layers, child
/// manifests, subject).
pub fn children(doc: &Document) -> Vec<Descriptor> {
    let mut out = Vec::new();
    match doc {
        Document::Manifest(m) => {
            out.push(m.config().clone());
            out.extend(m.layers().iter().cloned());
            out.extend(m.subject().cloned());
        }
        Document::Index(i) => {
            out.extend(i.manifests().iter().cloned());
            out.extend(i.inner().subject().clone());
        }
    }
    out
}

/// Reads and parses the document behind `d` (whose digest is `digest`) when it is a present manifest
/// or index, by its descriptor; `None` when it is a leaf, missing, too big
/// or unparsable. A descriptor that lies about the size of a present blob
/// does not hide the blob's references: the blob is read by its digest
/// then, so the graph of a blob (walked once per digest) is the same
/// whichever descriptor reached it first, and gc never collects what a
/// true descriptor elsewhere still needs.
pub(crate) fn read_document<P: Provider + ?Sized>(
    store: &P,
    d: &Descriptor,
    digest: &Digest,
) -> Result<Option<Document>, ContentError> {
    if !may_be_document(d) {
        return Ok(None);
    }
    let read = match store.read_descriptor_to_vec(d, MAX_DOCUMENT_SIZE) {
        Err(ContentError::DescriptorMismatch { .. }) => {
            store.read_blob_to_vec(digest, MAX_DOCUMENT_SIZE)
        }
        read => read,
    };
    match read {
        Ok(bytes) => {
            let hint = image_core::manifest::descriptor_media_type(d);
            Ok(Document::from_bytes(bytes, Some(&hint))
                .ok()
                .map(|doc| doc.with_algorithm(digest.algorithm())))
        }
        Err(
            ContentError::NotFound { .. }
            | ContentError::TooLarge { .. }
            | ContentError::Read { .. },
        ) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Visits every blob reachable from `root` (itself included), once each,
/// telling whether it is present. Descriptors with invalid digests are
/// skipped; documents that cannot be read or parsed are treated as leaves.
///
/// # Errors
/// I/O errors of the store other than a missing or corrupt blob.
pub fn walk<P: Provider + ?Sized>(
    store: &P,
    root: &Descriptor,
    visit: &mut dyn FnMut(&Digest, bool),
) -> Result<(), ContentError> {
    let mut seen = HashSet::new();
    walk_from(store, root, &mut seen, visit)
}

/// Like [`walk`], sharing `seen` across several roots.
pub(crate) fn walk_from<P: Provider + ?Sized>(
    store: &P,
    root: &Descriptor,
    seen: &mut HashSet<Digest>,
    visit: &mut dyn FnMut(&Digest, bool),
) -> Result<(), ContentError> {
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        let Ok(digest) = d.checked_digest() else {
            continue;
        };
        if !seen.insert(digest.clone()) {
            continue;
        }
        let present = store.exists(&digest)?;
        visit(&digest, present);
        if !present {
            continue;
        }
        if let Some(doc) = read_document(store, &d, &digest)? {
            stack.extend(children(&doc));
        }
    }
    Ok(())
}

/// The descriptor of the manifest or index with digest `target` among
/// `roots` and the manifests the indexes among them list (nested indexes
/// too), or `None`. Each index is read once; a manifest's own references
/// (config, layers, subject) are not followed, so an image is only found
/// through an index that lists it.
///
/// # Errors
/// I/O errors of the store other than a missing or corrupt blob.
pub(crate) fn find_document<P: Provider + ?Sized>(
    store: &P,
    roots: &[Descriptor],
    target: &Digest,
) -> Result<Option<Descriptor>, ContentError> {
    let mut seen = HashSet::new();
    let mut stack: Vec<Descriptor> = roots.iter().rev().cloned().collect();
    while let Some(d) = stack.pop() {
        if !may_be_document(&d) {
            continue;
        }
        let Ok(digest) = d.checked_digest() else {
            continue;
        };
        if digest == *target {
            return Ok(Some(d));
        }
        if !image_core::manifest::descriptor_media_type(&d).is_index()
            || !seen.insert(digest.clone())
        {
            continue;
        }
        if let Some(Document::Index(index)) = read_document(store, &d, &digest)? {
            stack.extend(index.manifests().iter().rev().cloned());
        }
    }
    Ok(None)
}
