//! The registry of image-store's public errors, for
//! [`image_core::error::classify`]: [`kind_of`] recognises each error type of
//! this crate and, through image-core's registry, of the crate below.

image_core::classify_registry!(
    below: image_core::error::kind_of;
    crate::archive::ArchiveError,
    crate::content::ContentError,
    crate::copy::CopyError,
    crate::fs::RefusedFile,
    crate::fsck::FsckError,
    crate::gc::GcError,
    crate::image::ImageError,
    crate::lease::LeaseError,
    crate::mutate::MutateError,
    crate::oci_dir::LayoutError,
    crate::tags::TagError,
);
