//! `imagectl digest FILE|-`

use std::fs::File;
use std::io;
use std::path::PathBuf;

use anyhow::Context;
use image_core::{Algorithm, Digest};

/// Arguments of `imagectl digest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file to hash, or `-` for standard input.
    pub file: PathBuf,
    /// The hash algorithm: sha256 or sha512.
    #[arg(long, short, default_value = "sha256")]
    pub algorithm: String,
    /// Also print the size in bytes.
    #[arg(long)]
    pub size: bool,
}

/// Hashes the file and prints `algorithm:hex` (and the size when asked).
pub fn run(args: Args) -> anyhow::Result<()> {
    let algorithm: Algorithm = args.algorithm.parse()?;
    let (digest, size) = if args.file.as_os_str() == "-" {
        Digest::of_reader(algorithm, io::stdin().lock()).context("reading standard input")?
    } else {
        let f =
            File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
        // No BufReader: of_reader's 64 KiB reads keep each chunk in the
        // CPU cache between the kernel's copy and the hash.
        Digest::of_reader(algorithm, f)
            .with_context(|| format!("reading {}", args.file.display()))?
    };
    if args.size {
        println!("{digest} {size}");
    } else {
        println!("{digest}");
    }
    Ok(())
}
