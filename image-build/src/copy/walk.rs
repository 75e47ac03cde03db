//! The plan: sources resolved, globs expanded, each source directory
//! walked once (no symlink followed, bounded), everything read hashed.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use image_core::digest::Algorithm;
use image_core::path::{clean_absolute, clean_relative};
use image_core::Digest;
use image_overlay::resolve::{open_in_root, PathResolution};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};

use super::archive;
use super::owner::Chmod;
use super::{CopyError, CopyPlan, CopySource, CopySpec, MAX_DEPTH, MAX_ENTRIES};
use crate::dockerignore::Ignore;
use crate::glob::Glob;

/// One source after glob expansion: a file, a directory, an archive to
/// unpack (`ADD`) or a heredoc.
#[derive(Debug)]
pub(crate) struct Item {
    /// The path in the source (relative to its root), as matched: bytes,
    /// as a glob may match a name that is not UTF-8.
    pub(crate) path: Vec<u8>,
    /// `--parents`: the path kept under the destination.
    pub(crate) keep_path: Option<Vec<u8>>,
    pub(crate) kind: ItemKind,
}

impl Item {
    /// The `--parents` path as text, to be joined into the destination's
    /// path: a name that is not UTF-8 is refused (the plan checks it before
    /// anything is written).
    pub(crate) fn keep_text(&self) -> Result<Option<&str>, CopyError> {
        self.keep_path
            .as_deref()
            .map(|k| {
                std::str::from_utf8(k).map_err(|_| CopyError::Unsupported {
                    path: lossy(&self.path).into_owned(),
                    what: "path that is not UTF-8 (with --parents)",
                })
            })
            .transpose()
    }
}

#[derive(Debug)]
pub(crate) enum ItemKind {
    /// A file, directory or link: the entries `first..end` of the plan,
    /// the first being the source itself.
    Tree { first: usize, end: usize },
    /// An `ADD`ed local archive: the entry of its file.
    Archive { entry: usize },
    /// A heredoc: its name and content.
    Heredoc { name: String, content: Vec<u8> },
}

/// One file, directory or link read.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Depth below the item's source (0 for the source itself).
    pub(crate) depth: usize,
    /// The last path component (empty for an item's source).
    pub(crate) name: Vec<u8>,
    /// The path below the item's source.
    pub(crate) rel: Vec<u8>,
    pub(crate) kind: Kind,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime: (i64, u32),
    pub(crate) ino: u64,
    pub(crate) size: u64,
    /// False for a directory the ignore rules exclude whose children are
    /// not re-included (and everything below it): not copied.
    pub(crate) keep: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A regular file and the sha256 of its content.
    File([u8; 32]),
    /// A hard link to the entry at this index (of the same plan).
    Hardlink(usize),
    Dir,
    Symlink(Vec<u8>),
    /// A FIFO or a device: type and device number.
    Special(FileType, u64),
}

/// Where sources are read from: a directory and how paths resolve in it.
pub(crate) struct Source<'a> {
    pub(crate) root: SourceRoot<'a>,
    /// Beneath (the context: an escape is an error) or in-root (a
    /// `--from` root: links stay inside it).
    pub(crate) beneath: bool,
    pub(crate) ignore: Option<&'a Ignore>,
    /// The ignore rules have `!` exceptions: an excluded directory is
    /// still walked for what they include again.
    exceptions: bool,
}

pub(crate) enum SourceRoot<'a> {
    Borrowed(BorrowedFd<'a>),
    Owned(OwnedFd),
}

impl Source<'_> {
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        match &self.root {
            SourceRoot::Borrowed(b) => *b,
            SourceRoot::Owned(o) => o.as_fd(),
        }
    }

    pub(crate) fn open(&self, path: &[u8], flags: OFlags) -> Result<OwnedFd, Errno> {
        if self.beneath {
            return crate::context::open_beneath(self.fd(), path, flags, PathResolution::Auto);
        }
        open_in_root(self.fd(), path, flags, Mode::empty(), PathResolution::Auto)
    }

    /// Opens the source of the plan's copy: the context or the `--from`
    /// root.
    pub(crate) fn new<'a>(source: &CopySource<'a>, first: &str) -> Result<Source<'a>, CopyError> {
        match source {
            CopySource::Context(c) => match c.dir() {
                Some(fd) => Ok(Source {
                    root: SourceRoot::Borrowed(fd),
                    beneath: true,
                    ignore: c.ignore(),
                    exceptions: c.ignore().is_some_and(has_exceptions),
                }),
                None => Err(CopyError::NoContext {
                    source: first.to_owned(),
                }),
            },
            CopySource::Root(path) => {
                let fd = open_root(path).map_err(|source| CopyError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Ok(Source {
                    root: SourceRoot::Owned(fd),
                    beneath: false,
                    ignore: None,
                    exceptions: false,
                })
            }
        }
    }

    fn excluded(&self, path: &str) -> bool {
        self.ignore.is_some_and(|i| i.is_excluded(path))
    }
}

/// True for a source `ADD` must fetch: a URL or a git repository.
pub(crate) fn is_remote(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    ["http://", "https://", "git://", "ssh://", "git@"]
        .iter()
        .any(|p| lower.starts_with(p))
        || (lower.ends_with(".git")
            && lower
                .split('/')
                .next()
                .is_some_and(|host| host.contains('.') && lower.contains('/')))
}

/// True when a path holds an unescaped `*`, `?` or `[`.
fn has_meta(p: &str) -> bool {
    let mut esc = false;
    for c in p.chars() {
        match c {
            _ if esc => esc = false,
            '\\' => esc = true,
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

/// A glob for one path element, as Go's `filepath.Match`: a run of `*` is
/// one `*` (no `**` across elements in COPY sources).
fn element_glob(p: &str) -> Option<Glob> {
    let mut out = String::with_capacity(p.len());
    let mut esc = false;
    for c in p.chars() {
        if !esc && c == '*' && out.ends_with('*') && !out.ends_with("\\*") {
            continue;
        }
        esc = !esc && c == '\\';
        out.push(c);
    }
    Glob::path(&out)
}

/// `--parents`: the source path split at a `/./` pivot (the part after it
/// is kept under the destination), else kept whole.
fn parents_split(raw: &str) -> (String, String) {
    match raw.find("/./") {
        Some(i) => (raw.to_owned(), raw[i + 3..].to_owned()),
        None => (raw.to_owned(), raw.trim_start_matches("./").to_owned()),
    }
}

pub(crate) fn plan(source: &CopySource<'_>, spec: &CopySpec) -> Result<CopyPlan, CopyError> {
    if spec.add {
        if let Some(s) = spec.sources.iter().find(|s| is_remote(s)) {
            return Err(CopyError::Remote { source: s.clone() });
        }
        if let (Some(_), Some(s)) = (&spec.checksum, spec.sources.first()) {
            return Err(CopyError::ChecksumLocal { source: s.clone() });
        }
    }
    if let Some(c) = &spec.chmod {
        Chmod::parse(c)?;
    }
    let exclude =
        Ignore::parse(&spec.exclude.join("\n")).map_err(|source| CopyError::Exclude { source })?;
    let mut w = Walker {
        entries: Vec::new(),
        links: HashMap::new(),
        buf: vec![0; 256 << 10],
        exclude_exceptions: has_exceptions(&exclude),
        exclude,
        stack: Vec::new(),
        excluded_any: false,
    };
    let mut items = Vec::new();
    if !spec.sources.is_empty() {
        let src = Source::new(source, &spec.sources[0])?;
        for raw in &spec.sources {
            w.source(&src, spec, raw, &mut items)?;
        }
    }
    for (name, content) in &spec.heredocs {
        items.push(Item {
            path: name.as_bytes().to_vec(),
            keep_path: None,
            kind: ItemKind::Heredoc {
                name: name.clone(),
                content: content.as_bytes().to_vec(),
            },
        });
    }
    if items.len() > 1 && !dest_is_dir(&spec.dest) {
        return Err(CopyError::DestNotDirectory {
            dest: spec.dest.clone(),
        });
    }
    let digest = digest(&items, &w.entries, keeps_owners(source, spec));
    let prefix = match items.as_slice() {
        [Item {
            kind: ItemKind::Tree { first, .. },
            ..
        }] if w.entries[*first].kind == Kind::Dir => "dir",
        [_] => "file",
        _ => "multi",
    };
    Ok(CopyPlan {
        created_by_source: format!("{prefix}:{}", digest.hex()),
        digest,
        items,
        entries: w.entries,
        excluded_any: w.excluded_any,
    })
}

/// A destination that names a directory: it ends in `/` (or `/.`), or is
/// `.` itself.
pub(crate) fn dest_is_dir(dest: &str) -> bool {
    dest.ends_with('/') || dest == "." || dest.ends_with("/.") || dest.is_empty()
}

/// Whether a copy keeps its sources' owners: as Docker and BuildKit, a
/// copy from the context is owned by root (whoever owns the files on the
/// machine that builds), a copy from another stage or an image keeps its
/// owners (moby#38599), and `--chown` overrides both.
pub(crate) fn keeps_owners(source: &CopySource<'_>, spec: &CopySpec) -> bool {
    spec.chown.is_none() && matches!(source, CopySource::Root(_))
}

/// The plan's digest: every item's name and kind, every kept entry's path,
/// type, mode, content hash or link target, and its owner when the copy
/// keeps it (`owners`); never a time, nor an owner the copy drops, so
/// that the key of a copy from the context is the same on every machine.
fn digest(items: &[Item], entries: &[Entry], owners: bool) -> Digest {
    let mut h = Sha256::new();
    let field = |h: &mut Sha256, b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    for item in items {
        field(&mut h, &item.path);
        field(&mut h, item.keep_path.as_deref().unwrap_or_default());
        match &item.kind {
            ItemKind::Tree { first, end } => {
                field(&mut h, b"tree");
                for e in entries[*first..*end].iter().filter(|e| e.keep) {
                    field(&mut h, &e.rel);
                    h.update(e.mode.to_le_bytes());
                    if owners {
                        h.update(e.uid.to_le_bytes());
                        h.update(e.gid.to_le_bytes());
                    }
                    match &e.kind {
                        Kind::File(c) => {
                            field(&mut h, b"f");
                            h.update(c);
                        }
                        Kind::Hardlink(i) => {
                            field(&mut h, b"h");
                            field(&mut h, &entries[*i].rel);
                        }
                        Kind::Dir => field(&mut h, b"d"),
                        Kind::Symlink(t) => {
                            field(&mut h, b"l");
                            field(&mut h, t);
                        }
                        Kind::Special(t, dev) => {
                            field(&mut h, b"s");
                            h.update(t.as_raw_mode().to_le_bytes());
                            h.update(dev.to_le_bytes());
                        }
                    }
                }
            }
            ItemKind::Archive { entry } => {
                field(&mut h, b"archive");
                if let Kind::File(c) = &entries[*entry].kind {
                    h.update(c);
                }
            }
            ItemKind::Heredoc { content, .. } => {
                field(&mut h, b"heredoc");
                field(&mut h, content);
            }
        }
    }
    let out = h.finalize();
    Digest::from_bytes(Algorithm::Sha256, &out).expect("a sha256 is 32 bytes")
}

struct Walker {
    entries: Vec<Entry>,
    /// Files with more than one link: (device, inode) to their first entry.
    links: HashMap<(u64, u64), usize>,
    buf: Vec<u8>,
    exclude: Ignore,
    /// `exclude` has `!` exceptions.
    exclude_exceptions: bool,
    /// The entries of the directories being walked, outermost first.
    stack: Vec<usize>,
    /// Something the walk met was excluded (the ignore rules, --exclude).
    excluded_any: bool,
}

impl Walker {
    /// Resolves one source as written (a path or a glob) into items.
    fn source(
        &mut self,
        src: &Source<'_>,
        spec: &CopySpec,
        raw: &str,
        items: &mut Vec<Item>,
    ) -> Result<(), CopyError> {
        let (path, keep) = if spec.parents {
            let (p, k) = parents_split(raw);
            (p, Some(k))
        } else {
            (raw.to_owned(), None)
        };
        let trimmed = path.trim_start_matches('/');
        let cleaned = if src.beneath {
            clean_relative(trimmed).ok_or_else(|| CopyError::OutsideContext {
                source: raw.to_owned(),
            })?
        } else {
            clean_absolute(trimmed)[1..].to_owned()
        };
        let keep = keep.map(|k| clean_absolute(&k)[1..].to_owned());
        if !has_meta(&cleaned) {
            let kind = self
                .item(src, spec, raw, cleaned.as_bytes())?
                .ok_or_else(|| CopyError::NotFound {
                    source: raw.to_owned(),
                })?;
            items.push(Item {
                path: cleaned.into_bytes(),
                keep_path: keep.map(String::into_bytes),
                kind,
            });
            return Ok(());
        }
        let matches = self.expand(src, raw, &cleaned)?;
        let before = items.len();
        for m in matches {
            if let Some(kind) = self.item(src, spec, raw, &m)? {
                let keep_path = keep.as_ref().map(|_| match raw.find("/./") {
                    // The pivot sits before the glob: keep what follows it.
                    Some(i) => {
                        let pivot = clean_absolute(&raw[..i])[1..].to_owned();
                        match m.strip_prefix(pivot.as_bytes()) {
                            Some(r) => r[r.iter().take_while(|&&b| b == b'/').count()..].to_vec(),
                            None => m.clone(),
                        }
                    }
                    None => m.clone(),
                });
                let item = Item {
                    path: m,
                    keep_path,
                    kind,
                };
                item.keep_text()?;
                items.push(item);
            }
        }
        if items.len() == before {
            return Err(CopyError::NoMatch {
                pattern: raw.to_owned(),
            });
        }
        Ok(())
    }

    /// The paths a glob matches, sorted, each element matched alone.
    fn expand(
        &mut self,
        src: &Source<'_>,
        raw: &str,
        pattern: &str,
    ) -> Result<Vec<Vec<u8>>, CopyError> {
        let mut cands = vec![Vec::new()];
        for comp in pattern.split('/') {
            // Names are bytes: one that is not UTF-8 is matched by its
            // lossy spelling and kept as it is.
            let join = |c: &[u8], n: &[u8]| {
                let mut p = c.to_vec();
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(n);
                p
            };
            if !has_meta(comp) {
                cands.iter_mut().for_each(|c| *c = join(c, comp.as_bytes()));
                continue;
            }
            let glob = element_glob(comp).ok_or_else(|| CopyError::NoMatch {
                pattern: raw.to_owned(),
            })?;
            let mut next = Vec::new();
            for c in &cands {
                let dir = match src.open(c, OFlags::RDONLY | OFlags::DIRECTORY) {
                    Ok(fd) => fd,
                    Err(Errno::NOENT | Errno::NOTDIR) => continue,
                    Err(e) => return Err(source_err(src, raw, &lossy(c), e)),
                };
                for name in list(dir.as_fd()).map_err(|e| source_err(src, raw, &lossy(c), e))? {
                    if glob.matches(&lossy(&name), false) {
                        if next.len() == MAX_ENTRIES {
                            return Err(too_many());
                        }
                        next.push(join(c, &name));
                    }
                }
            }
            cands = next;
        }
        Ok(cands)
    }

    /// One matched path: None when it does not exist (or is ignored).
    fn item(
        &mut self,
        src: &Source<'_>,
        spec: &CopySpec,
        raw: &str,
        path_bytes: &[u8],
    ) -> Result<Option<ItemKind>, CopyError> {
        let path = &*lossy(path_bytes);
        let fd = match src.open(path_bytes, OFlags::PATH) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
            Err(e) => return Err(source_err(src, raw, path, e)),
        };
        let st = rfs::fstat(&fd).map_err(|e| read_err(path, e))?;
        let ftype = FileType::from_raw_mode(st.st_mode);
        // The context's root is never excluded; a named or matched source
        // is by the ignore rules, and by --exclude (its path or its name).
        let excluded = !path.is_empty() && src.excluded(path);
        self.excluded_any |= excluded;
        let name = path.rsplit('/').next().unwrap_or(path);
        if excluded && (ftype != FileType::Directory || !src.exceptions) {
            return Ok(None);
        }
        if ftype != FileType::Directory
            && !path.is_empty()
            && (self.exclude.is_excluded(path) || self.exclude.is_excluded(name))
        {
            self.excluded_any = true;
            return Ok(None);
        }
        let first = self.entries.len();
        let base = path_bytes.rsplit(|&b| b == b'/').next().unwrap_or_default();
        let mut e = entry(&st, 0, base.to_vec(), Vec::new());
        e.keep = !excluded;
        match ftype {
            FileType::Directory => {
                let dir = rfs::openat(
                    &fd,
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| read_err(path, e))?;
                self.push(e)?;
                self.stack.push(first);
                let r = self.walk(src, dir.as_fd(), path, 1);
                self.stack.pop();
                r?;
                if !self.entries[first].keep {
                    // Excluded, and nothing below it re-included.
                    self.entries.truncate(first);
                    return Ok(None);
                }
            }
            FileType::RegularFile => {
                let file = reopen_file(src, path_bytes, &st)?;
                e.kind = Kind::File(self.hash(file, path, st.st_size as u64)?);
                self.push(e)?;
                if spec.add && archive::is_archive(reopen_file(src, path_bytes, &st)?, path)? {
                    return Ok(Some(ItemKind::Archive { entry: first }));
                }
            }
            // Only a dangling or looping link is reached unfollowed.
            FileType::Symlink => return Ok(None),
            other => {
                e.kind = special(other, &st, path)?;
                self.push(e)?;
            }
        }
        Ok(Some(ItemKind::Tree {
            first,
            end: self.entries.len(),
        }))
    }

    fn push(&mut self, e: Entry) -> Result<(), CopyError> {
        if self.entries.len() == MAX_ENTRIES {
            return Err(too_many());
        }
        self.entries.push(e);
        Ok(())
    }

    /// Marks the directories being walked as kept (a child of theirs is),
    /// innermost first, stopping at one already kept: each is marked once.
    fn mark_kept(&mut self) {
        for &i in self.stack.iter().rev() {
            if self.entries[i].keep {
                break;
            }
            self.entries[i].keep = true;
        }
    }

    /// Walks the directory `dir` (at `path` in the source), its entries in
    /// name order, depth first.
    fn walk(
        &mut self,
        src: &Source<'_>,
        dir: BorrowedFd<'_>,
        path: &str,
        depth: usize,
    ) -> Result<(), CopyError> {
        if depth > MAX_DEPTH {
            return Err(CopyError::TooLarge {
                what: "the directory depth",
                limit: MAX_DEPTH as u64,
            });
        }
        let base_rel = self.entries[*self.stack.last().expect("walking a directory")]
            .rel
            .clone();
        for name in list(dir).map_err(|e| read_err(path, e))? {
            let mut rel = base_rel.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(&name);
            let rel_s = String::from_utf8_lossy(&rel).into_owned();
            let full = format!("{path}/{}", String::from_utf8_lossy(&name));
            let st = match rfs::statat(dir, &name[..], AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(read_err(&full, e)),
            };
            let ftype = FileType::from_raw_mode(st.st_mode);
            let excluded = src.excluded(&full) || self.exclude.is_excluded(&rel_s);
            self.excluded_any |= excluded;
            let is_dir = ftype == FileType::Directory;
            if excluded && !(is_dir && (src.exceptions || self.exclude_exceptions)) {
                continue;
            }
            let mut e = entry(&st, depth, name.clone(), rel);
            e.keep = !excluded;
            let index = self.entries.len();
            match ftype {
                FileType::Directory => {
                    let sub = open_child(dir, &name[..], true).map_err(|e| read_err(&full, e))?;
                    self.push(e)?;
                    if !excluded {
                        self.mark_kept();
                    }
                    self.stack.push(index);
                    let r = self.walk(src, sub.as_fd(), &full, depth + 1);
                    self.stack.pop();
                    r?;
                    continue;
                }
                FileType::RegularFile => {
                    let first = if st.st_nlink > 1 {
                        self.links.get(&(st.st_dev, st.st_ino)).copied()
                    } else {
                        None
                    };
                    if let Some(first) = first {
                        // Its content is hashed at its first link.
                        e.kind = Kind::Hardlink(first);
                    } else {
                        let f =
                            open_child(dir, &name[..], false).map_err(|e| read_err(&full, e))?;
                        check_same(&f, &st, &full)?;
                        e.kind = Kind::File(self.hash(f, &full, st.st_size as u64)?);
                        if st.st_nlink > 1 {
                            self.links.insert((st.st_dev, st.st_ino), index);
                        }
                    }
                }
                FileType::Symlink => {
                    let t = rfs::readlinkat(dir, &name[..], Vec::new())
                        .map_err(|e| read_err(&full, e))?;
                    e.kind = Kind::Symlink(t.into_bytes());
                }
                other => e.kind = special(other, &st, &full)?,
            }
            self.push(e)?;
            if !excluded {
                self.mark_kept();
            }
        }
        Ok(())
    }

    /// The sha256 of a file's content, which must be `size` bytes.
    fn hash(&mut self, fd: OwnedFd, path: &str, size: u64) -> Result<[u8; 32], CopyError> {
        let mut file = std::fs::File::from(fd);
        let mut h = Sha256::new();
        let mut n = 0u64;
        loop {
            let k = file.read(&mut self.buf).map_err(|source| CopyError::Read {
                path: path.to_owned(),
                source,
            })?;
            if k == 0 {
                break;
            }
            n += k as u64;
            if n > size {
                break;
            }
            h.update(&self.buf[..k]);
        }
        if n != size {
            return Err(CopyError::Changed {
                path: path.to_owned(),
            });
        }
        Ok(h.finalize().into())
    }
}

fn has_exceptions(i: &Ignore) -> bool {
    i.patterns().iter().any(|p| p.exclusion)
}

/// Opens the regular file at `path` (as the plan saw it, `st`) for reading.
fn reopen_file(src: &Source<'_>, path: &[u8], st: &rfs::Stat) -> Result<OwnedFd, CopyError> {
    let f = src
        .open(path, OFlags::RDONLY | OFlags::NONBLOCK)
        .map_err(|e| read_err(&lossy(path), e))?;
    check_same(&f, st, &lossy(path))?;
    Ok(f)
}

/// A path's bytes as text, for matching and messages (a byte that is not
/// UTF-8 shows as U+FFFD).
pub(crate) fn lossy(path: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(path)
}

fn check_same(f: &OwnedFd, st: &rfs::Stat, path: &str) -> Result<(), CopyError> {
    let now = rfs::fstat(f).map_err(|e| read_err(path, e))?;
    if now.st_ino != st.st_ino || now.st_dev != st.st_dev {
        return Err(CopyError::Changed {
            path: path.to_owned(),
        });
    }
    Ok(())
}

fn special(t: FileType, st: &rfs::Stat, path: &str) -> Result<Kind, CopyError> {
    match t {
        FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice => {
            Ok(Kind::Special(t, st.st_rdev))
        }
        _ => Err(CopyError::Unsupported {
            path: path.to_owned(),
            what: "socket",
        }),
    }
}

fn entry(st: &rfs::Stat, depth: usize, name: Vec<u8>, rel: Vec<u8>) -> Entry {
    Entry {
        depth,
        name,
        rel,
        kind: Kind::Dir,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime: (st.st_mtime, st.st_mtime_nsec as u32),
        ino: st.st_ino,
        size: st.st_size as u64,
        keep: true,
    }
}

/// A root directory a copy reads or writes (a `--from` root, the
/// destination), named by the caller.
pub(crate) fn open_root(path: &std::path::Path) -> std::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rfs::open(path, flags, Mode::empty())?)
}

/// The directory (`dir`) or the file (read-only, non-blocking for a FIFO)
/// `name` in `parent`, opened without following a link.
pub(crate) fn open_child(parent: BorrowedFd<'_>, name: &[u8], dir: bool) -> Result<OwnedFd, Errno> {
    let kind = if dir {
        OFlags::DIRECTORY
    } else {
        OFlags::NONBLOCK
    };
    rfs::openat(
        parent,
        name,
        OFlags::RDONLY | kind | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The names in a directory, sorted bytewise, without `.` and `..`.
pub(crate) fn list(dir: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, Errno> {
    let mut names = Vec::new();
    for e in rfs::Dir::read_from(dir)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            if names.len() == MAX_ENTRIES {
                return Err(Errno::NOMEM);
            }
            names.push(n.to_vec());
        }
    }
    names.sort_unstable();
    Ok(names)
}

fn too_many() -> CopyError {
    CopyError::TooLarge {
        what: "the number of entries",
        limit: MAX_ENTRIES as u64,
    }
}

pub(crate) fn read_err(path: &str, e: Errno) -> CopyError {
    CopyError::Read {
        path: path.to_owned(),
        source: e.into(),
    }
}

/// A failure to resolve a source path: an escape from the context is its
/// own error.
fn source_err(src: &Source<'_>, raw: &str, path: &str, e: Errno) -> CopyError {
    if src.beneath && e == Errno::XDEV {
        CopyError::OutsideContext {
            source: raw.to_owned(),
        }
    } else {
        read_err(path, e)
    }
}
