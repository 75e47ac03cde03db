//! Media types of OCI and Docker v2 schema 2 images, and conversion between them.

use std::fmt;
use std::str::FromStr;

use crate::error::{Classify, ErrorKind};

/// The compression of a layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// A plain tar.
    #[default]
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// Recognises the compression from the first bytes of a blob (at least 4).
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The name used on the command line and in media types.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

impl FromStr for Compression {
    type Err = MediaTypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" | "tar" | "" => Ok(Compression::None),
            "gzip" | "gz" => Ok(Compression::Gzip),
            "zstd" | "zst" => Ok(Compression::Zstd),
            other => Err(MediaTypeError::Unknown(other.to_owned())),
        }
    }
}

/// A media type this library knows, or another one kept as its string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MediaType {
    /// `application/vnd.oci.image.manifest.v1+json`
    OciManifest,
    /// `application/vnd.oci.image.index.v1+json`
    OciIndex,
    /// `application/vnd.oci.image.config.v1+json`
    OciConfig,
    /// `application/vnd.oci.image.layer.v1.tar`
    OciLayer,
    /// `application/vnd.oci.image.layer.v1.tar+gzip`
    OciLayerGzip,
    /// `application/vnd.oci.image.layer.v1.tar+zstd`
    OciLayerZstd,
    /// `application/vnd.oci.image.layer.nondistributable.v1.tar`
    OciLayerNonDistributable,
    /// `application/vnd.oci.image.layer.nondistributable.v1.tar+gzip`
    OciLayerNonDistributableGzip,
    /// `application/vnd.oci.image.layer.nondistributable.v1.tar+zstd`
    OciLayerNonDistributableZstd,
    /// `application/vnd.oci.empty.v1+json` (OCI 1.1 artifacts)
    OciEmpty,
    /// `application/vnd.docker.distribution.manifest.v2+json`
    DockerManifest,
    /// `application/vnd.docker.distribution.manifest.list.v2+json`
    DockerManifestList,
    /// `application/vnd.docker.container.image.v1+json`
    DockerConfig,
    /// `application/vnd.docker.image.rootfs.diff.tar.gzip`
    DockerLayerGzip,
    /// `application/vnd.docker.image.rootfs.foreign.diff.tar.gzip`
    DockerForeignLayerGzip,
    /// `application/vnd.docker.distribution.manifest.v1+json` (schema 1, recognised to be rejected)
    DockerSchema1Manifest,
    /// `application/vnd.docker.distribution.manifest.v1+prettyjws` (schema 1, recognised to be rejected)
    DockerSchema1SignedManifest,
    /// Any other media type, as given.
    Other(String),
}

const TABLE: &[(&str, MediaType)] = &[
    (
        "application/vnd.oci.image.manifest.v1+json",
        MediaType::OciManifest,
    ),
    (
        "application/vnd.oci.image.index.v1+json",
        MediaType::OciIndex,
    ),
    (
        "application/vnd.oci.image.config.v1+json",
        MediaType::OciConfig,
    ),
    (
        "application/vnd.oci.image.layer.v1.tar",
        MediaType::OciLayer,
    ),
    (
        "application/vnd.oci.image.layer.v1.tar+gzip",
        MediaType::OciLayerGzip,
    ),
    (
        "application/vnd.oci.image.layer.v1.tar+zstd",
        MediaType::OciLayerZstd,
    ),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        MediaType::OciLayerNonDistributable,
    ),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        MediaType::OciLayerNonDistributableGzip,
    ),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        MediaType::OciLayerNonDistributableZstd,
    ),
    ("application/vnd.oci.empty.v1+json", MediaType::OciEmpty),
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        MediaType::DockerManifest,
    ),
    (
        "application/vnd.docker.distribution.manifest.list.v2+json",
        MediaType::DockerManifestList,
    ),
    (
        "application/vnd.docker.container.image.v1+json",
        MediaType::DockerConfig,
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        MediaType::DockerLayerGzip,
    ),
    (
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        MediaType::DockerForeignLayerGzip,
    ),
    (
        "application/vnd.docker.distribution.manifest.v1+json",
        MediaType::DockerSchema1Manifest,
    ),
    (
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        MediaType::DockerSchema1SignedManifest,
    ),
];

/// A media type that cannot be used where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MediaTypeError {
    /// A Docker schema 1 manifest: deprecated, unsigned content, not supported.
    #[error(
        "Docker schema 1 manifests ({0}) are not supported; convert the image to schema 2 or OCI"
    )]
    Schema1(String),
    /// A media type this operation does not know.
    #[error("unknown media type {0:?}")]
    Unknown(String),
    /// A known media type where another kind was expected.
    #[error("media type {found} is not {expected}")]
    WrongKind {
        /// What kind of document was expected ("a manifest", "a layer").
        expected: &'static str,
        /// The media type found.
        found: String,
    },
}

impl Classify for MediaTypeError {
    fn kind(&self) -> ErrorKind {
        match self {
            MediaTypeError::Schema1(_) | MediaTypeError::Unknown(_) => ErrorKind::Unsupported,
            MediaTypeError::WrongKind { .. } => ErrorKind::InvalidInput,
        }
    }
}

impl MediaType {
    /// The media type string.
    pub fn as_str(&self) -> &str {
        if let MediaType::Other(s) = self {
            return s;
        }
        TABLE
            .iter()
            .find(|(_, m)| m == self)
            .map(|(s, _)| *s)
            .unwrap_or("")
    }

    /// Whether this is an image manifest (OCI or Docker schema 2).
    pub fn is_manifest(&self) -> bool {
        matches!(self, MediaType::OciManifest | MediaType::DockerManifest)
    }

    /// Whether this is an index or a Docker manifest list.
    pub fn is_index(&self) -> bool {
        matches!(self, MediaType::OciIndex | MediaType::DockerManifestList)
    }

    /// Whether this is an image config (OCI or Docker).
    pub fn is_config(&self) -> bool {
        matches!(self, MediaType::OciConfig | MediaType::DockerConfig)
    }

    /// Whether this is a Docker schema 1 manifest.
    pub fn is_schema1(&self) -> bool {
        matches!(
            self,
            MediaType::DockerSchema1Manifest | MediaType::DockerSchema1SignedManifest
        )
    }

    /// Whether this is a filesystem layer of any kind.
    pub fn is_layer(&self) -> bool {
        self.layer_compression().is_some()
    }

    /// Whether this is a non-distributable (foreign) layer.
    pub fn is_non_distributable(&self) -> bool {
        matches!(
            self,
            MediaType::OciLayerNonDistributable
                | MediaType::OciLayerNonDistributableGzip
                | MediaType::OciLayerNonDistributableZstd
                | MediaType::DockerForeignLayerGzip
        )
    }

    /// The compression of a layer media type, `None` for anything that is not a layer.
    pub fn layer_compression(&self) -> Option<Compression> {
        Some(match self {
            MediaType::OciLayer | MediaType::OciLayerNonDistributable => Compression::None,
            MediaType::OciLayerGzip
            | MediaType::OciLayerNonDistributableGzip
            | MediaType::DockerLayerGzip
            | MediaType::DockerForeignLayerGzip => Compression::Gzip,
            MediaType::OciLayerZstd | MediaType::OciLayerNonDistributableZstd => Compression::Zstd,
            _ => return None,
        })
    }

    /// The compression of a layer media type, or the error every reader of
    /// layers gives for anything else (an `+encrypted` layer, a foreign or
    /// non-layer type): [`MediaTypeError::Unknown`], never a guess from the
    /// bytes. Unpack, flatten and save all decide a layer's codec here, so
    /// they refuse the same image with the same error.
    ///
    /// # Errors
    /// [`MediaTypeError::Unknown`] when this is not a layer media type.
    pub fn require_layer_compression(&self) -> Result<Compression, MediaTypeError> {
        self.layer_compression()
            .ok_or_else(|| MediaTypeError::Unknown(self.as_str().to_owned()))
    }

    /// The OCI layer media type for a compression.
    pub fn oci_layer(compression: Compression) -> MediaType {
        match compression {
            Compression::None => MediaType::OciLayer,
            Compression::Gzip => MediaType::OciLayerGzip,
            Compression::Zstd => MediaType::OciLayerZstd,
        }
    }

    /// The OCI equivalent of a Docker media type (OCI ones map to themselves).
    ///
    /// # Errors
    /// [`MediaTypeError::Schema1`] for schema 1, which has no OCI form.
    pub fn to_oci(&self) -> Result<MediaType, MediaTypeError> {
        Ok(match self {
            MediaType::DockerManifest => MediaType::OciManifest,
            MediaType::DockerManifestList => MediaType::OciIndex,
            MediaType::DockerConfig => MediaType::OciConfig,
            MediaType::DockerLayerGzip => MediaType::OciLayerGzip,
            MediaType::DockerForeignLayerGzip => MediaType::OciLayerNonDistributableGzip,
            m if m.is_schema1() => return Err(MediaTypeError::Schema1(m.as_str().to_owned())),
            other => other.clone(),
        })
    }

    /// The Docker schema 2 equivalent of an OCI media type (Docker ones map to themselves).
    ///
    /// # Errors
    /// [`MediaTypeError::Unknown`] where Docker has no such type: uncompressed and zstd
    /// layers, OCI 1.1 empty descriptors; [`MediaTypeError::Schema1`] for schema 1.
    pub fn to_docker(&self) -> Result<MediaType, MediaTypeError> {
        Ok(match self {
            MediaType::OciManifest => MediaType::DockerManifest,
            MediaType::OciIndex => MediaType::DockerManifestList,
            MediaType::OciConfig => MediaType::DockerConfig,
            MediaType::OciLayerGzip => MediaType::DockerLayerGzip,
            MediaType::OciLayerNonDistributableGzip => MediaType::DockerForeignLayerGzip,
            m if m.is_schema1() => return Err(MediaTypeError::Schema1(m.as_str().to_owned())),
            m @ (MediaType::DockerManifest
            | MediaType::DockerManifestList
            | MediaType::DockerConfig
            | MediaType::DockerLayerGzip
            | MediaType::DockerForeignLayerGzip) => m.clone(),
            other => return Err(MediaTypeError::Unknown(other.as_str().to_owned())),
        })
    }
}

impl FromStr for MediaType {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(MediaType::from(s))
    }
}

impl From<&str> for MediaType {
    fn from(s: &str) -> Self {
        TABLE
            .iter()
            .find(|(t, _)| *t == s)
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| MediaType::Other(s.to_owned()))
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for MediaType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for MediaType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(MediaType::from(&*s))
    }
}

impl From<&MediaType> for oci_spec::image::MediaType {
    fn from(m: &MediaType) -> Self {
        oci_spec::image::MediaType::from(m.as_str())
    }
}

impl From<&oci_spec::image::MediaType> for MediaType {
    fn from(m: &oci_spec::image::MediaType) -> Self {
        MediaType::from(m.to_string().as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_type_round_trips() {
        for (s, m) in TABLE {
            assert_eq!(MediaType::from(*s), *m);
            assert_eq!(m.as_str(), *s);
            let o: oci_spec::image::MediaType = m.into();
            assert_eq!(MediaType::from(&o), *m, "through oci-spec: {s}");
        }
        assert_eq!(
            MediaType::from("text/plain"),
            MediaType::Other("text/plain".into())
        );
    }

    #[test]
    fn conversions() {
        assert_eq!(
            MediaType::DockerManifestList.to_oci(),
            Ok(MediaType::OciIndex)
        );
        assert_eq!(
            MediaType::OciLayerGzip.to_docker(),
            Ok(MediaType::DockerLayerGzip)
        );
        assert!(matches!(
            MediaType::OciLayerZstd.to_docker(),
            Err(MediaTypeError::Unknown(_))
        ));
        let e = MediaType::DockerSchema1SignedManifest
            .to_oci()
            .expect_err("schema1");
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("schema 1"));
        assert_eq!(
            MediaType::DockerLayerGzip.layer_compression(),
            Some(Compression::Gzip)
        );
        assert_eq!(MediaType::OciConfig.layer_compression(), None);
    }

    #[test]
    fn sniffing() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"etc/"), Compression::None);
    }
}
