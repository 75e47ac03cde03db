//! Stores and data for tests of the store and what builds on it.

use std::io::Read;

use image_store::OciDir;

pub use image_store::testsuite::{bytes, content_store};

/// A fresh on-disk store (`<tmp>/layout`) in a temporary directory, kept
/// alive by the returned guard.
pub fn oci_dir() -> (tempfile::TempDir, OciDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = OciDir::open_or_create(dir.path().join("layout")).expect("create layout");
    (dir, store)
}

/// A reader that returns short, irregular reads of `data` (as a pipe or a
/// network stream may), to test that readers do not assume full reads.
pub struct ShortReads<'a> {
    /// What is left to read.
    pub data: &'a [u8],
    /// The state of the read-size sequence.
    pub n: usize,
}

impl Read for ShortReads<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.n = self.n.wrapping_mul(31).wrapping_add(7);
        let k = (self.n % 1000 + 1).min(buf.len()).min(self.data.len());
        buf[..k].copy_from_slice(&self.data[..k]);
        self.data = &self.data[k..];
        Ok(k)
    }
}

/// An OCI index of `entries` (each manifest with its platform in its
/// descriptor), written into `store`.
pub fn write_index(
    store: &OciDir,
    entries: &[(&image_core::Manifest, &image_core::Platform)],
) -> image_core::Index {
    use image_store::Ingester;
    let manifests: Vec<image_core::Descriptor> = entries
        .iter()
        .map(|(m, p)| {
            let mut d = m.descriptor();
            d.set_platform(Some((*p).into()));
            d
        })
        .collect();
    let index = image_core::oci_spec::image::ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(image_core::oci_spec::image::MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .expect("an index");
    let index = image_core::Index::new(index).expect("an index");
    store.write_blob(index.raw()).expect("write the index");
    index
}
