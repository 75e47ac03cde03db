//! Imports an image archive into an OCI layout, or ingests one file as a
//! blob: the store side of `bench/store/load.sh`.
//!
//! ```text
//! cargo run --release -p image-store --example load -- load ARCHIVE STORE_DIR
//! cargo run --release -p image-store --example load -- ingest FILE STORE_DIR
//! cargo run --release -p image-store --example load -- init STORE_DIR
//! cargo run --release -p image-store --example load -- hash FILE
//! ```
//!
//! `init` only creates the store (so a timed `ingest` after it pays for the
//! ingest alone); `hash` reads FILE and hashes it as an ingest does, nothing
//! written (the hashing part of an ingest's time).

use std::fs::File;
use std::io::Read;
use std::time::Instant;

use image_core::Algorithm;
use image_store::archive::{load, LoadOptions};
use image_store::{Ingester, OciDir};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd, store] if cmd == "init" => {
            OciDir::open_or_create(store)?;
            return Ok(());
        }
        [cmd, input] if cmd == "hash" => {
            let start = Instant::now();
            let mut hasher = Algorithm::Sha256.hasher();
            let mut f = File::open(input)?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            println!("{}", hasher.finish());
            eprintln!("hashed in {:.3} s", start.elapsed().as_secs_f64());
            return Ok(());
        }
        _ => {}
    }
    let [cmd, input, store] = args.as_slice() else {
        eprintln!("usage: load (load ARCHIVE | ingest FILE) STORE_DIR | load init STORE_DIR | load hash FILE");
        std::process::exit(2);
    };
    let store = OciDir::open_or_create(store)?;
    let start = Instant::now();
    match cmd.as_str() {
        "load" => {
            let report = load(&store, File::open(input)?, &LoadOptions::default())?;
            for image in &report.images {
                println!("{} {}", image.descriptor.digest(), image.tags.join(" "));
            }
            eprintln!(
                "{:?}: {} blobs, {} bytes in {:.3} s",
                report.format,
                report.blobs,
                report.bytes,
                start.elapsed().as_secs_f64()
            );
        }
        "ingest" => {
            let mut f = File::open(input)?;
            let size = f.metadata()?.len();
            // What `imagectl` does: the store's one-pass ingest (read,
            // hash, write, fsync, rename).
            let digest = store.ingest_reader(&mut f, Some(size), None)?;
            println!("{digest}");
            eprintln!("{size} bytes in {:.3} s", start.elapsed().as_secs_f64());
        }
        other => {
            eprintln!("unknown command {other:?}");
            std::process::exit(2);
        }
    }
    Ok(())
}
