//! Integration tests of image-overlay; the module tree mirrors `src/`.

mod common;
mod diff;
mod hostile;
mod interop;
mod pack;
mod unpack;
mod umoci;
mod zstd_interop;
