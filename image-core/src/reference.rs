//! Image references: `[domain/]path[:tag][@digest]`, normalised as Docker does.
//!
//! A [`Reference`] names an image in a registry. Parsing follows the grammar
//! and the normalisation of Docker's reference library
//! (`github.com/distribution/reference`, `ParseNormalizedNamed` followed by
//! `TagNameOnly`), written here without regular expressions:
//!
//! - the first `/`-separated component is the registry domain when it
//!   contains a `.` or a `:`, is `localhost`, or holds an upper-case letter;
//!   otherwise the domain is `docker.io`;
//! - `index.docker.io` is spelled `docker.io`;
//! - a single-component repository on `docker.io` lives under `library/`;
//! - when neither a tag nor a digest is given the tag is `latest`; a tag and
//!   a digest given together are both kept;
//! - the repository path is lower case, at most 255 characters, made of
//!   components `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`;
//! - a tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`;
//! - a digest is a [`Digest`] (sha256 or sha512, lower-case hex).
//!
//! [`Display`](fmt::Display) prints the full form
//! (`docker.io/library/nginx:latest`) and [`Reference::familiar`] the short
//! form Docker shows (`nginx:latest`).
//!
//! ```
//! use image_core::Reference;
//!
//! let r: Reference = "localhost:5000/team/app".parse()?;
//! assert_eq!(r.domain(), "localhost:5000");
//! assert_eq!(r.repository(), "team/app");
//! assert_eq!(r.tag(), Some("latest"));
//! assert_eq!(r.to_string(), "localhost:5000/team/app:latest");
//!
//! let hub: Reference = "index.docker.io/ubuntu".parse()?;
//! assert_eq!(hub.name(), "docker.io/library/ubuntu");
//! assert_eq!(hub.familiar(), "ubuntu:latest");
//! # Ok::<(), image_core::reference::ReferenceError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};
use crate::error::{Classify, ErrorKind};

/// The registry that references without a domain point to (Docker Hub).
pub const DEFAULT_DOMAIN: &str = "docker.io";

/// The legacy name of Docker Hub, normalised to [`DEFAULT_DOMAIN`].
pub const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";

/// The namespace of Docker Hub's official images.
pub const OFFICIAL_REPOSITORY_PREFIX: &str = "library/";

/// The tag given to references that name neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";

/// The longest repository path accepted, in characters (the domain is not
/// counted).
pub const MAX_REPOSITORY_LEN: usize = 255;

/// The longest tag accepted, in characters.
pub const MAX_TAG_LEN: usize = 128;

/// How much of an offending input an error keeps.
const ERROR_INPUT_MAX: usize = 256;

/// Why a string is not a valid image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceError {
    /// The input is the empty string.
    #[error("invalid reference: the reference is empty")]
    Empty,
    /// The input does not have the shape `name[:tag][@digest]`, for example
    /// nothing precedes the `:` or the `@`.
    #[error("invalid reference format {input:?}: {reason}")]
    InvalidFormat {
        /// The input, cut to 256 characters.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The input is 64 lower-case hex digits, which would be read as an image
    /// ID rather than a repository name.
    #[error("invalid repository name {input:?}: cannot specify 64-byte hexadecimal strings")]
    HexName {
        /// The input.
        input: String,
    },
    /// The repository path holds an upper-case letter.
    #[error("invalid reference format: repository name {repository:?} must be lowercase")]
    UpperCase {
        /// The repository path (after normalisation), cut to 256 characters.
        repository: String,
    },
    /// The repository path is longer than [`MAX_REPOSITORY_LEN`].
    #[error(
        "repository name is {length} characters long, more than the {max} allowed: {repository:?}",
        max = MAX_REPOSITORY_LEN
    )]
    NameTooLong {
        /// The repository path, cut to 256 characters.
        repository: String,
        /// Its full length in bytes.
        length: usize,
    },
    /// The registry part is not `host[:port]` with a DNS-like host, a dotted
    /// IPv4 address or a bracketed IPv6 address.
    #[error(
        "invalid registry domain {domain:?}: expected host[:port] with a host of letters, \
         digits, '-' and '.', or an IPv6 address in brackets (a first component with '.', \
         ':' or upper case is read as the registry)"
    )]
    InvalidDomain {
        /// The domain part, cut to 256 characters.
        domain: String,
    },
    /// A `/`-separated component of the repository path is malformed.
    #[error(
        "invalid path component {component:?} in repository {repository:?}: components are \
         lower-case letters and digits separated by '.', '_', '__' or dashes"
    )]
    InvalidPathComponent {
        /// The repository path, cut to 256 characters.
        repository: String,
        /// The offending component (possibly empty), cut to 256 characters.
        component: String,
    },
    /// The tag is empty, too long, or holds a character outside
    /// `[A-Za-z0-9_.-]`, or starts with `.` or `-`.
    #[error(
        "invalid tag {tag:?}: a tag is 1 to {max} letters, digits, '_', '.' or '-', not \
         starting with '.' or '-'",
        max = MAX_TAG_LEN
    )]
    InvalidTag {
        /// The tag, cut to 256 characters.
        tag: String,
    },
    /// The digest after `@` is not a digest this library accepts.
    #[error("invalid digest {digest:?} in reference")]
    InvalidDigest {
        /// The digest part, cut to 256 characters.
        digest: String,
        /// Why [`Digest`] rejected it.
        #[source]
        error: DigestError,
    },
    /// A name meant as a tag holds a digest. A digest names content, so
    /// `name@sha256:...` is resolved by content and is never stored as a
    /// tag (Docker: "refusing to create a tag with a digest reference").
    #[error("refusing {input:?} as a tag: a tag cannot hold a digest")]
    DigestInTag {
        /// The input, cut to 256 characters.
        input: String,
    },
}

impl Classify for ReferenceError {
    fn kind(&self) -> ErrorKind {
        match self {
            ReferenceError::InvalidDigest { error, .. } => error.kind(),
            _ => ErrorKind::InvalidInput,
        }
    }
}

/// A normalised image reference: registry domain, repository path, and an
/// optional tag and digest.
///
/// Values only come out of the parsers and the `with_*` methods, so every
/// part is valid. Equality compares the normalised parts: `nginx`,
/// `docker.io/nginx` and `index.docker.io/library/nginx:latest` parse to
/// equal references.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises `s` like [`FromStr`], but without adding the
    /// default tag: `nginx` gives `docker.io/library/nginx` with neither tag
    /// nor digest. A tag or digest present in `s` is kept.
    ///
    /// # Errors
    /// A [`ReferenceError`] naming the first malformed part of `s`.
    pub fn parse_name(s: &str) -> Result<Reference, ReferenceError> {
        parse_normalized(s)
    }

    /// Parses and normalises `s` as a name to tag an image with: like
    /// [`FromStr`] (the tag `latest` is added when none is given), but a
    /// reference holding a digest is refused, as `docker tag` refuses it.
    /// A digest names content; a store never records it as a tag, or a tag
    /// could claim any digest for any content.
    ///
    /// # Errors
    /// [`ReferenceError::DigestInTag`], or the error of [`FromStr`].
    ///
    /// ```
    /// use image_core::Reference;
    /// let d = "sha256:8a1c8c7d5a6ba7c8ab6a4e2f0e7cd6d8b8c0f3bb8bc35ec2a8ca28f1f9b0ef8e";
    /// assert!(Reference::parse_tag(&format!("busybox@{d}")).is_err());
    /// assert_eq!(Reference::parse_tag("busybox")?.to_string(), "docker.io/library/busybox:latest");
    /// # Ok::<(), image_core::reference::ReferenceError>(())
    /// ```
    pub fn parse_tag(s: &str) -> Result<Reference, ReferenceError> {
        let r: Reference = s.parse()?;
        if r.digest.is_some() {
            return Err(ReferenceError::DigestInTag { input: clip(s) });
        }
        Ok(r)
    }

    /// The registry domain, with its port if any: `docker.io`,
    /// `localhost:5000`, `[::1]:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry, without the domain:
    /// `library/nginx`, `team/app`.
    pub fn repository(&self) -> &str {
        &self.path
    }

    /// The full repository name, `domain/path`: `docker.io/library/nginx`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag, if any (`latest` when parsed with [`FromStr`] from a
    /// reference that named neither tag nor digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same reference with `tag` as its tag; a digest is kept.
    ///
    /// # Errors
    /// [`ReferenceError::InvalidTag`] when `tag` is not a valid tag.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        if !is_valid_tag(tag) {
            return Err(ReferenceError::InvalidTag { tag: clip(tag) });
        }
        Ok(Reference {
            tag: Some(tag.to_owned()),
            ..self.clone()
        })
    }

    /// The same reference with `digest` as its digest; a tag is kept.
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same reference without its tag.
    pub fn without_tag(&self) -> Reference {
        Reference {
            tag: None,
            ..self.clone()
        }
    }

    /// The same reference without its digest.
    pub fn without_digest(&self) -> Reference {
        Reference {
            digest: None,
            ..self.clone()
        }
    }

    /// The repository name as Docker displays it: `docker.io/` is dropped,
    /// and so is `library/` before a single-component path
    /// (`docker.io/library/nginx` is `nginx`, `docker.io/user/app` is
    /// `user/app`); names on other registries are unchanged.
    ///
    /// Unlike Docker, `docker.io/` is kept when the first path component
    /// would be read back as a domain (`docker.io/localhost/x`,
    /// `docker.io/foo.bar/x`), so the familiar form always parses back to
    /// the same repository.
    pub fn familiar_name(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return self.name();
        }
        if let Some(rest) = self.path.strip_prefix(OFFICIAL_REPOSITORY_PREFIX) {
            if !rest.contains('/') {
                return rest.to_owned();
            }
        }
        let first = self.path.split('/').next().unwrap_or_default();
        if self.path.contains('/') && looks_like_domain(first) {
            return self.name();
        }
        self.path.clone()
    }

    /// The whole reference as Docker displays it: the
    /// [familiar name](Reference::familiar_name), then `:tag` and `@digest`
    /// when present (`nginx:1.21.1-alpine`, `user/repo:tag`,
    /// `localhost:5000/x:y`).
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        self.push_suffix(&mut s);
        s
    }

    fn push_suffix(&self, s: &mut String) {
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            s.push('@');
            s.push_str(&digest.to_string());
        }
    }
}

impl fmt::Display for Reference {
    /// The full normalised form: `domain/path[:tag][@digest]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    /// Parses and normalises a reference as `docker pull` does, adding the
    /// tag `latest` when `s` names neither a tag nor a digest.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut r = parse_normalized(s)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some(DEFAULT_TAG.to_owned());
        }
        Ok(r)
    }
}

impl TryFrom<&str> for Reference {
    type Error = ReferenceError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Reference {
    /// Parses the string with [`FromStr`], so it is normalised and gets the
    /// default tag when it has neither tag nor digest.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Cuts an offending input for an error message.
fn clip(s: &str) -> String {
    match s.char_indices().nth(ERROR_INPUT_MAX) {
        Some((end, _)) => s[..end].to_owned(),
        None => s.to_owned(),
    }
}

/// The normalising parse, without the default tag.
fn parse_normalized(s: &str) -> Result<Reference, ReferenceError> {
    if s.is_empty() {
        return Err(ReferenceError::Empty);
    }
    if is_identifier(s) {
        return Err(ReferenceError::HexName { input: clip(s) });
    }

    // No part before the digest may hold '@', so the first '@' starts it.
    let (name_and_tag, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    if name_and_tag.is_empty() || name_and_tag.starts_with(':') {
        return Err(ReferenceError::InvalidFormat {
            input: clip(s),
            reason: "no repository name before the tag or digest",
        });
    }

    let (domain, remainder) = split_docker_domain(name_and_tag);
    // The path holds no ':', so the first one after the domain starts the tag.
    let (path, tag) = match remainder.split_once(':') {
        Some((p, t)) => (p, Some(t)),
        None => (remainder.as_str(), None),
    };

    if path.chars().any(char::is_uppercase) {
        return Err(ReferenceError::UpperCase {
            repository: clip(path),
        });
    }
    if !is_valid_domain(domain) {
        return Err(ReferenceError::InvalidDomain {
            domain: clip(domain),
        });
    }
    if let Some(component) = path.split('/').find(|c| !is_path_component(c)) {
        return Err(ReferenceError::InvalidPathComponent {
            repository: clip(path),
            component: clip(component),
        });
    }
    if path.len() > MAX_REPOSITORY_LEN {
        return Err(ReferenceError::NameTooLong {
            repository: clip(path),
            length: path.len(),
        });
    }
    if let Some(tag) = tag {
        if !is_valid_tag(tag) {
            return Err(ReferenceError::InvalidTag { tag: clip(tag) });
        }
    }
    let digest = match digest {
        None => None,
        Some(d) => Some(parse_digest(s, d)?),
    };

    Ok(Reference {
        domain: domain.to_owned(),
        path: path.to_owned(),
        tag: tag.map(str::to_owned),
        digest,
    })
}

fn parse_digest(input: &str, d: &str) -> Result<Digest, ReferenceError> {
    d.parse::<Digest>().map_err(|error| {
        let algorithm = d.split_once(':').map_or(d, |(a, _)| a);
        if matches!(error, DigestError::UnsupportedAlgorithm { .. })
            && !is_digest_algorithm(algorithm)
        {
            // Not an unknown algorithm but no algorithm at all.
            ReferenceError::InvalidFormat {
                input: clip(input),
                reason: "the part after '@' is not a digest algorithm:hex",
            }
        } else {
            ReferenceError::InvalidDigest {
                digest: clip(d),
                error,
            }
        }
    })
}

/// Splits `name[:tag]` into the domain and `path[:tag]`, applying Docker
/// Hub's defaults (`docker.io`, `library/`).
fn split_docker_domain(name: &str) -> (&str, String) {
    let (domain, remainder) = match name.split_once('/') {
        // A single component is always a Docker Hub repository, even
        // `localhost` or `example.com`.
        None => (DEFAULT_DOMAIN, name),
        Some((first, rest)) => {
            if first == LEGACY_DEFAULT_DOMAIN {
                (DEFAULT_DOMAIN, rest)
            } else if looks_like_domain(first) || first.chars().any(char::is_uppercase) {
                // Repository paths are lower case, so an upper-case first
                // component can only be a domain.
                (first, rest)
            } else {
                (DEFAULT_DOMAIN, name)
            }
        }
    };
    let remainder = if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        format!("{OFFICIAL_REPOSITORY_PREFIX}{remainder}")
    } else {
        remainder.to_owned()
    };
    (domain, remainder)
}

/// Whether a first path component is taken for a domain on its shape alone.
fn looks_like_domain(first: &str) -> bool {
    first == "localhost" || first.contains(['.', ':'])
}

/// `[a-f0-9]{64}`: an image ID, not a name.
fn is_identifier(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `host[:port]` where host is a domain name, or an IPv6 address in brackets.
fn is_valid_domain(domain: &str) -> bool {
    let after_host = if let Some(rest) = domain.strip_prefix('[') {
        match rest.split_once(']') {
            Some((addr, after))
                if !addr.is_empty() && addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') =>
            {
                after
            }
            _ => return false,
        }
    } else {
        let end = domain.find(':').unwrap_or(domain.len());
        let (host, after) = domain.split_at(end);
        if !host.split('.').all(is_domain_component) {
            return false;
        }
        after
    };
    match after_host.strip_prefix(':') {
        None => after_host.is_empty(),
        Some(port) => !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn is_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        }
        _ => false,
    }
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`.
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let is_alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while b.get(i).is_some_and(|&x| is_alnum(x)) {
            i += 1;
        }
        if i == start {
            // Empty, or a separator at the start, at the end or after another.
            return false;
        }
        match b.get(i) {
            None => return true,
            Some(b'.') => i += 1,
            Some(b'_') => {
                i += 1;
                if b.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            Some(b'-') => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            Some(_) => return false,
        }
    }
}

/// `[\w][\w.-]{0,127}` with ASCII `\w`.
fn is_valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    match tag.as_bytes().first() {
        Some(&first) if word(first) => {
            tag.len() <= MAX_TAG_LEN && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-')
        }
        _ => false,
    }
}

/// `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*`.
fn is_digest_algorithm(algorithm: &str) -> bool {
    algorithm.split(['-', '_', '+', '.']).all(|c| {
        let mut bytes = c.bytes();
        bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
            && bytes.all(|b| b.is_ascii_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA_F: &str = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
    const SHA_BUSYBOX: &str =
        "sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa";
    const SHA_REDIS: &str =
        "sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c";

    fn sha512_f() -> String {
        format!("sha512:{}", "f".repeat(128))
    }

    /// What a case expects.
    enum Want {
        Ok {
            full: String,
            domain: &'static str,
            path: String,
            tag: Option<String>,
            digest: Option<String>,
            familiar: String,
        },
        Err(&'static str),
    }

    struct Case {
        input: String,
        want: Want,
    }

    fn ok(
        input: impl Into<String>,
        domain: &'static str,
        path: impl Into<String>,
        tag: Option<&str>,
        digest: Option<&str>,
        familiar: impl Into<String>,
    ) -> Case {
        let path = path.into();
        let mut full = format!("{domain}/{path}");
        if let Some(t) = tag {
            full.push(':');
            full.push_str(t);
        }
        if let Some(d) = digest {
            full.push('@');
            full.push_str(d);
        }
        Case {
            input: input.into(),
            want: Want::Ok {
                full,
                domain,
                path,
                tag: tag.map(str::to_owned),
                digest: digest.map(str::to_owned),
                familiar: familiar.into(),
            },
        }
    }

    fn err(input: impl Into<String>, variant: &'static str) -> Case {
        Case {
            input: input.into(),
            want: Want::Err(variant),
        }
    }

    fn variant(e: &ReferenceError) -> &'static str {
        match e {
            ReferenceError::Empty => "Empty",
            ReferenceError::InvalidFormat { .. } => "InvalidFormat",
            ReferenceError::HexName { .. } => "HexName",
            ReferenceError::UpperCase { .. } => "UpperCase",
            ReferenceError::NameTooLong { .. } => "NameTooLong",
            ReferenceError::InvalidDomain { .. } => "InvalidDomain",
            ReferenceError::InvalidPathComponent { .. } => "InvalidPathComponent",
            ReferenceError::InvalidTag { .. } => "InvalidTag",
            ReferenceError::InvalidDigest { .. } => "InvalidDigest",
            ReferenceError::DigestInTag { .. } => "DigestInTag",
        }
    }

    const L: Option<&str> = Some("latest");
    const HUB: &str = "docker.io";

    #[rustfmt::skip]
    fn cases() -> Vec<Case> {
        let hex64 = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a";
        let hex63 = "dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9";
        let song = "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev";
        let a127 = format!("{}a", "a/".repeat(127));
        let a128 = format!("{}a", "a/".repeat(128));
        let long_ns =
            ["this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255"; 4].join("_")
                + "/docker";
        let t128 = "t".repeat(128);
        let s512 = sha512_f();
        vec![
            // Docker Hub defaults and familiar names.
            ok("nginx", HUB, "library/nginx", L, None, "nginx:latest"),
            ok("nginx:1.21.1-alpine", HUB, "library/nginx", Some("1.21.1-alpine"), None, "nginx:1.21.1-alpine"),
            ok("docker/docker", HUB, "docker/docker", L, None, "docker/docker:latest"),
            ok("library/debian", HUB, "library/debian", L, None, "debian:latest"),
            ok("debian", HUB, "library/debian", L, None, "debian:latest"),
            ok("docker.io/docker/docker", HUB, "docker/docker", L, None, "docker/docker:latest"),
            ok("docker.io/library/debian", HUB, "library/debian", L, None, "debian:latest"),
            ok("docker.io/debian", HUB, "library/debian", L, None, "debian:latest"),
            ok("index.docker.io/docker/docker", HUB, "docker/docker", L, None, "docker/docker:latest"),
            ok("index.docker.io/library/debian", HUB, "library/debian", L, None, "debian:latest"),
            ok("index.docker.io/debian", HUB, "library/debian", L, None, "debian:latest"),
            ok("fooo/bar", HUB, "fooo/bar", L, None, "fooo/bar:latest"),
            ok("index.docker.io/fooo/bar", HUB, "fooo/bar", L, None, "fooo/bar:latest"),
            ok("nonlibrary/ubuntu", HUB, "nonlibrary/ubuntu", L, None, "nonlibrary/ubuntu:latest"),
            ok("other/library", HUB, "other/library", L, None, "other/library:latest"),
            ok("ubuntu-12.04-base", HUB, "library/ubuntu-12.04-base", L, None, "ubuntu-12.04-base:latest"),
            ok("index.docker.io/library/ubuntu-12.04-base", HUB, "library/ubuntu-12.04-base", L, None, "ubuntu-12.04-base:latest"),
            ok("docker.io/foo", HUB, "library/foo", L, None, "foo:latest"),
            ok("docker.io/library/foo/bar", HUB, "library/foo/bar", L, None, "library/foo/bar:latest"),
            ok("library/foo/bar", HUB, "library/foo/bar", L, None, "library/foo/bar:latest"),
            ok("store/foo/bar", HUB, "store/foo/bar", L, None, "store/foo/bar:latest"),
            ok("test_com/foo", HUB, "test_com/foo", L, None, "test_com/foo:latest"),
            ok("docker/migrator", HUB, "docker/migrator", L, None, "docker/migrator:latest"),
            ok("test_com", HUB, "library/test_com", L, None, "test_com:latest"),
            // A single component is never a domain.
            ok("test.com:tag", HUB, "library/test.com", Some("tag"), None, "test.com:tag"),
            ok("test.com:5000", HUB, "library/test.com", Some("5000"), None, "test.com:5000"),
            ok("foo_bar.com:8080", HUB, "library/foo_bar.com", Some("8080"), None, "foo_bar.com:8080"),
            ok("foo/foo_bar.com:8080", HUB, "foo/foo_bar.com", Some("8080"), None, "foo/foo_bar.com:8080"),
            ok("192.168.0.1", HUB, "library/192.168.0.1", L, None, "192.168.0.1:latest"),
            ok("192.168.0.1:80", HUB, "library/192.168.0.1", Some("80"), None, "192.168.0.1:80"),
            ok("localhost", HUB, "library/localhost", L, None, "localhost:latest"),
            ok("localhost:5000", HUB, "library/localhost", Some("5000"), None, "localhost:5000"),
            // Path component grammar.
            ok(song, HUB, format!("library/{song}"), L, None, format!("{song}:latest")),
            ok("docker-rules/docker", HUB, "docker-rules/docker", L, None, "docker-rules/docker:latest"),
            ok("docker---rules/docker", HUB, "docker---rules/docker", L, None, "docker---rules/docker:latest"),
            ok("doc/docker", HUB, "doc/docker", L, None, "doc/docker:latest"),
            ok("d/docker", HUB, "d/docker", L, None, "d/docker:latest"),
            ok("jess/t", HUB, "jess/t", L, None, "jess/t:latest"),
            ok("dock__er/docker", HUB, "dock__er/docker", L, None, "dock__er/docker:latest"),
            ok("a", HUB, "library/a", L, None, "a:latest"),
            ok("a/b/c/d/e", HUB, "a/b/c/d/e", L, None, "a/b/c/d/e:latest"),
            ok("quay.io/a__b/c.d-e", "quay.io", "a__b/c.d-e", L, None, "quay.io/a__b/c.d-e:latest"),
            ok(a127.clone() + ":tag-puts-this-over-max", HUB, a127.clone(), Some("tag-puts-this-over-max"), None, format!("{a127}:tag-puts-this-over-max")),
            // The 64-hex rule only applies to the whole input.
            ok(format!("docker.io/{hex64}"), HUB, format!("library/{hex64}"), L, None, format!("{hex64}:latest")),
            ok(format!("{hex64}:v1"), HUB, format!("library/{hex64}"), Some("v1"), None, format!("{hex64}:v1")),
            ok(hex63, HUB, format!("library/{hex63}"), L, None, format!("{hex63}:latest")),
            ok("dbcc1", HUB, "library/dbcc1", L, None, "dbcc1:latest"),
            // Domains: dots, ports, localhost, upper case, IP addresses.
            ok("127.0.0.1:5000/docker/docker", "127.0.0.1:5000", "docker/docker", L, None, "127.0.0.1:5000/docker/docker:latest"),
            ok("127.0.0.1:5000/library/debian", "127.0.0.1:5000", "library/debian", L, None, "127.0.0.1:5000/library/debian:latest"),
            ok("127.0.0.1:5000/debian", "127.0.0.1:5000", "debian", L, None, "127.0.0.1:5000/debian:latest"),
            ok("127.0.0.1:8000/private/moonbase", "127.0.0.1:8000", "private/moonbase", L, None, "127.0.0.1:8000/private/moonbase:latest"),
            ok("192.168.0.1:8/debian", "192.168.0.1:8", "debian", L, None, "192.168.0.1:8/debian:latest"),
            ok("192.168.0.2:25000/debian", "192.168.0.2:25000", "debian", L, None, "192.168.0.2:25000/debian:latest"),
            ok("192.168.1.1/repo", "192.168.1.1", "repo", L, None, "192.168.1.1/repo:latest"),
            ok("192.168.1.1:5000/repo:5050", "192.168.1.1:5000", "repo", Some("5050"), None, "192.168.1.1:5000/repo:5050"),
            ok("example.com/private/moonbase", "example.com", "private/moonbase", L, None, "example.com/private/moonbase:latest"),
            ok("example.com:8000/privatebasee", "example.com:8000", "privatebasee", L, None, "example.com:8000/privatebasee:latest"),
            ok("test.com/foo", "test.com", "foo", L, None, "test.com/foo:latest"),
            ok("test.com:8080/foo", "test.com:8080", "foo", L, None, "test.com:8080/foo:latest"),
            ok("test-com:8080/foo", "test-com:8080", "foo", L, None, "test-com:8080/foo:latest"),
            ok("test:5000/repo", "test:5000", "repo", L, None, "test:5000/repo:latest"),
            ok("xn--n3h.com/foo", "xn--n3h.com", "foo", L, None, "xn--n3h.com/foo:latest"),
            ok("xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo", L, None, "xn--n3h.com:18080/foo:latest"),
            ok("xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com", "myimage", Some("xn--n3h.com"), None, "xn--n3h.com/myimage:xn--n3h.com"),
            ok("sub-dom1.foo.com/bar/baz/quux:some-long-tag", "sub-dom1.foo.com", "bar/baz/quux", Some("some-long-tag"), None, "sub-dom1.foo.com/bar/baz/quux:some-long-tag"),
            ok("b.gcr.io/test.example.com/my-app:test.example.com", "b.gcr.io", "test.example.com/my-app", Some("test.example.com"), None, "b.gcr.io/test.example.com/my-app:test.example.com"),
            ok("localhost/foo", "localhost", "foo", L, None, "localhost/foo:latest"),
            ok("localhost:5000/x:y", "localhost:5000", "x", Some("y"), None, "localhost:5000/x:y"),
            ok("Docker/docker", "Docker", "docker", L, None, "Docker/docker:latest"),
            ok("DOCKER/docker", "DOCKER", "docker", L, None, "DOCKER/docker:latest"),
            ok("Foo/bar", "Foo", "bar", L, None, "Foo/bar:latest"),
            ok("Example.COM:443/team/app:v1.2.3", "Example.COM:443", "team/app", Some("v1.2.3"), None, "Example.COM:443/team/app:v1.2.3"),
            ok("[fc00::1]:5000/docker", "[fc00::1]:5000", "docker", L, None, "[fc00::1]:5000/docker:latest"),
            ok("[fc00::1]:5000/docker/docker", "[fc00::1]:5000", "docker/docker", L, None, "[fc00::1]:5000/docker/docker:latest"),
            ok("[fc00:1:2:3:4:5:6:7]:5000/library/debian", "[fc00:1:2:3:4:5:6:7]:5000", "library/debian", L, None, "[fc00:1:2:3:4:5:6:7]:5000/library/debian:latest"),
            ok("[2001:db8::1]/repo", "[2001:db8::1]", "repo", L, None, "[2001:db8::1]/repo:latest"),
            ok("[2001:db8:1:2:3:4:5:6]/repo:tag", "[2001:db8:1:2:3:4:5:6]", "repo", Some("tag"), None, "[2001:db8:1:2:3:4:5:6]/repo:tag"),
            ok("[2001:db8::]:5000/repo", "[2001:db8::]:5000", "repo", L, None, "[2001:db8::]:5000/repo:latest"),
            ok("[::1]:5000/repo", "[::1]:5000", "repo", L, None, "[::1]:5000/repo:latest"),
            ok("[::1]:5000/foo", "[::1]:5000", "foo", L, None, "[::1]:5000/foo:latest"),
            // Familiar form keeps docker.io when the path would read as a domain.
            ok("docker.io/localhost/foo", HUB, "localhost/foo", L, None, "docker.io/localhost/foo:latest"),
            ok("docker.io/foo.bar/baz", HUB, "foo.bar/baz", L, None, "docker.io/foo.bar/baz:latest"),
            ok("foo.bar/baz", "foo.bar", "baz", L, None, "foo.bar/baz:latest"),
            // Tags.
            ok("lowercase:Uppercase", HUB, "library/lowercase", Some("Uppercase"), None, "lowercase:Uppercase"),
            ok("foo:_tag", HUB, "library/foo", Some("_tag"), None, "foo:_tag"),
            ok(format!("foo:{}", "t".repeat(128)), HUB, "library/foo", Some(t128.as_str()), None, format!("foo:{}", "t".repeat(128))),
            // Digests, with and without tag.
            ok(format!("busybox:latest@{SHA_BUSYBOX}"), HUB, "library/busybox", L, Some(SHA_BUSYBOX), format!("busybox:latest@{SHA_BUSYBOX}")),
            ok(format!("redis@{SHA_REDIS}"), HUB, "library/redis", None, Some(SHA_REDIS), format!("redis@{SHA_REDIS}")),
            ok(format!("docker.io/library/redis@{SHA_REDIS}"), HUB, "library/redis", None, Some(SHA_REDIS), format!("redis@{SHA_REDIS}")),
            ok(format!("dmcgowan/myapp@{SHA_REDIS}"), HUB, "dmcgowan/myapp", None, Some(SHA_REDIS), format!("dmcgowan/myapp@{SHA_REDIS}")),
            ok(format!("test:5000/repo@{SHA_F}"), "test:5000", "repo", None, Some(SHA_F), format!("test:5000/repo@{SHA_F}")),
            ok(format!("test:5000/repo:tag@{SHA_F}"), "test:5000", "repo", Some("tag"), Some(SHA_F), format!("test:5000/repo:tag@{SHA_F}")),
            ok(format!("[2001:db8::1]:5000/repo:tag@{SHA_F}"), "[2001:db8::1]:5000", "repo", Some("tag"), Some(SHA_F), format!("[2001:db8::1]:5000/repo:tag@{SHA_F}")),
            ok(format!("xn--7o8h.com/myimage:xn--7o8h.com@{s512}"), "xn--7o8h.com", "myimage", Some("xn--7o8h.com"), Some(s512.as_str()), format!("xn--7o8h.com/myimage:xn--7o8h.com@{s512}")),
            // Length: the path counts, the domain does not.
            ok(format!("example.com/{}:tag", "a".repeat(255)), "example.com", "a".repeat(255), Some("tag"), None, format!("example.com/{}:tag", "a".repeat(255))),
            // Invalid.
            err("", "Empty"),
            err(":justtag", "InvalidFormat"),
            err(format!("@{SHA_F}"), "InvalidFormat"),
            err(format!("foo@bad]alg:{}", "f".repeat(64)), "InvalidFormat"),
            err(hex64, "HexName"),
            err(&SHA_REDIS[7..], "HexName"),
            err(hex64.to_uppercase(), "UpperCase"),
            err("Uppercase:tag", "UpperCase"),
            err("docker/Docker", "UpperCase"),
            err("docker.io/docker/Docker", "UpperCase"),
            err("test:5000/Uppercase/lowercase:tag", "UpperCase"),
            err("Foo/Bar", "UpperCase"),
            err(a128 + ":tag", "NameTooLong"),
            err(long_ns, "NameTooLong"),
            err(format!("example.com/{}", "a".repeat(256)), "NameTooLong"),
            err("https://github.com/docker/docker", "InvalidDomain"),
            err("-docker.io/docker/docker", "InvalidDomain"),
            err("fc00::1:5000/debian", "InvalidDomain"),
            err("[fe80::1%eth0]:5000/debian", "InvalidDomain"),
            err("[2001:db8:3:4::192.0.2.33]:5000/debian", "InvalidDomain"),
            err("[]:5000/foo", "InvalidDomain"),
            err("example.com:port/foo", "InvalidDomain"),
            err("example.com:/foo", "InvalidDomain"),
            err("foo_bar.com/x", "InvalidDomain"),
            err("foo:ta/g", "InvalidDomain"),
            err("-docker", "InvalidPathComponent"),
            err("-docker/docker", "InvalidPathComponent"),
            err("docker-/docker", "InvalidPathComponent"),
            err("-docker-/docker", "InvalidPathComponent"),
            err("docker///docker", "InvalidPathComponent"),
            err("docker.io/docker///docker", "InvalidPathComponent"),
            err("____/____", "InvalidPathComponent"),
            err("_docker/_docker", "InvalidPathComponent"),
            err("dock..er/docker", "InvalidDomain"),
            err("dock_.er/docker", "InvalidDomain"),
            err("dock-.er/docker", "InvalidDomain"),
            err("dock___er/docker", "InvalidPathComponent"),
            err("docker/", "InvalidPathComponent"),
            err("/docker", "InvalidPathComponent"),
            err("aa/asdf$$^/aa", "InvalidPathComponent"),
            err("foo bar", "InvalidPathComponent"),
            err("[fc00::1]", "InvalidPathComponent"),
            err("[fc00::1]:5000", "InvalidPathComponent"),
            err("[2001:db8::1]:tag", "InvalidPathComponent"),
            err("[fe80::1%@invalidzone]:5000/repo", "InvalidPathComponent"),
            err("foo:", "InvalidTag"),
            err("foo:-tag", "InvalidTag"),
            err("foo:.tag", "InvalidTag"),
            err("foo:t+g", "InvalidTag"),
            err(format!("foo:{}", "t".repeat(129)), "InvalidTag"),
            err("repo@sha256:ffffffffffffffffffffffffffffffffff", "InvalidDigest"),
            err(format!("validname@invaliddigest:{}", "f".repeat(64)), "InvalidDigest"),
            err(format!("foo@sha256:{}", "F".repeat(64)), "InvalidDigest"),
            err("foo@sha256", "InvalidDigest"),
        ]
    }

    #[test]
    fn table() {
        let cases = cases();
        assert!(cases.len() >= 70, "only {} cases", cases.len());
        for Case { input, want } in cases {
            let got = input.parse::<Reference>();
            match (want, got) {
                (
                    Want::Ok {
                        full,
                        domain,
                        path,
                        tag,
                        digest,
                        familiar,
                    },
                    Ok(r),
                ) => {
                    assert_eq!(r.to_string(), full, "full form of {input:?}");
                    assert_eq!(r.domain(), domain, "domain of {input:?}");
                    assert_eq!(r.repository(), path, "path of {input:?}");
                    assert_eq!(r.name(), format!("{domain}/{path}"), "name of {input:?}");
                    assert_eq!(r.tag(), tag.as_deref(), "tag of {input:?}");
                    assert_eq!(
                        r.digest().map(ToString::to_string),
                        digest,
                        "digest of {input:?}"
                    );
                    assert_eq!(r.familiar(), familiar, "familiar form of {input:?}");
                    assert_eq!(
                        r.familiar().parse::<Reference>().as_ref(),
                        Ok(&r),
                        "familiar form of {input:?} parses back"
                    );
                }
                (Want::Err(variant_name), Err(e)) => {
                    assert_eq!(variant(&e), variant_name, "error for {input:?}: {e}");
                }
                (Want::Ok { full, .. }, Err(e)) => {
                    panic!("{input:?} should parse to {full}, got error {e}")
                }
                (Want::Err(v), Ok(r)) => panic!("{input:?} should fail with {v}, parsed to {r}"),
            }
        }
    }

    #[test]
    fn error_messages_name_the_offending_part() {
        let msg = |s: &str| {
            let e = s.parse::<Reference>().map(|_| ()).unwrap_err();
            crate::error::Chain(&e).to_string()
        };
        assert!(msg("docker/Docker").contains("\"docker/Docker\""));
        assert!(msg("foo:-x").contains("\"-x\""));
        assert!(msg("example.com:port/foo").contains("\"example.com:port\""));
        assert!(msg("dock..er/x").contains("\"dock..er\""));
        let hex = "a".repeat(64);
        assert!(msg(&hex).contains("cannot specify 64-byte hexadecimal strings"));
        let long = msg(&format!("example.com/{}", "a".repeat(300)));
        assert!(
            long.contains("300 characters") && long.contains("255"),
            "{long}"
        );
        let digest = msg("foo@sha256:abc");
        assert!(
            digest.contains("\"sha256:abc\"") && digest.contains("64"),
            "{digest}"
        );
    }

    #[test]
    fn classification() {
        let kind = |s: &str| s.parse::<Reference>().map_err(|e| e.kind());
        assert_eq!(kind("docker/Docker"), Err(ErrorKind::InvalidInput));
        assert_eq!(kind(""), Err(ErrorKind::InvalidInput));
        assert_eq!(kind("foo@sha256:abc"), Err(ErrorKind::InvalidInput));
        assert_eq!(
            kind(&format!("foo@md5:{}", "f".repeat(32))),
            Err(ErrorKind::Unsupported)
        );
        // A malformed algorithm is bad input, not an unsupported algorithm.
        assert_eq!(
            kind(&format!("foo@sha]256:{}", "f".repeat(64))),
            Err(ErrorKind::InvalidInput)
        );
    }

    #[test]
    fn parse_name_adds_no_tag() {
        let r = Reference::parse_name("nginx").expect("valid");
        assert_eq!(r.to_string(), "docker.io/library/nginx");
        assert_eq!(r.tag(), None);
        assert_eq!(r.familiar(), "nginx");
        let r = Reference::parse_name("nginx:1.25").expect("valid");
        assert_eq!(r.tag(), Some("1.25"));
        assert!(Reference::parse_name("Nginx").is_err());
    }

    #[test]
    fn parse_tag_refuses_a_digest() {
        let r = Reference::parse_tag("nginx").expect("valid");
        assert_eq!(r.to_string(), "docker.io/library/nginx:latest");
        for s in [
            format!("busybox@{SHA_BUSYBOX}"),
            format!("busybox:latest@{SHA_BUSYBOX}"),
            format!("test:5000/repo@{SHA_F}"),
        ] {
            let e = Reference::parse_tag(&s).expect_err("a digest is no tag");
            assert!(matches!(e, ReferenceError::DigestInTag { .. }), "{e:?}");
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            assert!(e.to_string().contains("cannot hold a digest"), "{e}");
        }
        // Other errors are the parser's.
        assert!(matches!(
            Reference::parse_tag("Nginx"),
            Err(ReferenceError::UpperCase { .. })
        ));
    }

    #[test]
    fn with_and_without() {
        let r: Reference = "nginx".parse().expect("valid");
        let d: Digest = SHA_REDIS.parse().expect("digest");
        let tagged = r.with_tag("1.25").expect("tag");
        assert_eq!(tagged.to_string(), "docker.io/library/nginx:1.25");
        let both = tagged.with_digest(d.clone());
        assert_eq!(
            both.to_string(),
            format!("docker.io/library/nginx:1.25@{SHA_REDIS}")
        );
        assert_eq!(both.familiar(), format!("nginx:1.25@{SHA_REDIS}"));
        let pinned = both.without_tag();
        assert_eq!(
            pinned.to_string(),
            format!("docker.io/library/nginx@{SHA_REDIS}")
        );
        assert_eq!(pinned.with_tag("v2").expect("tag").digest(), Some(&d));
        assert_eq!(both.without_digest(), tagged);
        assert!(matches!(
            r.with_tag("no/slash"),
            Err(ReferenceError::InvalidTag { tag }) if tag == "no/slash"
        ));
        assert_eq!(r.familiar_name(), "nginx");
        assert_eq!(
            format!("{r:?}"),
            "Reference(docker.io/library/nginx:latest)"
        );
    }

    #[test]
    fn equal_after_normalisation() {
        let a: Reference = "nginx".parse().expect("valid");
        for s in [
            "docker.io/nginx",
            "index.docker.io/library/nginx:latest",
            "library/nginx",
        ] {
            assert_eq!(s.parse::<Reference>().as_ref(), Ok(&a), "{s}");
        }
    }

    #[test]
    fn serde_as_string() {
        let r: Reference = "nginx:1.21.1-alpine".parse().expect("valid");
        let json = serde_json::to_string(&r).expect("serialize");
        assert_eq!(json, "\"docker.io/library/nginx:1.21.1-alpine\"");
        let back: Reference = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, r);
        let short: Reference = serde_json::from_str("\"nginx\"").expect("deserialize");
        assert_eq!(short.to_string(), "docker.io/library/nginx:latest");
        let bad = serde_json::from_str::<Reference>("\"Nginx\"").expect_err("upper case");
        assert!(bad.to_string().contains("must be lowercase"), "{bad}");
    }

    /// A small deterministic generator (xorshift64*) of reference-like strings.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn reference(&mut self) -> String {
            const PIECES: &[&str] = &[
                "docker.io",
                "index.docker.io",
                "localhost",
                "example.com",
                "Foo",
                "a",
                "b-c",
                "x_y",
                "x__y",
                "n.e",
                "library",
                "1",
                "/",
                "/",
                "/",
                "/",
                ":",
                ":",
                ":5000",
                "@",
                "latest",
                "V1.0",
                "-",
                "_",
                ".",
                "..",
                "[::1]",
                "[fe80::1]:443",
                "A",
                " ",
                "%",
                "sha256:",
                "192.168.0.1",
                "127.0.0.1:5000",
                "registry-1.docker.io",
            ];
            let mut s = String::new();
            for _ in 0..1 + self.below(8) {
                match self.below(20) {
                    0 => s.push_str(SHA_REDIS),
                    1 => s.push_str(&SHA_REDIS[7..]),
                    2 => s.push_str(&"ab".repeat(self.below(140))),
                    _ => s.push_str(PIECES[self.below(PIECES.len())]),
                }
            }
            s
        }
    }

    /// For every `s` that parses, `parse(display(parse(s))) == parse(s)`, the
    /// display form is a fixed point, and the familiar form parses back to
    /// the same reference.
    #[test]
    fn round_trip_on_generated_inputs() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let mut parsed = 0;
        for _ in 0..3000 {
            let s = g.reference();
            let Ok(r) = s.parse::<Reference>() else {
                continue;
            };
            parsed += 1;
            let full = r.to_string();
            assert_eq!(
                full.parse::<Reference>().as_ref(),
                Ok(&r),
                "display of {s:?}"
            );
            assert_eq!(Reference::parse_name(&full).as_ref(), Ok(&r), "{s:?}");
            // A tag name is exactly a reference without a digest.
            match Reference::parse_tag(&s) {
                Ok(t) => assert!(t == r && r.digest().is_none(), "{s:?}"),
                Err(e) => assert!(
                    matches!(e, ReferenceError::DigestInTag { .. }) && r.digest().is_some(),
                    "{s:?}: {e:?}"
                ),
            }
            assert_eq!(
                full.parse::<Reference>().map(|x| x.to_string()),
                Ok(full.clone())
            );
            assert_eq!(
                r.familiar().parse::<Reference>().as_ref(),
                Ok(&r),
                "familiar of {s:?}"
            );
        }
        assert!(parsed >= 300, "only {parsed} generated inputs parsed");
    }
}
