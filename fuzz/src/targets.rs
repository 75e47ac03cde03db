//! One function per fuzz target. Each takes arbitrary bytes, must never
//! panic, and checks a round-trip property where the format has one:
//! parse, write, parse again gives the same value.

use image_core::config::ImageConfig;
use image_core::manifest::Document;
use image_core::{Digest, Platform, Reference};

/// Digests: a parsed digest prints back to exactly its input.
pub fn digest(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = s.parse::<Digest>() {
        assert_eq!(d.to_string(), s, "a digest prints as parsed");
        assert_eq!(d.to_string().parse::<Digest>().ok(), Some(d));
    }
}

/// References: the normalised form parses to the same reference, and the
/// familiar form does too.
pub fn reference(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = s.parse::<Reference>() {
        let again: Reference = r.to_string().parse().expect("normalised form parses");
        assert_eq!(again, r, "normalised form of {s:?}");
        let familiar: Reference = r.familiar().parse().expect("familiar form parses");
        assert_eq!(familiar, r, "familiar form of {s:?}");
    }
}

/// Platforms: the printed form parses to the same normalised platform.
pub fn platform(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = s.parse::<Platform>() {
        let again: Platform = p.to_string().parse().expect("printed platform parses");
        assert_eq!(again.to_string(), p.to_string(), "platform {s:?}");
    }
}

/// Manifests and indexes: the digest is of the input bytes; rewriting the
/// parsed value canonically and parsing that gives the same value, and the
/// canonical bytes are a fixed point.
pub fn document(data: &[u8]) {
    let Ok(doc) = Document::from_bytes(data.to_vec(), None) else {
        return;
    };
    assert_eq!(doc.digest(), &Digest::sha256(data));
    match doc {
        Document::Manifest(m) => {
            let rewritten = m.modify(|_| {}).expect("a parsed manifest can be written");
            let again = Document::from_bytes(rewritten.raw().to_vec(), None).expect("reparses");
            let Document::Manifest(again) = again else {
                panic!("a manifest came back as an index");
            };
            assert_eq!(again.inner(), m.inner());
            assert_eq!(again.modify(|_| {}).expect("write").raw(), rewritten.raw());
        }
        Document::Index(i) => {
            let rewritten = i.modify(|_| {}).expect("a parsed index can be written");
            let again = Document::from_bytes(rewritten.raw().to_vec(), None).expect("reparses");
            let Document::Index(again) = again else {
                panic!("an index came back as a manifest");
            };
            assert_eq!(again.inner(), i.inner());
            assert_eq!(again.modify(|_| {}).expect("write").raw(), rewritten.raw());
        }
    }
}

/// Image configs: read, write canonically, read again gives the same value.
pub fn config(data: &[u8]) {
    let Ok(c) = ImageConfig::from_bytes(data.to_vec()) else {
        return;
    };
    assert_eq!(c.image_id(), &Digest::sha256(data));
    let Ok(rewritten) = c.modify(|_| {}) else {
        return; // e.g. a float JSON cannot round-trip exactly is reported, not panicked on
    };
    let again =
        ImageConfig::from_bytes(rewritten.raw().to_vec()).expect("canonical config reparses");
    assert_eq!(again.file(), rewritten.file());
    assert_eq!(again.modify(|_| {}).expect("write").raw(), rewritten.raw());
}
