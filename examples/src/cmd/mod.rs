//! One module per subcommand.

pub mod archive;
pub mod digest;
pub mod layer;
pub mod platform;
pub mod progress;
pub mod reference;
pub mod run;
pub mod snapshot;
pub mod store;

use image_core::{Classify, ErrorKind};

/// The error chain of a failure, prefixed by its class when a library error reports one.
pub fn describe(e: &anyhow::Error) -> String {
    let kind = e.chain().find_map(classify);
    let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
    match kind {
        Some(k) => format!("{k}: {}", chain.join(": ")),
        None => chain.join(": "),
    }
}

fn classify(e: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    macro_rules! try_kinds {
        ($($t:ty),* $(,)?) => {$(
            if let Some(e) = e.downcast_ref::<$t>() {
                return Some(Classify::kind(e));
            }
        )*};
    }
    try_kinds!(
        image_core::DigestError,
        image_core::VerifyError,
        image_core::ParseError,
        image_core::reference::ReferenceError,
        image_core::platform::PlatformError,
        image_store::ContentError,
        image_store::TagError,
        image_store::image::ImageError,
        image_store::gc::GcError,
        image_store::fsck::FsckError,
        image_store::oci_dir::LayoutError,
        image_store::mutate::MutateError,
        image_store::ArchiveError,
        image_store::CopyError,
        image_overlay::UnpackError,
        image_overlay::PackError,
        image_overlay::DiffError,
        image_overlay::FlattenError,
        image_overlay::ImageUnpackError,
        image_overlay::SnapshotError,
        image_overlay::MountError,
        image_runtime::ContainerError,
        image_runtime::CommitError,
        image_runtime::spec::SpecError,
        std::io::Error,
    );
    None
}
