//! The registry of image-overlay's public errors, for
//! [`image_core::error::classify`]: [`kind_of`] recognises each error type of
//! this crate and, through image-store's registry, of the crates below.

image_core::classify_registry!(
    below: image_store::error::kind_of;
    crate::compress::CompressError,
    crate::diff::DiffError,
    crate::flatten::FlattenError,
    crate::image_unpack::ImageUnpackError,
    crate::mount::MountError,
    crate::pack::PackError,
    crate::snapshot::SnapshotError,
    crate::unpack::UnpackError,
    crate::whiteout::WhiteoutError,
);
