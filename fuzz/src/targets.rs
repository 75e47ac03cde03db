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

/// Layer unpack: any bytes (plain, gzip or zstd, sniffed) applied with
/// small limits onto a fresh directory inside a fresh parent that also
/// holds sentinels; whatever the layer says, nothing outside the target
/// may change: the parent lists the same names, and the sentinels keep
/// their type, content, mode, owner and mtime. Errors are fine; escapes
/// and panics are not.
pub fn unpack(data: &[u8]) {
    use image_overlay::unpack::{unpack, DevicePolicy, Limits, PathResolution, UnpackOptions};
    use std::collections::BTreeMap;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    type Facts = (
        u32,
        u32,
        u32,
        i64,
        i64,
        Option<Vec<u8>>,
        Option<std::path::PathBuf>,
    );
    fn facts(p: &Path) -> Facts {
        let md = std::fs::symlink_metadata(p).expect("sentinel is there");
        let content = md
            .is_file()
            .then(|| std::fs::read(p).expect("read sentinel"));
        let link = md
            .file_type()
            .is_symlink()
            .then(|| std::fs::read_link(p).expect("link"));
        (
            md.mode(),
            md.uid(),
            md.gid(),
            md.mtime(),
            md.mtime_nsec(),
            content,
            link,
        )
    }
    fn state(parent: &Path) -> BTreeMap<std::path::PathBuf, Option<Facts>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![parent.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).expect("list") {
                let p = e.expect("entry").path();
                let rel = p.strip_prefix(parent).expect("under parent").to_path_buf();
                if rel == Path::new("target") {
                    out.insert(rel, None); // its content is the layer's business
                    continue;
                }
                let f = facts(&p);
                if std::fs::symlink_metadata(&p).expect("lstat").is_dir() {
                    stack.push(p);
                }
                out.insert(rel, Some(f));
            }
        }
        out
    }
    /// Makes every directory under `dir` removable again (a layer may
    /// leave one with mode 000).
    fn unlock(dir: &Path) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700));
                unlock(&p);
            }
        }
    }

    let parent = tempfile::tempdir().expect("temp parent");
    let base = parent.path();
    let target = base.join("target");
    std::fs::write(base.join("sentinel"), b"keep").expect("sentinel");
    std::fs::create_dir(base.join("sentinel-dir")).expect("sentinel dir");
    std::fs::write(base.join("sentinel-dir/inner"), b"keep").expect("sentinel");
    std::os::unix::fs::symlink("sentinel", base.join("sentinel-link")).expect("sentinel link");
    let before = state(base);

    // Both ways of resolving paths: openat2, and the component walk that
    // stands in for it on kernels without it.
    for resolution in [PathResolution::Auto, PathResolution::ComponentWalk] {
        std::fs::create_dir(&target).expect("target");
        let mut options = UnpackOptions::default()
            .with_limits(Limits {
                max_expanded_bytes: 16 << 20,
                max_entries: 10_000,
                max_header_bytes: 1 << 20,
            })
            .with_path_resolution(resolution);
        // Device nodes are a policy question, not a containment one, and real
        // ones in a temp dir are better not made when fuzzing as root.
        options.devices = DevicePolicy::Skip;
        let unpacked = unpack(data, &target, &options);

        // Listing reads the stream through the same path: whatever unpack
        // read whole, list reads whole, with the same entries and diff ID.
        if let Ok(r) = &unpacked {
            let listed = image_overlay::list::list(
                data,
                &image_overlay::list::ListOptions::default().with_limits(options.limits),
                |_| {},
            )
            .expect("unpack read the layer, so list must");
            assert_eq!(listed.entries, r.entries);
            assert_eq!(listed.diff_id, r.diff_id);
        }

        unlock(&target);
        // std's remove_dir_all does not follow links out of the target.
        std::fs::remove_dir_all(&target).expect("remove target");
        assert_eq!(
            state(base),
            before,
            "something outside the target changed ({resolution:?})"
        );
        assert!(!Path::new("/pwned").exists(), "a file appeared at /pwned");
    }
}

/// Archive load (`docker save` tarballs and OCI archives, plain, gzip or
/// zstd): any bytes into an in-memory store; errors are fine, panics are
/// not, and a failed load tags nothing.
pub fn load(data: &[u8]) {
    use image_store::archive::{load, LoadOptions};
    use image_store::{MemoryStore, TagStore};
    let store = MemoryStore::new();
    let options = LoadOptions::default().max_expanded_bytes(16 << 20);
    if load(&store, data, &options).is_err() {
        assert!(
            store.tags().expect("tags").is_empty(),
            "a failed load tagged"
        );
    }
}
