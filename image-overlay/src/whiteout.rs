//! OCI whiteouts and their overlayfs form.
//!
//! In a layer tar, `.wh.NAME` deletes `NAME` of the lower layers and
//! `.wh..wh..opq` hides everything the lower layers had in its directory.
//! Flattening applies them (see [`WhiteoutMode::Apply`]); unpacking a layer
//! into a directory of its own for overlayfs converts them to a 0/0
//! character device and an `overlay.opaque` xattr ([`WhiteoutMode::Overlay`]).

use image_core::{Classify, ErrorKind};

/// The prefix of a whiteout file name.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The prefix reserved for whiteout metadata (`.wh..wh.`).
pub const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
/// The opaque-directory marker.
pub const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";

/// Which xattr namespace overlayfs reads its markers from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverlayXattrs {
    /// `trusted.overlay.*`, for a mount by a privileged user.
    #[default]
    Trusted,
    /// `user.overlay.*`, for a rootless mount with `-o userxattr`.
    User,
}

impl OverlayXattrs {
    /// The name of the opaque-directory xattr.
    pub fn opaque(self) -> &'static str {
        match self {
            OverlayXattrs::Trusted => "trusted.overlay.opaque",
            OverlayXattrs::User => "user.overlay.opaque",
        }
    }

    /// The prefix of every overlayfs xattr in this namespace.
    pub fn prefix(self) -> &'static str {
        match self {
            OverlayXattrs::Trusted => "trusted.overlay.",
            OverlayXattrs::User => "user.overlay.",
        }
    }
}

/// What unpack does with whiteout entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutMode {
    /// Apply them to the directory, which holds the lower layers already
    /// (flattening): `.wh.NAME` removes `NAME`, the opaque marker empties its
    /// directory of what this layer did not create.
    #[default]
    Apply,
    /// Convert them to overlayfs form, for a layer unpacked into a
    /// directory of its own: `.wh.NAME` becomes a 0/0 character device
    /// `NAME`, the opaque marker an `overlay.opaque=y` xattr on its directory.
    Overlay(OverlayXattrs),
    /// Neither: a `.wh.` name is an ordinary file name, created as the tar
    /// says (what Docker's `ADD` does with a local archive, which it
    /// extracts with a plain untar rather than as a layer).
    Keep,
}

/// What a file name means to whiteout processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutName<'a> {
    /// An ordinary name.
    Plain,
    /// `.wh.NAME`: delete `NAME` (the slice).
    Remove(&'a [u8]),
    /// `.wh..wh..opq`: the directory is opaque.
    Opaque,
    /// Another `.wh..wh.` name: reserved metadata (such as aufs' `.wh..wh.plnk`), ignored.
    Meta,
}

/// A whiteout name that cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WhiteoutError {
    /// `.wh.`, `.wh..` or `.wh...`: a whiteout of nothing, of its own
    /// directory or of its parent.
    #[error("whiteout {name:?} names no deletable entry")]
    InvalidName {
        /// The name, lossily decoded.
        name: String,
    },
}

impl Classify for WhiteoutError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Unsafe
    }
}

/// Classifies the last component of an entry path.
///
/// # Errors
/// [`WhiteoutError::InvalidName`] for `.wh.`, `.wh..` and `.wh...`.
pub fn classify(name: &[u8]) -> Result<WhiteoutName<'_>, WhiteoutError> {
    let Some(rest) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) else {
        return Ok(WhiteoutName::Plain);
    };
    if name == WHITEOUT_OPAQUE.as_bytes() {
        return Ok(WhiteoutName::Opaque);
    }
    if name.starts_with(WHITEOUT_META_PREFIX.as_bytes()) {
        return Ok(WhiteoutName::Meta);
    }
    if rest.is_empty() || rest == b"." || rest == b".." {
        return Err(WhiteoutError::InvalidName {
            name: String::from_utf8_lossy(name).into_owned(),
        });
    }
    Ok(WhiteoutName::Remove(rest))
}

/// Whether an xattr name is one overlayfs interprets (in either namespace),
/// which must never be taken from an image as-is.
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(classify(b"etc"), Ok(WhiteoutName::Plain));
        assert_eq!(classify(b".wh.etc"), Ok(WhiteoutName::Remove(b"etc")));
        assert_eq!(classify(b".wh..wh..opq"), Ok(WhiteoutName::Opaque));
        assert_eq!(classify(b".wh..wh.plnk"), Ok(WhiteoutName::Meta));
        for bad in [&b".wh."[..], b".wh..", b".wh..."] {
            assert!(classify(bad).is_err(), "{bad:?}");
        }
        assert!(is_overlay_xattr(b"trusted.overlay.opaque"));
        assert!(is_overlay_xattr(b"user.overlay.whiteout"));
        assert!(!is_overlay_xattr(b"user.mime"));
    }
}
