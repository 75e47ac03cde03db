//! Makes a busybox image from the host's busybox-static with the builder
//! API (no Dockerfile, nothing run) and tags it in an OCI store:
//!
//! ```text
//! cargo run -p image-build --example busybox_image -- STORE TAG [BUSYBOX]
//! ```
//!
//! `STORE` is an OCI image layout (created when missing), `BUSYBOX` the
//! static binary (`/bin/busybox` by default). The image is one layer:
//! `/bin/busybox`, `/bin/sh` and a few applets as links to it, `/etc/passwd`
//! and `/etc/group` with root, and a sticky `/tmp`; its command is
//! `/bin/sh`. With `SOURCE_DATE_EPOCH` set, the same binary gives the same
//! image ID.

use std::path::Path;

use image_build::builder::{File, ImageBuilder};
use image_core::config::History;
use image_core::Platform;
use image_store::OciDir;

/// The applets linked to `/bin/busybox`.
pub const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "env", "id", "ls", "mkdir", "rm", "stat", "test", "true",
];

/// The files of a busybox image whose binary has the bytes `busybox`.
pub fn busybox_files(busybox: Vec<u8>) -> Vec<File> {
    let mut files = vec![
        File::dir("/bin", 0o755),
        File::regular("/bin/busybox", busybox, 0o755),
        File::regular(
            "/etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
            0o644,
        ),
        File::regular("/etc/group", b"root:x:0:\n".to_vec(), 0o644),
        File::dir("/root", 0o700),
        File::dir("/tmp", 0o1777),
    ];
    files.extend(
        APPLETS
            .iter()
            .map(|a| File::hardlink(format!("/bin/{a}"), "/bin/busybox")),
    );
    files
}

/// Builds the busybox image into `store` and tags it `tag`; returns the
/// image ID.
///
/// # Errors
/// Reading `busybox`, or any [`image_build::BuilderError`].
pub fn busybox_image(
    store: &OciDir,
    tag: &str,
    busybox: &Path,
) -> Result<image_core::Digest, Box<dyn std::error::Error>> {
    let files = busybox_files(std::fs::read(busybox)?);
    let mut image = ImageBuilder::scratch(store, &Platform::host())?;
    let history = History {
        created_by: Some(format!("busybox_image {}", busybox.display())),
        ..History::default()
    };
    image.add_files(&files, history)?;
    let run = image
        .config_mut()
        .config
        .get_or_insert_with(Default::default);
    run.env = Some(vec!["PATH=/bin".into()]);
    run.cmd = Some(vec!["/bin/sh".into()]);
    let built = image.commit(&[tag])?;
    Ok(built.config.image_id().clone())
}

#[allow(dead_code)] // the tests include this file for its functions
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (store, tag, busybox) = match args.as_slice() {
        [s, t] => (s, t, "/bin/busybox"),
        [s, t, b] => (s, t, b.as_str()),
        _ => return Err("usage: busybox_image STORE TAG [BUSYBOX]".into()),
    };
    let store = OciDir::open_or_create(store)?;
    let id = busybox_image(&store, tag, Path::new(busybox))?;
    println!("{id}");
    Ok(())
}
