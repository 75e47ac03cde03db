//! A small driver for benchmarks and manual checks.
//!
//! ```text
//! layer unpack FILE DIR            # apply one layer onto DIR, print digests
//! layer pack DIR FILE [none|gzip|zstd] [LEVEL]
//! layer diff LOWER UPPER FILE [none|gzip|zstd]
//! layer compress IN OUT [gzip|zstd] [LEVEL]   # the compressor alone, for profiling
//! layer flatten LAYOUT REF DIR     # flatten an image of an OCI layout onto DIR
//! layer decode LAYOUT REF          # flatten's reading alone: every layer
//!                                  # decompressed, parsed, both digests checked, nothing written
//! layer image LAYOUT REF COMPRESSION DIR...  # one layer per DIR, tagged REF
//! ```

use std::error::Error;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use image_core::config::History;
use image_core::{Compression, DescriptorExt};
use image_overlay::compress::Encoder;
use image_overlay::{
    diff_dirs, flatten_image, list, pack_dir, unpack, Encoding, ListOptions, PackOptions,
    UnpackOptions,
};
use image_store::mutate::{append, NewLayer};
use image_store::{resolve_image, Ingester, OciDir, Provider, TagStore};

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
        Some("compress") if args.len() >= 3 => {
            let c: Compression = args.get(3).map_or("gzip", String::as_str).parse()?;
            let mut enc = Encoding::new(c);
            if let Some(l) = args.get(4) {
                enc = enc.with_level(l.parse()?);
            }
            let out = BufWriter::new(File::create(&args[2])?);
            let mut w = Encoder::new(out, enc)?;
            let n = std::io::copy(&mut File::open(&args[1])?, &mut w)?;
            w.finish()?.flush()?;
            println!("bytes {n}");
        }
        Some("flatten") if args.len() == 4 => {
            let store = OciDir::open(&args[1])?;
            let image = resolve_image(&store, &args[2], None)?;
            let reports = flatten_image(
                &store,
                &image,
                Path::new(&args[3]),
                &UnpackOptions::default(),
            )?;
            let entries: u64 = reports.iter().map(|r| r.entries).sum();
            println!("layers {}\nentries {entries}", reports.len());
        }
        Some("decode") if args.len() == 3 => {
            // What flatten does minus the filesystem: the same reading path
            // (list shares unpack's walk: decompressor thread, both hashes
            // on helper threads, tar parse), every layer in turn.
            let store = OciDir::open(&args[1])?;
            let image = resolve_image(&store, &args[2], None)?;
            let mut entries = 0;
            for (layer, diff_id) in image.layers().iter().zip(image.diff_ids()) {
                let reader = store.reader_for_unverified(layer)?;
                let report = list(reader, &ListOptions::default(), |_| {})?;
                if report.digest != layer.checked_digest()? || report.diff_id != *diff_id {
                    return Err(format!("layer {} does not verify", layer.digest()).into());
                }
                entries += report.entries;
            }
            println!("layers {}\nentries {entries}", image.layers().len());
        }
        Some("image") if args.len() >= 5 => {
            let store = OciDir::open_or_create(&args[1])?;
            let c: Compression = args[3].parse()?;
            let mut layers = Vec::new();
            for dir in &args[4..] {
                let mut w = store.writer(&image_store::content::unique_reference())?;
                let r = pack_dir(Path::new(dir), &mut w, &PackOptions::new(c))?;
                w.commit(Some(r.size), Some(&r.digest))?;
                println!(
                    "layer {} {} bytes (diff_id {})",
                    r.digest, r.size, r.diff_id
                );
                layers.push(NewLayer {
                    media_type: r.media_type,
                    digest: r.digest,
                    size: r.size,
                    diff_id: r.diff_id,
                    history: History {
                        created_by: Some(format!("layer image {dir}")),
                        ..History::default()
                    },
                });
            }
            let platform = image_core::Platform::host();
            let appended = append(&store, None, &platform, &layers, |_| {})?;
            store.set_tag(&args[2], &appended.manifest.descriptor())?;
            println!("image {} {}", args[2], appended.manifest.digest());
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
            eprintln!("usage: layer unpack FILE DIR | pack DIR FILE [none|gzip|zstd] [LEVEL] | diff LOWER UPPER FILE [COMPRESSION] | compress IN OUT [COMPRESSION] [LEVEL] | flatten LAYOUT REF DIR | decode LAYOUT REF | image LAYOUT REF COMPRESSION DIR...");
            std::process::exit(2);
        }
    }
    eprintln!("elapsed {:.3}s", start.elapsed().as_secs_f64());
    Ok(())
}
