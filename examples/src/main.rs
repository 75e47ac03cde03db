//! `imagectl`: the command line over the image crate family.
fn main() {}
