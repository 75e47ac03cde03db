//! The content store conformance suite, as containerd exports its content
//! test suite: every implementation of [`ContentStore`] runs the same checks
//! of the lifecycle the [`content`](crate::content) module describes (ingest,
//! resume, commit with its checks, read, delete, forwarding impls).
//!
//! Built with the `testsuite` feature, for this crate's own tests and for
//! another implementation's:
//!
//! ```
//! image_store::testsuite::content_store(image_store::MemoryStore::new);
//! ```
//!
//! A failed check panics (it is meant to run inside a `#[test]`), naming what
//! the store did.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed check panics

use std::io::{Read, Write};

use image_core::{Algorithm, Classify, Digest, ErrorKind};

use crate::{ContentError, ContentStore};

/// Runs every check of the suite, each against a fresh store from `new`.
///
/// # Panics
/// When the store behaves otherwise than a content store must.
pub fn content_store<S, F>(new: F)
where
    S: ContentStore + 'static,
    F: Fn() -> S,
{
    empty_and_missing(&new());
    write_read_round_trip(&new());
    writer_commit_checks(&new());
    resume(&new());
    large_resume(&new());
    locked_reference(&new());
    dedup_and_delete(&new());
    sha512(&new());
    ingest_reader(&new());
    labels(&new());
    read_by_descriptor(&new());
    // The forwarding impls: a reference, an Arc and a Box of a store are stores.
    #[allow(clippy::needless_borrows_for_generic_args)] // tests the `&T` impls
    forwarding(&new());
    forwarding(std::sync::Arc::new(new()));
    forwarding(Box::new(new()) as Box<dyn ContentStore>);
}

/// Deterministic pseudo-random bytes (xorshift from `seed`), the data of
/// the suite and of the crate's other tests.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn empty_and_missing<S: ContentStore>(store: &S) {
    let d = Digest::sha256(b"never written");
    assert!(!store.exists(&d).unwrap());
    assert!(store.try_info(&d).unwrap().is_none());
    let e = store.info(&d).unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(matches!(store.reader(&d), Err(ContentError::NotFound { digest }) if digest == d));
    assert!(matches!(
        store.delete(&d),
        Err(ContentError::NotFound { .. })
    ));
}

fn write_read_round_trip<S: ContentStore>(store: &S) {
    let data = bytes(1, 300_000);
    let d = store.write_blob(&data).unwrap();
    assert_eq!(d, Digest::sha256(&data));
    let info = store.info(&d).unwrap();
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(info.digest, d);
    let mut out = Vec::new();
    store.reader(&d).unwrap().read_to_end(&mut out).unwrap();
    assert_eq!(out, data);
    assert!(store.list().unwrap().iter().any(|i| i.digest == d));
    let e = store.read_blob_to_vec(&d, 1000).unwrap_err();
    assert!(
        matches!(
            e,
            ContentError::TooLarge {
                size: 300_000,
                limit: 1000,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(store.read_blob_to_vec(&d, 1 << 20).unwrap(), data);
}

fn writer_commit_checks<S: ContentStore>(store: &S) {
    // No expectations: the digest is computed.
    let mut w = store.writer("commit-free").unwrap();
    w.write_all(b"hello ").unwrap();
    w.write_all(b"world").unwrap();
    assert_eq!(w.offset(), 11);
    assert_eq!(w.digest(), Digest::sha256(b"hello world"));
    let d = w.commit(None, None).unwrap();
    assert_eq!(d, Digest::sha256(b"hello world"));

    // Wrong digest: typed error naming both, nothing published, ingest gone.
    let wrong = Digest::sha256(b"something else");
    let mut w = store.writer("commit-wrong").unwrap();
    w.write_all(b"payload-1").unwrap();
    let e = w.commit(Some(9), Some(&wrong)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DigestMismatch, "{e}");
    // The message with its sources, as a chain printer shows it.
    let msg = image_core::error::Chain(&e).to_string();
    assert!(
        msg.contains(&wrong.to_string()) && msg.contains(&Digest::sha256(b"payload-1").to_string()),
        "{msg}"
    );
    assert!(!store.exists(&Digest::sha256(b"payload-1")).unwrap());
    assert!(store
        .ingests()
        .unwrap()
        .iter()
        .all(|i| i.reference != "commit-wrong"));

    // Wrong size.
    let mut w = store.writer("commit-size").unwrap();
    w.write_all(b"payload-2").unwrap();
    let e = w
        .commit(Some(10), Some(&Digest::sha256(b"payload-2")))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SizeMismatch, "{e}");
    let mut w = store.writer("commit-size").unwrap();
    assert_eq!(w.offset(), 0, "a failed commit discards the ingest");
    w.write_all(b"payload-2").unwrap();
    let e = w.commit(Some(3), None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SizeMismatch, "{e}");
    assert!(!store.exists(&Digest::sha256(b"payload-2")).unwrap());

    // Algorithm mismatch.
    let w = store.writer("commit-alg").unwrap();
    let e = w
        .commit(None, Some(&Digest::of_bytes(Algorithm::Sha512, b"")))
        .unwrap_err();
    assert!(matches!(e, ContentError::AlgorithmMismatch { .. }), "{e}");

    // Invalid references.
    assert_eq!(
        store.writer("").map(|_| ()).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        store.writer("a\nb").map(|_| ()).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

fn resume<S: ContentStore>(store: &S) {
    let data = bytes(2, 100_000);
    let d = Digest::sha256(&data);
    {
        let mut w = store.writer("resumable").unwrap();
        w.write_all(&data[..40_000]).unwrap();
        // dropped without commit
    }
    let st = store.ingests().unwrap();
    let s = st
        .iter()
        .find(|s| s.reference == "resumable")
        .expect("listed");
    assert_eq!(s.offset, 40_000);
    let mut w = store.writer("resumable").unwrap();
    assert_eq!(w.offset(), 40_000);
    assert_eq!(w.digest(), Digest::sha256(&data[..40_000]));
    w.write_all(&data[40_000..]).unwrap();
    assert_eq!(w.commit(Some(100_000), Some(&d)).unwrap(), d);
    assert_eq!(store.read_blob_to_vec(&d, 1 << 20).unwrap(), data);
    assert!(store
        .ingests()
        .unwrap()
        .iter()
        .all(|i| i.reference != "resumable"));

    // Truncate and abort.
    let mut w = store.writer("trunc").unwrap();
    w.write_all(b"abcdef").unwrap();
    w.truncate(3).unwrap();
    assert_eq!(w.offset(), 3);
    assert_eq!(w.digest(), Digest::sha256(b"abc"));
    assert!(w.truncate(4).is_err());
    w.write_all(b"xyz").unwrap();
    assert_eq!(
        w.commit(None, Some(&Digest::sha256(b"abcxyz"))).unwrap(),
        Digest::sha256(b"abcxyz")
    );

    let mut w = store.writer("to-abort").unwrap();
    w.write_all(b"partial").unwrap();
    drop(w);
    store.abort("to-abort").unwrap();
    store.abort("to-abort").unwrap();
    assert_eq!(store.writer("to-abort").unwrap().offset(), 0);
}

/// Large ingests (hashed beside the writes by the on-disk store): the
/// digest so far, truncation and resumption stay exact, and a mismatch at
/// commit publishes nothing.
fn large_resume<S: ContentStore>(store: &S) {
    let data = bytes(3, 5 << 20);
    let d = Digest::sha256(&data);
    let mut w = store.writer("large").unwrap();
    for chunk in data[..3 << 20].chunks(100_003) {
        w.write_all(chunk).unwrap();
    }
    assert_eq!(w.digest(), Digest::sha256(&data[..3 << 20]));
    w.truncate(1_500_000).unwrap();
    assert_eq!(w.digest(), Digest::sha256(&data[..1_500_000]));
    w.write_all(&data[1_500_000..4 << 20]).unwrap();
    drop(w);
    let mut w = store.writer("large").unwrap();
    assert_eq!(w.offset(), 4 << 20);
    w.write_all(&data[4 << 20..]).unwrap();
    assert_eq!(w.commit(Some(5 << 20), Some(&d)).unwrap(), d);
    assert_eq!(store.read_blob_to_vec(&d, 6 << 20).unwrap(), data);

    let mut w = store.writer("large-wrong").unwrap();
    w.write_all(&data[..(5 << 20) - 1]).unwrap();
    w.write_all(b"?").unwrap();
    let e = w
        .commit(None, Some(&Digest::sha256(&data[1..])))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DigestMismatch, "{e}");
    let mut other = data.clone();
    *other.last_mut().unwrap() = b'?';
    assert!(!store.exists(&Digest::sha256(&other)).unwrap());
}

fn locked_reference<S: ContentStore>(store: &S) {
    let w = store.writer("held").unwrap();
    let e = store.writer("held").map(|_| ()).unwrap_err();
    assert!(matches!(e, ContentError::Locked { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(matches!(
        store.abort("held"),
        Err(ContentError::Locked { .. })
    ));
    drop(w);
    let w = store.writer("held").unwrap();
    drop(w);
    store.abort("held").unwrap();
}

fn dedup_and_delete<S: ContentStore>(store: &S) {
    let a = store.write_blob(b"same").unwrap();
    let b = store.write_blob(b"same").unwrap();
    assert_eq!(a, b);
    let mut w = store.writer("dup").unwrap();
    w.write_all(b"same").unwrap();
    assert_eq!(w.commit(Some(4), Some(&a)).unwrap(), a);
    assert_eq!(
        store
            .list()
            .unwrap()
            .iter()
            .filter(|i| i.digest == a)
            .count(),
        1
    );
    store.delete(&a).unwrap();
    assert!(!store.exists(&a).unwrap());
}

fn sha512<S: ContentStore>(store: &S) {
    let d = Digest::of_bytes(Algorithm::Sha512, b"five-twelve");
    let mut w = store.writer_with("s512", Algorithm::Sha512).unwrap();
    w.write_all(b"five-twelve").unwrap();
    assert_eq!(w.commit(None, Some(&d)).unwrap(), d);
    assert_eq!(store.read_blob_to_vec(&d, 100).unwrap(), b"five-twelve");
    let d2 = store
        .ingest_reader(
            &mut &b"via reader 512"[..],
            None,
            Some(&Digest::of_bytes(Algorithm::Sha512, b"via reader 512")),
        )
        .unwrap();
    assert_eq!(d2.algorithm(), Algorithm::Sha512);
}

fn ingest_reader<S: ContentStore>(store: &S) {
    let data = bytes(3, 70_000);
    let d = Digest::sha256(&data);
    // A partial ingest under the derived reference is resumed.
    {
        let mut w = store.writer(&format!("blob-{d}")).unwrap();
        w.write_all(&data[..1000]).unwrap();
    }
    assert_eq!(
        store
            .ingest_reader(&mut &data[..], Some(70_000), Some(&d))
            .unwrap(),
        d
    );
    assert_eq!(store.read_blob_to_vec(&d, 1 << 20).unwrap(), data);
    // A bad stream is refused and leaves nothing.
    let bad = bytes(4, 5000);
    let want = Digest::sha256(b"not this");
    let e = store
        .ingest_reader(&mut &bad[..], None, Some(&want))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DigestMismatch);
    assert!(!store.exists(&Digest::sha256(&bad)).unwrap());
    // Without expectations the digest is computed.
    let d = store
        .ingest_reader(&mut &bad[..], Some(5000), None)
        .unwrap();
    assert_eq!(d, Digest::sha256(&bad));
    // A failing reader is a Read error and publishes nothing.
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("boom"))
        }
    }
    let e = store.ingest_reader(&mut Failing, None, None).unwrap_err();
    assert!(matches!(e, ContentError::Read { .. }), "{e}");
}

/// Labels on content `Info` (containerd's): set whole, bounded, gone
/// with their blob.
fn labels<S: ContentStore>(store: &S) {
    use crate::content::{Labels, MAX_LABELS, MAX_LABEL_BYTES};
    let d = store.write_blob(b"labelled").unwrap();
    assert!(store.info(&d).unwrap().labels.is_empty());
    let labels: Labels = [("cache.key", "sha256:abc"), ("x", "")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
    let info = store.set_labels(&d, labels.clone()).unwrap();
    assert_eq!(info.labels, labels);
    assert_eq!(info.size, 8);
    assert_eq!(store.info(&d).unwrap().labels, labels);
    // Replaced whole, not merged.
    let one: Labels = [("y".to_owned(), "1".to_owned())].into();
    store.set_labels(&d, one.clone()).unwrap();
    assert_eq!(store.info(&d).unwrap().labels, one);
    // Over the limits: refused, the labels unchanged.
    let too_many: Labels = (0..=MAX_LABELS)
        .map(|i| (i.to_string(), String::new()))
        .collect();
    let too_long: Labels = [("k".to_owned(), "v".repeat(MAX_LABEL_BYTES))].into();
    let empty_key: Labels = [(String::new(), "v".to_owned())].into();
    for bad in [too_many, too_long, empty_key] {
        let e = store.set_labels(&d, bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    }
    assert_eq!(store.info(&d).unwrap().labels, one);
    // Absent blob.
    let missing = Digest::sha256(b"no such blob");
    assert!(store
        .set_labels(&missing, one.clone())
        .unwrap_err()
        .is_not_found());
    // Labels go with the blob: a blob written again has none.
    store.delete(&d).unwrap();
    store.write_blob(b"labelled").unwrap();
    assert!(store.info(&d).unwrap().labels.is_empty());
    store.set_labels(&d, one).unwrap();
    store.set_labels(&d, Labels::new()).unwrap();
    assert!(store.info(&d).unwrap().labels.is_empty());
    store.delete(&d).unwrap();
}

/// `read_descriptor_to_vec`: the bytes for a true descriptor; the limit
/// checked against the descriptor before anything is opened (a missing
/// blob over the limit is `TooLarge`, not `NotFound`); a size that is not
/// the blob's, either way, a size mismatch; a digest the strict rules
/// refuse, an invalid descriptor.
fn read_by_descriptor<S: ContentStore>(store: &S) {
    use image_core::manifest::descriptor;
    use image_core::MediaType;

    let data = bytes(11, 2000);
    let d = store.write_blob(&data).unwrap();
    let config = |digest: &Digest, size: u64| descriptor(&MediaType::OciConfig, digest, size);
    assert_eq!(
        store
            .read_descriptor_to_vec(&config(&d, 2000), 2000)
            .unwrap(),
        data
    );

    let e = store
        .read_descriptor_to_vec(&config(&d, 2000), 1999)
        .unwrap_err();
    assert!(
        matches!(
            e,
            ContentError::TooLarge {
                size: 2000,
                limit: 1999,
                ..
            }
        ),
        "{e}"
    );
    let absent = Digest::sha256(b"absent document");
    let e = store
        .read_descriptor_to_vec(&config(&absent, 1 << 40), 1 << 20)
        .unwrap_err();
    assert!(matches!(e, ContentError::TooLarge { .. }), "{e}");
    let e = store
        .read_descriptor_to_vec(&config(&absent, 10), 1 << 20)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    for size in [1999, 2001] {
        let e = store
            .read_descriptor_to_vec(&config(&d, size), 1 << 20)
            .unwrap_err();
        assert!(matches!(e, ContentError::DescriptorMismatch { .. }), "{e}");
        assert_eq!(e.kind(), ErrorKind::SizeMismatch, "{e}");
    }

    let md5: image_core::Descriptor = serde_json::from_value(serde_json::json!({
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": "md5:abc",
        "size": 2000,
    }))
    .unwrap();
    let e = store.read_descriptor_to_vec(&md5, 1 << 20).unwrap_err();
    assert!(matches!(e, ContentError::InvalidDescriptor { .. }), "{e}");
}

fn forwarding<S: ContentStore>(store: S) {
    let d = store.write_blob(b"through a pointer").unwrap();
    assert!(store.exists(&d).unwrap());
    let desc = image_core::manifest::descriptor(&image_core::MediaType::OciConfig, &d, 17);
    assert_eq!(
        store.read_descriptor_to_vec(&desc, 17).unwrap(),
        b"through a pointer"
    );
}
