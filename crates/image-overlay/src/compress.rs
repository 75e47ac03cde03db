//! Compression of layer streams: gzip and zstd, sniffed or declared.
//!
//! Decoding wraps any [`Read`]; encoding wraps any [`Write`]. gzip goes
//! through flate2 with the zlib-rs backend, zstd through libzstd with its
//! multi-threaded compressor.

use std::io::{self, Read, Write};

use image_core::{Classify, Compression, ErrorKind};

/// How a layer is compressed when packing, with its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    /// The compression algorithm.
    pub compression: Compression,
    /// The level; `None` for the algorithm's default (gzip 6, zstd 3).
    pub level: Option<i32>,
    /// Worker threads for zstd (0 = single-threaded). Ignored by gzip.
    pub threads: u32,
}

impl Default for Encoding {
    fn default() -> Self {
        Encoding {
            compression: Compression::Gzip,
            level: None,
            threads: default_threads(),
        }
    }
}

impl Encoding {
    /// An encoding with the algorithm's default level.
    pub fn new(compression: Compression) -> Self {
        Encoding {
            compression,
            ..Encoding::default()
        }
    }

    /// The same encoding at another level.
    pub fn with_level(mut self, level: i32) -> Self {
        self.level = Some(level);
        self
    }
}

fn default_threads() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(1))
        .unwrap_or(1)
}

/// A compression failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompressError {
    /// The level is outside what the algorithm accepts.
    #[error("{compression} level {level} is out of range ({min}..={max})")]
    BadLevel {
        /// The algorithm.
        compression: &'static str,
        /// The level asked for.
        level: i32,
        /// The lowest level.
        min: i32,
        /// The highest level.
        max: i32,
    },
    /// The compressor failed to start or to write.
    #[error("{compression} compressor: {source}")]
    Io {
        /// The algorithm.
        compression: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Classify for CompressError {
    fn kind(&self) -> ErrorKind {
        match self {
            CompressError::BadLevel { .. } => ErrorKind::InvalidInput,
            CompressError::Io { source, .. } => Classify::kind(source),
        }
    }
}

/// A decoder over `inner` for `compression`.
///
/// # Errors
/// When the zstd decoder cannot be created.
pub fn decoder<'a, R: Read + 'a>(
    compression: Compression,
    inner: R,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(inner),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(inner)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(inner)?),
    })
}

/// A compressing writer; call [`Encoder::finish`] to write the trailer.
pub enum Encoder<W: Write> {
    /// No compression.
    None(W),
    /// gzip.
    Gzip(flate2::write::GzEncoder<W>),
    /// zstd.
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> std::fmt::Debug for Encoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Encoder::None(_) => "none",
            Encoder::Gzip(_) => "gzip",
            Encoder::Zstd(_) => "zstd",
        };
        write!(f, "Encoder({name})")
    }
}

impl<W: Write> Encoder<W> {
    /// Starts compressing into `inner`.
    ///
    /// # Errors
    /// [`CompressError::BadLevel`] for a level the algorithm does not have;
    /// [`CompressError::Io`] when the zstd context cannot be set up.
    pub fn new(inner: W, encoding: Encoding) -> Result<Self, CompressError> {
        Ok(match encoding.compression {
            Compression::None => Encoder::None(inner),
            Compression::Gzip => {
                let level = encoding.level.unwrap_or(6);
                if !(0..=9).contains(&level) {
                    return Err(CompressError::BadLevel {
                        compression: "gzip",
                        level,
                        min: 0,
                        max: 9,
                    });
                }
                // No file name, mtime 0, OS "unknown": deterministic.
                let enc = flate2::GzBuilder::new()
                    .operating_system(255)
                    .write(inner, flate2::Compression::new(level.unsigned_abs()));
                Encoder::Gzip(enc)
            }
            Compression::Zstd => {
                let level = encoding.level.unwrap_or(3);
                let range = zstd::compression_level_range();
                if !range.contains(&level) {
                    return Err(CompressError::BadLevel {
                        compression: "zstd",
                        level,
                        min: *range.start(),
                        max: *range.end(),
                    });
                }
                let zerr = |source| CompressError::Io {
                    compression: "zstd",
                    source,
                };
                let mut enc = zstd::stream::write::Encoder::new(inner, level).map_err(zerr)?;
                if encoding.threads > 0 {
                    enc.multithread(encoding.threads).map_err(zerr)?;
                }
                enc.include_checksum(true).map_err(zerr)?;
                Encoder::Zstd(enc)
            }
        })
    }

    /// Writes the trailer and returns the inner writer.
    ///
    /// # Errors
    /// Any write error of the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_each() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mut e = Encoder::new(Vec::new(), Encoding::new(c)).expect("encoder");
            e.write_all(&data).expect("write");
            let out = e.finish().expect("finish");
            assert_eq!(Compression::sniff(&out), c);
            let mut back = Vec::new();
            decoder(c, &out[..])
                .expect("decoder")
                .read_to_end(&mut back)
                .expect("read");
            assert_eq!(back, data);
        }
    }

    #[test]
    fn bad_level() {
        let e = Encoder::new(Vec::new(), Encoding::new(Compression::Gzip).with_level(12))
            .expect_err("level 12");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
}
