//! `ADD` of a URL or a git repository, without the network: what names the
//! content is hashed into the step's cache key, as BuildKit keys these
//! sources (an HTTP source by its URL, and by its `--checksum` when one is
//! given; a git source by its URL and ref), so a cache record made where
//! the content could be fetched (an earlier build, an imported cache)
//! gives the step's layer. Without one, the step fails naming the source
//! ([`CopyError::Remote`]).
//!
//! There is no fetch here, so `--checksum` verifies no content: it is part
//! of the key only, and a record made by a build that fetched and verified
//! the content under that checksum is what matches it.

use image_core::digest::Algorithm;
use image_core::Digest;

use super::walk::is_remote;
use super::{CopyError, CopySpec};

/// The digest of the remote sources of an `ADD` for its cache key, or
/// `None` when it has none (a `COPY`, or an `ADD` of local sources only).
///
/// # Errors
/// [`CopyError::Remote`] naming the first remote source when remote and
/// local sources (or heredocs) are mixed: the local ones would have to be
/// read and the remote ones fetched in one step, and there is no fetch.
pub fn remote_digest(spec: &CopySpec) -> Result<Option<Digest>, CopyError> {
    if !spec.add {
        return Ok(None);
    }
    let Some(first) = spec.sources.iter().find(|s| is_remote(s)) else {
        return Ok(None);
    };
    if !spec.heredocs.is_empty() || spec.sources.iter().any(|s| !is_remote(s)) {
        return Err(CopyError::Remote {
            source: first.clone(),
        });
    }
    let mut h = Algorithm::Sha256.hasher();
    let mut field = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(b"image-build remote add v1");
    for source in &spec.sources {
        let (kind, url, reference) = describe(source);
        field(kind.as_bytes());
        field(url.as_bytes());
        field(reference.as_bytes());
    }
    field(spec.checksum.as_deref().unwrap_or_default().as_bytes());
    field(&[u8::from(spec.keep_git_dir)]);
    Ok(Some(h.finish()))
}

/// A remote source as its key names it: `git` with the repository and the
/// ref after `#` (as `ADD` writes them), else `http` with the whole URL.
fn describe(source: &str) -> (&'static str, &str, &str) {
    let lower = source.to_ascii_lowercase();
    let git = lower.starts_with("git://")
        || lower.starts_with("git@")
        || lower.starts_with("ssh://")
        || source
            .split('#')
            .next()
            .is_some_and(|u| u.to_ascii_lowercase().ends_with(".git"));
    if git {
        let (url, reference) = source.split_once('#').unwrap_or((source, ""));
        ("git", url, reference)
    } else {
        ("http", source, "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(sources: &[&str]) -> CopySpec {
        let mut spec = CopySpec::new(sources.iter().map(|s| s.to_string()).collect(), "/", "/");
        spec.add = true;
        spec
    }

    #[test]
    fn the_key_names_the_url_the_ref_and_the_checksum() {
        let url = add(&["https://example.com/a.tar"]);
        let d = remote_digest(&url).unwrap().unwrap();
        assert_eq!(remote_digest(&url).unwrap(), Some(d.clone()));
        let other = add(&["https://example.com/b.tar"]);
        assert_ne!(remote_digest(&other).unwrap(), Some(d.clone()));
        let mut checked = url.clone();
        checked.checksum = Some(format!("sha256:{}", "0".repeat(64)));
        assert_ne!(remote_digest(&checked).unwrap(), Some(d));
        let v1 = remote_digest(&add(&["https://example.com/r.git#v1"])).unwrap();
        let v2 = remote_digest(&add(&["https://example.com/r.git#v2"])).unwrap();
        assert_ne!(v1, v2);
        assert_eq!(
            describe("https://example.com/r.git#v1"),
            ("git", "https://example.com/r.git", "v1")
        );
    }

    #[test]
    fn local_sources_have_no_remote_key_and_mixing_is_refused() {
        assert_eq!(remote_digest(&add(&["a.tar"])).unwrap(), None);
        let mut copy = add(&["https://example.com/a"]);
        copy.add = false;
        assert_eq!(remote_digest(&copy).unwrap(), None);
        let e = remote_digest(&add(&["a.tar", "https://example.com/a"])).unwrap_err();
        assert!(matches!(&e, CopyError::Remote { source } if source == "https://example.com/a"));
    }
}
