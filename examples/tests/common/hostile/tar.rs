//! The tar writer that writes whatever it is told (names with `..`,
//! absolute names, links anywhere, device nodes, sizes that lie): the
//! family's shared one, `image_testsupport::tar`.

pub use image_testsupport::tar::{append, archive, Entry, Kind};
