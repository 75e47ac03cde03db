//! The plain-writer baseline of the unpack bench (`bench/overlay/unpack.sh`):
//! creates the same directories and files, with the same number of bytes,
//! as an image's layers hold, with nothing else: no decompression, no
//! hashing, no tar parsing, no metadata calls. What it takes is the limit
//! of the filesystem it writes to.
//!
//! ```text
//! plainwrite LIST OUT
//! ```
//! LIST has one line per entry, in the order to create them, fields
//! separated by tabs: `d<TAB>PATH` (a directory) or `f<TAB>SIZE<TAB>PATH`
//! (a file of SIZE bytes). Paths are relative to OUT, parents first.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, list, out] = &args[..] else {
        eprintln!("usage: plainwrite LIST OUT");
        std::process::exit(2);
    };
    if let Err(e) = run(Path::new(list), Path::new(out)) {
        eprintln!("plainwrite: {e}");
        std::process::exit(1);
    }
}

fn run(list: &Path, out: &Path) -> std::io::Result<()> {
    // Bytes that are not all zeros (no filesystem here skips zeros, but a
    // reader of this should not have to know that).
    let buf: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8 + 1).collect();
    std::fs::create_dir_all(out)?;
    let (mut files, mut bytes) = (0u64, 0u64);
    for line in BufReader::new(File::open(list)?).lines() {
        let line = line?;
        let mut fields = line.split('\t');
        match (fields.next(), fields.next(), fields.next()) {
            (Some("d"), Some(path), None) => std::fs::create_dir(out.join(path))?,
            (Some("f"), Some(size), Some(path)) => {
                let size: u64 = size.parse().map_err(std::io::Error::other)?;
                let mut f = File::create(out.join(path))?;
                let mut left = size;
                while left > 0 {
                    let n = left.min(buf.len() as u64) as usize;
                    f.write_all(&buf[..n])?;
                    left -= n as u64;
                }
                files += 1;
                bytes += size;
            }
            _ => return Err(std::io::Error::other(format!("bad line: {line:?}"))),
        }
    }
    eprintln!("plainwrite: {files} files, {bytes} bytes");
    Ok(())
}
