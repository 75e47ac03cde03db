//! Integration tests of image-overlay; the module tree mirrors `src/`.

mod append;
mod common;
mod diff;
mod ending;
mod flatten;
mod hostile;
mod interop;
mod list;
mod modes;
mod pack;
mod producers;
mod surgery;
mod umoci;
mod unpack;
mod zstd_interop;
