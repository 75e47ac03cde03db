//! A deterministic tar writer: ustar headers with PAX records where ustar
//! cannot hold a value, empty user and group names, no atime or ctime.

use std::io::{self, Write};

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file of `size` bytes (its data follows the header).
    File {
        /// The data's length.
        size: u64,
    },
    /// A directory.
    Dir,
    /// A symbolic link to this target.
    Symlink(Vec<u8>),
    /// A hard link to this path (of an entry written before, or of a file
    /// the layer is applied over).
    Hardlink(Vec<u8>),
    /// A character device (major, minor).
    Char(u64, u64),
    /// A block device (major, minor).
    Block(u64, u64),
    /// A named pipe.
    Fifo,
}

/// One entry header.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// The path, without a leading `./` or `/`; directories get their `/` here.
    pub path: &'a [u8],
    /// What the entry is.
    pub kind: Kind,
    /// Permission bits (and setuid, setgid, sticky): `mode & 0o7777` is kept.
    pub mode: u32,
    /// The owner's user ID.
    pub uid: u64,
    /// The owner's group ID.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Extended attributes (name, value), written as PAX `SCHILY.xattr.*`.
    pub xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

pub(crate) struct TarWriter<W: Write> {
    out: W,
    written: u64,
}

const OCTAL7: u64 = 0o7_777_777;
const OCTAL11: u64 = 0o77_777_777_777;

fn octal(field: &mut [u8], value: u64) {
    // digits, then NUL
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    loop {
        let total = body + len.to_string().len();
        if total == len {
            break;
        }
        len = total;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// A PAX time of `secs` plus `nanos` (0 < nanos < 10^9): the decimal
/// value, its fraction without trailing zeros (`-1.5` for -2 s + 0.5 s).
fn pax_time(secs: i64, nanos: u32) -> String {
    let (sign, whole, frac) = if secs < 0 {
        ("-", -(secs + 1), 1_000_000_000 - nanos)
    } else {
        ("", secs, nanos)
    };
    let frac = format!("{frac:09}");
    format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
}

impl<W: Write> TarWriter<W> {
    pub(crate) fn new(out: W) -> Self {
        TarWriter { out, written: 0 }
    }

    fn raw(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    /// Writes the header (and a PAX header before it when needed).
    pub(crate) fn header(&mut self, e: &Entry<'_>) -> io::Result<()> {
        self.header_nanos(e, 0)
    }

    /// Writes the header with a sub-second mtime: `mtime_nanos` (below a
    /// second) past `e.mtime`. A non-zero part goes into a PAX `mtime`
    /// record (`1700000000.5`), which unpack, GNU tar and Go's archive/tar
    /// read; the ustar field keeps the whole seconds.
    pub(crate) fn header_nanos(&mut self, e: &Entry<'_>, mtime_nanos: u32) -> io::Result<()> {
        let mut pax = Vec::new();
        let (type_flag, size, link): (u8, u64, &[u8]) = match &e.kind {
            Kind::File { size } => (b'0', *size, b""),
            Kind::Dir => (b'5', 0, b""),
            Kind::Symlink(t) => (b'2', 0, t),
            Kind::Hardlink(t) => (b'1', 0, t),
            Kind::Char(..) => (b'3', 0, b""),
            Kind::Block(..) => (b'4', 0, b""),
            Kind::Fifo => (b'6', 0, b""),
        };
        let (major, minor) = match e.kind {
            Kind::Char(a, b) | Kind::Block(a, b) => (a, b),
            _ => (0, 0),
        };
        // PAX records, keys in sorted order.
        let mut records: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if e.gid > OCTAL7 {
            records.push((b"gid".to_vec(), e.gid.to_string().into_bytes()));
        }
        if link.len() > 100 {
            records.push((b"linkpath".to_vec(), link.to_vec()));
        }
        if mtime_nanos != 0 && mtime_nanos < 1_000_000_000 {
            records.push((
                b"mtime".to_vec(),
                pax_time(e.mtime, mtime_nanos).into_bytes(),
            ));
        } else if e.mtime < 0 || e.mtime as u64 > OCTAL11 {
            records.push((b"mtime".to_vec(), e.mtime.to_string().into_bytes()));
        }
        if e.path.len() > 100 {
            records.push((b"path".to_vec(), e.path.to_vec()));
        }
        if size > OCTAL11 {
            records.push((b"size".to_vec(), size.to_string().into_bytes()));
        }
        if e.uid > OCTAL7 {
            records.push((b"uid".to_vec(), e.uid.to_string().into_bytes()));
        }
        for (k, v) in e.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            records.push((key, v.clone()));
        }
        records.sort();
        for (k, v) in &records {
            pax_record(&mut pax, k, v);
        }
        if major > OCTAL7 || minor > OCTAL7 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "device number too large for a tar header",
            ));
        }
        if !pax.is_empty() {
            let base = e
                .path
                .rsplit(|b| *b == b'/')
                .find(|c| !c.is_empty())
                .unwrap_or(b"x");
            let mut name = b"PaxHeaders.0/".to_vec();
            name.extend_from_slice(&base[..base.len().min(100 - name.len())]);
            let h = block(
                &name,
                b'x',
                0o644,
                0,
                0,
                pax.len() as u64,
                e.mtime.clamp(0, OCTAL11 as i64) as u64,
                b"",
                0,
                0,
            );
            self.raw(&h)?;
            self.raw(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        let name = if e.path.len() > 100 {
            &e.path[..100]
        } else {
            e.path
        };
        let link_field = if link.len() > 100 { &link[..100] } else { link };
        let h = block(
            name,
            type_flag,
            e.mode & 0o7777,
            e.uid.min(OCTAL7),
            e.gid.min(OCTAL7),
            size.min(OCTAL11),
            e.mtime.clamp(0, OCTAL11 as i64) as u64,
            link_field,
            major,
            minor,
        );
        self.raw(&h)
    }

    /// Writes file data (the caller writes exactly the header's size).
    pub(crate) fn data(&mut self, b: &[u8]) -> io::Result<()> {
        self.raw(b)
    }

    /// Pads the data of `size` bytes to a block boundary.
    pub(crate) fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % 512) as usize;
        if rem != 0 {
            self.raw(&[0u8; 512][..512 - rem])?;
        }
        Ok(())
    }

    /// Writes the end-of-archive marker and returns the writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.raw(&[0u8; 1024])?;
        Ok(self.out)
    }
}

#[allow(clippy::too_many_arguments)]
fn block(
    name: &[u8],
    type_flag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    link: &[u8],
    major: u64,
    minor: u64,
) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], uid);
    octal(&mut h[116..124], gid);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = type_flag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], major);
    octal(&mut h[337..345], minor);
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let s = format!("{sum:06o}");
    h[148..154].copy_from_slice(&s.as_bytes()[s.len() - 6..]);
    h[154] = 0;
    h[155] = b' ';
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths() {
        let mut v = Vec::new();
        pax_record(&mut v, b"path", b"a");
        assert_eq!(v, b"9 path=a\n");
        let mut v = Vec::new();
        let long = vec![b'x'; 95];
        pax_record(&mut v, b"path", &long);
        let s = String::from_utf8(v.clone()).expect("utf8");
        let n: usize = s.split(' ').next().expect("len").parse().expect("num");
        assert_eq!(n, v.len());
    }

    #[test]
    fn sub_second_mtimes_round_trip_through_pax() {
        use crate::unpack::parse_pax_time;
        for (secs, nanos) in [
            (1_700_000_000i64, 123_456_789u32),
            (5, 500_000_000),
            (0, 1),
            (-2, 500_000_000),
            (-1, 999_999_999),
        ] {
            let text = pax_time(secs, nanos);
            let t = parse_pax_time(text.as_bytes()).expect(&text);
            assert_eq!((t.tv_sec, t.tv_nsec), (secs, i64::from(nanos)), "{text}");
        }
        assert_eq!(pax_time(12, 500_000_000), "12.5");
        let mut w = TarWriter::new(Vec::new());
        let e = Entry {
            path: b"f",
            kind: Kind::File { size: 0 },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            xattrs: &[],
        };
        w.header_nanos(&e, 250_000_000).expect("header");
        let out = w.finish().expect("finish");
        let mut a = tar::Archive::new(&out[..]);
        let mut entry = a
            .entries()
            .expect("entries")
            .next()
            .expect("one")
            .expect("entry");
        let mtime: Vec<String> = entry
            .pax_extensions()
            .expect("pax")
            .expect("some")
            .filter_map(|x| {
                let x = x.expect("x");
                (x.key().expect("k") == "mtime").then(|| x.value().expect("v").to_owned())
            })
            .collect();
        assert_eq!(mtime, ["1700000000.25"]);
        assert_eq!(entry.header().mtime().expect("mtime"), 1_700_000_000);
    }

    #[test]
    fn readable_by_tar_crate() {
        let long = vec![b'd'; 150];
        let mut w = TarWriter::new(Vec::new());
        w.header(&Entry {
            path: &long,
            kind: Kind::File { size: 3 },
            mode: 0o4755,
            uid: 1 << 30,
            gid: 7,
            mtime: 1_700_000_000,
            xattrs: &[(b"user.a".to_vec(), b"1".to_vec())],
        })
        .expect("header");
        w.data(b"abc").expect("data");
        w.pad(3).expect("pad");
        let out = w.finish().expect("finish");
        let mut a = tar::Archive::new(&out[..]);
        let mut n = 0;
        for e in a.entries().expect("entries") {
            let mut e = e.expect("entry");
            assert_eq!(&*e.path_bytes(), &long[..]);
            assert_eq!(e.header().uid().expect("uid"), 1 << 30);
            assert_eq!(e.header().mode().expect("mode"), 0o4755);
            let xs: Vec<_> = e
                .pax_extensions()
                .expect("pax")
                .expect("some")
                .map(|x| x.expect("x").key().expect("k").to_owned())
                .collect();
            assert!(xs.contains(&"SCHILY.xattr.user.a".to_owned()));
            n += 1;
        }
        assert_eq!(n, 1);
    }
}
