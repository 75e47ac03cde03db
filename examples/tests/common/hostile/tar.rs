//! A tar writer that writes whatever it is told: names with `..`, absolute
//! names, links anywhere, device nodes, sizes that lie. The `tar` crate's
//! builder refuses most of that, which is right for a builder and wrong
//! for a generator of hostile input.

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

    /// A device node, FIFO or other special file.
    pub fn special(name: impl AsRef<[u8]>, kind: Kind) -> Entry {
        Entry::new(name, kind)
    }
}

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let s = format!("{value:0width$o}");
    if s.len() <= width {
        field[..width].copy_from_slice(s.as_bytes());
        field[width] = 0;
    } else {
        // GNU base-256 for what octal cannot hold.
        field.fill(0);
        field[0] = 0x80;
        let bytes = value.to_be_bytes();
        let n = field.len();
        field[n - 8..].copy_from_slice(&bytes);
    }
}

fn header(name: &[u8], flag: u8, size: u64, e: &Entry) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], u64::from(e.mode));
    octal(&mut h[108..116], e.uid);
    octal(&mut h[116..124], e.gid);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_600_000_000);
    h[156] = flag;
    let l = e.link.len().min(100);
    h[157..157 + l].copy_from_slice(&e.link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    if let Kind::Char(ma, mi) | Kind::Block(ma, mi) = e.kind {
        octal(&mut h[329..337], u64::from(ma));
        octal(&mut h[337..345], u64::from(mi));
    }
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn pad(out: &mut Vec<u8>) {
    let rem = out.len() % 512;
    if rem != 0 {
        out.resize(out.len() + 512 - rem, 0);
    }
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // "LEN key=value\n", LEN counting itself.
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
        let px = Entry::file("PaxHeaders/x", b"");
        out.extend_from_slice(&header(b"PaxHeaders/x", b'x', pax.len() as u64, &px));
        out.extend_from_slice(&pax);
        pad(out);
    }
    let size = e.claimed_size.unwrap_or(if e.kind == Kind::File {
        e.data.len() as u64
    } else {
        0
    });
    out.extend_from_slice(&header(&e.name, e.kind.flag(), size, e));
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
