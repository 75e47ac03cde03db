//! The referrers tag schema: the index a registry without the referrers
//! API keeps under the tag `<alg>-<hex>` of a subject, and how a pusher
//! adds its entry to it without losing another's.
//!
//! The distribution spec gives that index no lock: two pushers read the
//! same index, each adds its entry, and the second `PUT` drops the
//! first's (distribution 2.8 has no conditional `PUT`). A pusher
//! therefore sends `If-Match` with the `ETag` it read (a registry that
//! honours it answers 412 instead of losing an entry), and after its `PUT`
//! waits a jittered, growing moment and reads the index again: it merges
//! again when its entry is gone, and is done only when two reads a moment
//! apart (or its own write and the next read) find the same index with
//! its entry, at most [`TAG_INDEX_ROUNDS`] reads in all. An index nobody
//! else writes costs one write and one re-read. This narrows the race to
//! a pusher whose read-modify-write spans a whole wait; it cannot close
//! it on a registry without conditional writes.

use std::time::Duration;

use image_core::{Descriptor, Digest, Index};

/// The most reads of one tag-schema index a pusher makes (each followed
/// by a write when its entry is missing) before giving up.
pub const TAG_INDEX_ROUNDS: u32 = 16;

/// The tag of `subject`'s referrers index under the tag schema.
pub(crate) fn tag_schema_tag(subject: &Digest) -> String {
    format!("{}-{}", subject.algorithm(), subject.hex())
}

/// Whether `index` lists `digest`.
pub(crate) fn lists(index: &Index, digest: &Digest) -> bool {
    index
        .manifests()
        .iter()
        .any(|m| m.digest().to_string() == digest.to_string())
}

/// `index` (raw JSON, or a new empty index when `None`) with `entry`
/// appended, every other field kept as it was.
///
/// # Errors
/// A `&'static str` naming what was not usable.
pub(crate) fn merged(index: Option<&[u8]>, entry: &Descriptor) -> Result<Vec<u8>, &'static str> {
    let mut index = match index {
        Some(raw) => {
            serde_json::from_slice::<serde_json::Value>(raw).map_err(|_| "referrers index")?
        }
        None => serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [],
        }),
    };
    index
        .get_mut("manifests")
        .and_then(serde_json::Value::as_array_mut)
        .ok_or("referrers index without manifests")?
        .push(serde_json::to_value(entry).map_err(|_| "referrer descriptor")?);
    serde_json::to_vec(&index).map_err(|_| "referrers index")
}

/// The wait before the `attempt`th re-read (from 0): jittered, growing
/// with the attempt, so racing pushers fall out of step.
pub(crate) fn settle(attempt: u32) -> Duration {
    let base = 20u64 << attempt.min(4);
    Duration::from_millis(base + fastrand::u64(0..=base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_other_fields_and_entries() {
        let raw = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1}],"annotations":{"a":"b"}}"#;
        let entry = image_core::manifest::descriptor(
            &image_core::MediaType::OciManifest,
            &Digest::sha256(b"x"),
            1,
        );
        let out = Index::from_bytes(merged(Some(raw), &entry).unwrap()).unwrap();
        assert_eq!(out.manifests().len(), 2);
        assert!(lists(&out, &Digest::sha256(b"x")));
        assert_eq!(
            out.inner().annotations().as_ref().and_then(|a| a.get("a")),
            Some(&"b".to_owned())
        );
        let fresh = Index::from_bytes(merged(None, &entry).unwrap()).unwrap();
        assert_eq!(fresh.manifests().len(), 1);
        assert!(merged(Some(b"{}"), &entry).is_err());
    }

    #[test]
    fn settling_grows_and_stays_bounded() {
        for attempt in 0..TAG_INDEX_ROUNDS {
            let d = settle(attempt);
            let base = 20u64 << attempt.min(4);
            assert!(d >= Duration::from_millis(base) && d <= Duration::from_millis(2 * base));
        }
    }
}
