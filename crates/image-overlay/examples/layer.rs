//! A small driver for benchmarks and manual checks.
//!
//! ```text
//! layer unpack FILE DIR            # apply one layer onto DIR, print digests
//! layer pack DIR FILE [none|gzip|zstd] [LEVEL]
//! layer diff LOWER UPPER FILE [none|gzip|zstd]
//! ```

use std::error::Error;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use image_core::Compression;
use image_overlay::{diff_dirs, pack_dir, unpack, PackOptions, UnpackOptions};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let start = Instant::now();
    match args.first().map(String::as_str) {
        Some("unpack") if args.len() == 3 => {
            let f = File::open(&args[1])?;
            let r = unpack(f, Path::new(&args[2]), &UnpackOptions::default())?;
            println!(
                "digest {}\ndiff_id {}\ncompression {}\nentries {}\nbytes {} -> {}",
                r.digest,
                r.diff_id,
                r.compression.as_str(),
                r.entries,
                r.compressed_size,
                r.size
            );
        }
        Some("pack") if args.len() >= 3 => {
            let c: Compression = args.get(3).map_or("gzip", String::as_str).parse()?;
            let mut opts = PackOptions::new(c).with_source_date_epoch_from_env();
            if let Some(l) = args.get(4) {
                opts = opts.with_level(l.parse()?);
            }
            let mut out = BufWriter::new(File::create(&args[2])?);
            let r = pack_dir(Path::new(&args[1]), &mut out, &opts)?;
            out.flush()?;
            println!(
                "digest {}\ndiff_id {}\nentries {}\nbytes {} -> {}",
                r.digest, r.diff_id, r.entries, r.uncompressed_size, r.size
            );
        }
        Some("diff") if args.len() >= 4 => {
            let c: Compression = args.get(4).map_or("gzip", String::as_str).parse()?;
            let mut out = BufWriter::new(File::create(&args[3])?);
            let r = diff_dirs(
                Path::new(&args[1]),
                Path::new(&args[2]),
                &mut out,
                &PackOptions::new(c),
            )?;
            out.flush()?;
            println!(
                "digest {}\ndiff_id {}\nentries {}",
                r.digest, r.diff_id, r.entries
            );
        }
        _ => {
            eprintln!("usage: layer unpack FILE DIR | pack DIR FILE [none|gzip|zstd] [LEVEL] | diff LOWER UPPER FILE [COMPRESSION]");
            std::process::exit(2);
        }
    }
    eprintln!("elapsed {:.3}s", start.elapsed().as_secs_f64());
    Ok(())
}
