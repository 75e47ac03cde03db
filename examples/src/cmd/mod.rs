//! One module per subcommand.

pub mod analyze;
pub mod archive;
pub mod build;
pub mod builder;
pub mod cache;
pub mod detach;
pub mod digest;
pub mod dockerfile;
pub mod layer;
pub mod platform;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod run;
pub mod snapshot;
pub mod store;
pub mod surgery;
pub mod unpack_sink;
pub mod unshare;
pub mod volume;

use image_core::ErrorKind;

/// The class of a failure: the kind of the outermost error of the family in
/// its chain, found through image-build's registry (which holds every
/// crate's below it) and image-registry's (beside it), or `None` for an
/// error of imagectl's own.
pub fn classify(e: &anyhow::Error) -> Option<ErrorKind> {
    image_core::error::classify(e.as_ref(), kind_of)
}

/// The class of one error of the family (not of its sources).
fn kind_of(e: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    image_build::kind_of(e).or_else(|| image_registry::kind_of(e))
}

/// The error chain of a failure, prefixed by its class when a library error reports one.
pub fn describe(e: &anyhow::Error) -> String {
    let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
    match classify(e) {
        Some(k) => format!("{k}: {}", chain.join(": ")),
        None => chain.join(": "),
    }
}

/// imagectl's exit status for a failure of class `kind`: 1 for every class
/// it has always reported, and a status of its own for the classes a caller
/// branches on without reading the message (see `imagectl --help`).
pub fn exit_code(kind: Option<ErrorKind>) -> u8 {
    match kind {
        // sysexits.h: EX_NOPERM, EX_TEMPFAIL ("try again later").
        Some(ErrorKind::Unauthenticated) => 77,
        Some(ErrorKind::Unavailable) => 75,
        // As a shell reports a command ended by SIGINT.
        Some(ErrorKind::Cancelled) => 130,
        _ => 1,
    }
}
