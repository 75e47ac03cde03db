//! Tar streams written byte by byte, as a test tells: names with `..`,
//! absolute names, links anywhere, device nodes, sizes that lie, bad
//! checksums, PAX and GNU long-name records. The `tar` crate's builder
//! refuses most of that, which is right for a builder and wrong for a
//! generator of hostile input.
//!
//! Two faces over one header writer ([`Raw`]): [`TarBuf`], a stream built
//! call by call, and [`Entry`] with [`append`] and [`archive`], entries as
//! values.

/// A header with every field under the test's control.
#[derive(Clone, Debug)]
pub struct Raw {
    /// The member name (the first 100 bytes are written).
    pub name: Vec<u8>,
    /// The type flag (`b'0'` file, `b'5'` directory, ...).
    pub typ: u8,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// The size the header claims.
    pub size: u64,
    /// Modification time, seconds.
    pub mtime: u64,
    /// The link target (the first 100 bytes are written).
    pub link: Vec<u8>,
    /// Device major number (written for devices, or when not zero).
    pub major: u64,
    /// Device minor number (written for devices, or when not zero).
    pub minor: u64,
    /// Whether the checksum is written off by one.
    pub bad_checksum: bool,
}

impl Raw {
    /// A header of this name and type: mode 0755 for a directory, else
    /// 0644, owner 0:0, size 0, mtime 1600000000.
    pub fn new(name: &str, typ: u8) -> Raw {
        Raw {
            name: name.as_bytes().to_vec(),
            typ,
            mode: if typ == b'5' { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 1_600_000_000,
            link: Vec::new(),
            major: 0,
            minor: 0,
            bad_checksum: false,
        }
    }
    /// With this link target.
    pub fn link(mut self, l: &str) -> Raw {
        self.link = l.as_bytes().to_vec();
        self
    }
    /// With this claimed size.
    pub fn size(mut self, s: u64) -> Raw {
        self.size = s;
        self
    }
    /// The 512-byte header block.
    pub fn block(&self) -> [u8; 512] {
        let mut h = [0u8; 512];
        let n = self.name.len().min(100);
        h[..n].copy_from_slice(&self.name[..n]);
        num(&mut h[100..108], u64::from(self.mode));
        num(&mut h[108..116], self.uid);
        num(&mut h[116..124], self.gid);
        num(&mut h[124..136], self.size);
        num(&mut h[136..148], self.mtime);
        h[156] = self.typ;
        let l = self.link.len().min(100);
        h[157..157 + l].copy_from_slice(&self.link[..l]);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        if matches!(self.typ, b'3' | b'4') || self.major != 0 || self.minor != 0 {
            num(&mut h[329..337], self.major);
            num(&mut h[337..345], self.minor);
        }
        h[148..156].copy_from_slice(b"        ");
        let mut sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        if self.bad_checksum {
            sum += 1;
        }
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        h
    }
}

/// Octal when it fits, GNU base-256 otherwise.
fn num(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let max = (1u64 << (3 * digits as u32)) - 1;
    if v <= max {
        let s = format!("{v:0digits$o}");
        field[..digits].copy_from_slice(s.as_bytes());
        field[digits] = 0;
    } else {
        for b in field.iter_mut() {
            *b = 0;
        }
        let bytes = v.to_be_bytes();
        let n = field.len();
        field[n - 8..].copy_from_slice(&bytes);
        field[0] |= 0x80;
    }
}

/// Builds a tar stream entry by entry.
#[derive(Default)]
pub struct TarBuf(
    /// The bytes so far.
    pub Vec<u8>,
);

impl TarBuf {
    /// An empty stream.
    pub fn new() -> TarBuf {
        TarBuf(Vec::new())
    }
    /// A header and its data (padded to a block).
    pub fn raw(&mut self, h: &Raw, data: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&h.block());
        self.0.extend_from_slice(data);
        pad(&mut self.0);
        self
    }
    /// A regular file.
    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        let h = Raw::new(name, b'0').size(data.len() as u64);
        self.raw(&h, data)
    }
    /// A directory.
    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.raw(&Raw::new(name, b'5'), b"")
    }
    /// A symbolic link.
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(&Raw::new(name, b'2').link(target), b"")
    }
    /// A hard link.
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(&Raw::new(name, b'1').link(target), b"")
    }
    /// A PAX extended header for the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let body: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        let h = Raw::new("PaxHeaders/x", b'x').size(body.len() as u64);
        self.raw(&h, &body)
    }
    /// A GNU long-name entry for the next entry.
    pub fn gnu_longname(&mut self, name: &[u8]) -> &mut Self {
        let mut data = name.to_vec();
        data.push(0);
        let mut h = Raw::new("././@LongLink", b'L').size(data.len() as u64);
        h.mode = 0;
        // GNU magic so the tar crate recognises it.
        let mut b = h.block();
        b[257..265].copy_from_slice(b"ustar  \0");
        b[148..156].copy_from_slice(b"        ");
        let sum: u32 = b.iter().map(|x| u32::from(*x)).sum();
        b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.0.extend_from_slice(&b);
        self.0.extend_from_slice(&data);
        pad(&mut self.0);
        self
    }
    /// The stream with its two zero blocks; the builder is left empty.
    pub fn end(&mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        std::mem::take(&mut self.0)
    }
}

fn pad(out: &mut Vec<u8>) {
    let rem = out.len() % 512;
    if rem != 0 {
        out.resize(out.len() + 512 - rem, 0);
    }
}

/// One PAX record, `"LEN key=value\n"`, LEN counting itself.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// Entry types, as the tar header's type flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file (`0`).
    File,
    /// A hard link (`1`) to `link`.
    HardLink,
    /// A symbolic link (`2`) to `link`.
    Symlink,
    /// A character device (`3`).
    Char(u32, u32),
    /// A block device (`4`).
    Block(u32, u32),
    /// A directory (`5`).
    Dir,
    /// A FIFO (`6`).
    Fifo,
}

impl Kind {
    fn flag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::HardLink => b'1',
            Kind::Symlink => b'2',
            Kind::Char(..) => b'3',
            Kind::Block(..) => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
        }
    }
}

/// One entry to write.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The member name, as raw bytes (may hold `..`, a leading `/`, anything).
    pub name: Vec<u8>,
    /// Its type.
    pub kind: Kind,
    /// The link target of links.
    pub link: Vec<u8>,
    /// The content of files.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// The size the header claims, when it should lie about `data`'s.
    pub claimed_size: Option<u64>,
    /// Extra PAX records (`key`, `value`) for this entry.
    pub pax: Vec<(String, Vec<u8>)>,
}

impl Entry {
    fn new(name: impl AsRef<[u8]>, kind: Kind) -> Entry {
        Entry {
            name: name.as_ref().to_vec(),
            kind,
            link: Vec::new(),
            data: Vec::new(),
            mode: if kind == Kind::Dir { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            claimed_size: None,
            pax: Vec::new(),
        }
    }

    /// A regular file.
    pub fn file(name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> Entry {
        let mut e = Entry::new(name, Kind::File);
        e.data = data.as_ref().to_vec();
        e
    }

    /// An executable regular file.
    pub fn exe(name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> Entry {
        let mut e = Entry::file(name, data);
        e.mode = 0o755;
        e
    }

    /// A directory.
    pub fn dir(name: impl AsRef<[u8]>) -> Entry {
        Entry::new(name, Kind::Dir)
    }

    /// A symbolic link.
    pub fn symlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Entry {
        let mut e = Entry::new(name, Kind::Symlink);
        e.link = target.as_ref().to_vec();
        e
    }

    /// A hard link.
    pub fn hardlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Entry {
        let mut e = Entry::new(name, Kind::HardLink);
        e.link = target.as_ref().to_vec();
        e
    }

    /// The header of this entry claiming `size` bytes.
    fn header(&self, size: u64) -> Raw {
        let (major, minor) = match self.kind {
            Kind::Char(ma, mi) | Kind::Block(ma, mi) => (u64::from(ma), u64::from(mi)),
            _ => (0, 0),
        };
        Raw {
            name: self.name.clone(),
            typ: self.kind.flag(),
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            size,
            mtime: 1_600_000_000,
            link: self.link.clone(),
            major,
            minor,
            bad_checksum: false,
        }
    }

    /// A device node, FIFO or other special file.
    pub fn special(name: impl AsRef<[u8]>, kind: Kind) -> Entry {
        Entry::new(name, kind)
    }
}

/// Appends one entry (with a PAX header first when its name or link does
/// not fit, or it has PAX records of its own).
pub fn append(out: &mut Vec<u8>, e: &Entry) {
    let mut pax: Vec<u8> = Vec::new();
    if e.name.len() > 100 {
        pax.extend(pax_record("path", &e.name));
    }
    if e.link.len() > 100 {
        pax.extend(pax_record("linkpath", &e.link));
    }
    for (k, v) in &e.pax {
        pax.extend(pax_record(k, v));
    }
    if !pax.is_empty() {
        out.extend_from_slice(
            &Raw::new("PaxHeaders/x", b'x')
                .size(pax.len() as u64)
                .block(),
        );
        out.extend_from_slice(&pax);
        pad(out);
    }
    let size = e.claimed_size.unwrap_or(if e.kind == Kind::File {
        e.data.len() as u64
    } else {
        0
    });
    out.extend_from_slice(&e.header(size).block());
    out.extend_from_slice(&e.data);
    pad(out);
}

/// A whole archive: the entries and the two zero blocks that end it.
pub fn archive(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        append(&mut out, e);
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the tar crate reads back: (path, type flag, size, uid, link).
    fn read_back(bytes: &[u8]) -> Vec<(String, u8, u64, u64, Option<String>)> {
        let mut a = ::tar::Archive::new(bytes);
        a.entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let h = e.header();
                (
                    e.path().expect("path").to_string_lossy().into_owned(),
                    h.entry_type().as_byte(),
                    h.size().expect("size"),
                    h.uid().expect("uid"),
                    e.link_name()
                        .expect("link")
                        .map(|l| l.to_string_lossy().into_owned()),
                )
            })
            .collect()
    }

    #[test]
    fn both_faces_write_what_tar_reads_back() {
        let long = "d/".repeat(60) + "f";
        let mut huge = Entry::file(&long, "x");
        huge.uid = u64::from(u32::MAX);
        let entries = archive(&[Entry::dir("d"), huge, Entry::symlink("l", "d/f")]);
        assert_eq!(
            read_back(&entries),
            vec![
                ("d".into(), b'5', 0, 0, None),
                (long, b'0', 1, u64::from(u32::MAX), None),
                ("l".into(), b'2', 0, 0, Some("d/f".into())),
            ]
        );
        let stream = TarBuf::new()
            .dir("d")
            .file("d/f", b"abc")
            .hardlink("h", "d/f")
            .end();
        assert_eq!(
            read_back(&stream),
            vec![
                ("d".into(), b'5', 0, 0, None),
                ("d/f".into(), b'0', 3, 0, None),
                ("h".into(), b'1', 0, 0, Some("d/f".into())),
            ]
        );
    }

    #[test]
    fn pax_records_count_their_own_length() {
        for value in [&b"x"[..], &[b'v'; 5][..], &[b'v'; 93][..], &[b'v'; 994][..]] {
            let r = pax_record("path", value);
            let (len, _) = std::str::from_utf8(&r[..r.iter().position(|b| *b == b' ').unwrap()])
                .map(|l| (l.parse::<usize>().unwrap(), ()))
                .unwrap();
            assert_eq!(len, r.len(), "{}", String::from_utf8_lossy(&r));
        }
    }
}
