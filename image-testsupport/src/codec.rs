//! Compression of test inputs (fast levels: these are fixtures, not the
//! family's codec under test).

use std::io::Write;

use image_core::Compression;

/// gzip of `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// `data` compressed as `c` says (zstd at level 3).
pub fn compress(data: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => data.to_vec(),
        Compression::Gzip => gzip(data),
        _ => zstd::encode_all(data, 3).expect("zstd"),
    }
}
