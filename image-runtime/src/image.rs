//! The images containers are made from: what a store of them must do
//! ([`ImageStore`]) and finding one by name ([`find_image`]).

use image_core::{Classify, ErrorKind, Platform};
use image_store::image::{resolve_image, ImageError};
use image_store::{Image, Ingester, Provider, TagError, TagStore};

use crate::error::ContainerError;

/// What a store of images must do for containers: read blobs and tags
/// (resolve, unpack) and write blobs and tags (commit). Every
/// [`image_store::OciDir`] and [`image_store::MemoryStore`] is one.
pub trait ImageStore: Provider + Ingester + TagStore + Sync {}

impl<T: Provider + Ingester + TagStore + Sync + ?Sized> ImageStore for T {}

/// Resolves `name` in `store` for `platform` (the host's when `None`).
///
/// # Errors
/// [`ContainerError::NoSuchImage`] when no tag has this name,
/// [`ContainerError::Image`] otherwise.
pub fn find_image<S: Provider + TagStore + ?Sized>(
    store: &S,
    name: &str,
    platform: Option<&Platform>,
) -> Result<Image, ContainerError> {
    resolve_image(store, name, platform).map_err(|source| match source {
        ImageError::Tag(TagError::NotFound { .. }) => ContainerError::NoSuchImage {
            name: name.to_owned(),
        },
        ImageError::Tag(ref e) if e.kind() == ErrorKind::NotFound => ContainerError::NoSuchImage {
            name: name.to_owned(),
        },
        source => ContainerError::Image {
            name: name.to_owned(),
            source: Box::new(source),
        },
    })
}
