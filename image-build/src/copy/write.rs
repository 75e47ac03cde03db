//! The copy: the plan's entries written into the destination root.
//!
//! The destination path is resolved inside the root (its links stay in
//! it); everything below it is created relative to the directory
//! descriptor of its parent, which was opened without following: an
//! existing entry in the way is removed (a directory merged), never
//! written through.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use image_core::path::clean_absolute;
use image_overlay::resolve::{open_in_root, PathResolution};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::archive;
use super::owner::{resolve_chown, Chmod};
use super::walk::{dest_is_dir, lossy, open_child, open_root, Entry, ItemKind, Kind, Source};
use super::{CopyError, CopyPlan, CopyReport, CopySource, CopySpec, MAX_DEPTH};

pub(crate) fn apply(
    plan: &CopyPlan,
    source: &CopySource<'_>,
    spec: &CopySpec,
    dest_root: &Path,
) -> Result<CopyReport, CopyError> {
    let root = open_root(dest_root).map_err(|source| CopyError::Write {
        path: dest_root.display().to_string(),
        source,
    })?;
    let (uid, gid) = match &spec.chown {
        Some(c) => resolve_chown(root.as_fd(), c)?,
        None => (0, 0),
    };
    let chmod = spec.chmod.as_deref().map(Chmod::parse).transpose()?;
    let dest = if spec.dest.starts_with('/') {
        clean_absolute(&spec.dest)
    } else {
        clean_absolute(&format!("{}/{}", spec.workdir, spec.dest))
    };
    let mut link_targets = HashMap::new();
    for e in &plan.entries {
        if let Kind::Hardlink(j) = e.kind {
            link_targets.insert(j, None);
        }
    }
    let keep_owners = super::walk::keeps_owners(source, spec);
    let mut w = Writer {
        root,
        uid,
        gid,
        keep_owners,
        chmod,
        report: CopyReport::default(),
        links: link_targets,
        buf: None,
    };
    let src = match plan
        .items
        .iter()
        .any(|i| !matches!(i.kind, ItemKind::Heredoc { .. }))
    {
        true => Some(Source::new(source, &spec.sources[0])?),
        false => None,
    };
    for item in &plan.items {
        let shown = lossy(&item.path);
        let join = |base: &str, rest: &str| clean_absolute(&format!("{base}/{rest}"));
        // `--parents` keeps the source's path under the destination, which
        // must then be text to be joined and made.
        let keep_path = item.keep_text()?;
        // The directory and the name a non-directory source is written as:
        // the name keeps its bytes.
        let file_target = |w: &Writer, name: &[u8]| -> Result<(String, Vec<u8>), CopyError> {
            let split = |p: String| -> Result<(String, Vec<u8>), CopyError> {
                let (dir, leaf) = p.rsplit_once('/').unwrap_or(("", &p));
                if leaf.is_empty() {
                    return Err(CopyError::Conflict { path: p.clone() });
                }
                Ok((dir.to_owned(), leaf.as_bytes().to_vec()))
            };
            match keep_path {
                Some(k) => split(join(&dest, k)),
                None if dest_is_dir(&spec.dest) || w.is_dir(&dest)? => {
                    match std::str::from_utf8(name) {
                        Ok(name) => split(join(&dest, name)),
                        // A glob's match: one name, no `/`, not a dot.
                        Err(_) => Ok((dest.clone(), name.to_vec())),
                    }
                }
                None => split(dest.clone()),
            }
        };
        match &item.kind {
            ItemKind::Tree { first, end } => {
                let src = src.as_ref().expect("a tree item has a source");
                let entries = &plan.entries[*first..*end];
                let e0 = &entries[0];
                if e0.kind == Kind::Dir {
                    let target = match keep_path {
                        Some(k) => join(&dest, k),
                        None => dest.clone(),
                    };
                    let (dir, created) = w.mkdir_all(&target)?;
                    let sdir = src
                        .open(&item.path, OFlags::RDONLY | OFlags::DIRECTORY)
                        .map_err(|e| super::walk::read_err(&shown, e))?;
                    same(&sdir, e0, &shown)?;
                    w.tree(sdir, dir, created, entries, *first, &target)?;
                } else {
                    let (dir, name) = file_target(&w, basename(&item.path))?;
                    let target = format!("{}/{}", dir.trim_end_matches('/'), lossy(&name));
                    let parent = w.mkdir_all(&dir)?.0;
                    let sfile = match e0.kind {
                        Kind::File(_) => Some(
                            src.open(&item.path, OFlags::RDONLY | OFlags::NONBLOCK)
                                .map_err(|e| super::walk::read_err(&shown, e))?,
                        ),
                        _ => None,
                    };
                    w.entry(parent.as_fd(), &name, e0, *first, sfile, &target)?;
                }
            }
            ItemKind::Archive { entry } => {
                let src = src.as_ref().expect("an archive item has a source");
                let (dir, _) = w.mkdir_all(&dest)?;
                let f = src
                    .open(&item.path, OFlags::RDONLY | OFlags::NONBLOCK)
                    .map_err(|e| super::walk::read_err(&shown, e))?;
                same(&f, &plan.entries[*entry], &shown)?;
                let owner = spec.chown.is_some().then_some((w.uid, w.gid));
                let (files, bytes) = archive::unpack(f, dir.as_fd(), &shown, owner)?;
                w.report.files += files;
                w.report.bytes += bytes;
            }
            ItemKind::Heredoc { name, content } => {
                let (dir, leaf) = file_target(&w, name.as_bytes())?;
                let target = format!("{}/{}", dir.trim_end_matches('/'), lossy(&leaf));
                let parent = w.mkdir_all(&dir)?.0;
                let f = w.create_file(parent.as_fd(), &leaf, &target)?;
                rustix::io::write(&f, content)
                    .map_err(|e| write_err(&target, e))
                    .and_then(|n| match n == content.len() {
                        true => Ok(()),
                        false => Err(write_err(&target, Errno::NOSPC)),
                    })?;
                let now = image_core::time::now_secs();
                let meta = Meta {
                    mode: 0o644,
                    source_owner: (w.uid, w.gid),
                    mtime: (now, 0),
                };
                w.meta_fd(&f, meta, false, &target)?;
                w.report.files += 1;
                w.report.bytes += content.len() as u64;
            }
        }
    }
    Ok(w.report)
}

/// The last component of a source path.
fn basename(p: &[u8]) -> &[u8] {
    p.rsplit(|&b| b == b'/').next().unwrap_or(p)
}

struct Writer {
    root: OwnedFd,
    uid: u32,
    gid: u32,
    /// Entries keep their source's owner (`COPY --from` without `--chown`).
    keep_owners: bool,
    chmod: Option<Chmod>,
    report: CopyReport,
    /// The entries other entries hard-link to, with where they were
    /// written (their directory and name) once they are.
    links: HashMap<usize, Option<(OwnedFd, Vec<u8>)>>,
    /// The copy buffer, made at the first file.
    buf: Option<Vec<u8>>,
}

fn write_err(path: &str, e: Errno) -> CopyError {
    CopyError::Write {
        path: path.to_owned(),
        source: e.into(),
    }
}

/// Checks that what was opened is what the plan read.
fn same(fd: &OwnedFd, e: &Entry, path: &str) -> Result<(), CopyError> {
    let st = rfs::fstat(fd).map_err(|err| super::walk::read_err(path, err))?;
    if st.st_ino != e.ino {
        return Err(CopyError::Changed {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// What [`Writer::meta_fd`] sets on a written entry: its mode before
/// `--chmod`, its owner in the source before `--chown`, its mtime.
#[derive(Clone, Copy)]
struct Meta {
    mode: u32,
    source_owner: (u32, u32),
    mtime: (i64, u32),
}

impl Meta {
    fn of(e: &Entry) -> Self {
        Meta {
            mode: e.mode,
            source_owner: (e.uid, e.gid),
            mtime: e.mtime,
        }
    }
}

fn stamp(t: (i64, u32)) -> Timestamps {
    let ts = Timespec {
        tv_sec: t.0,
        tv_nsec: t.1.into(),
    };
    Timestamps {
        last_access: ts,
        last_modification: ts,
    }
}

impl Writer {
    /// True when `path` resolves (inside the root) to a directory.
    fn is_dir(&self, path: &str) -> Result<bool, CopyError> {
        match open_in_root(
            self.root.as_fd(),
            path.as_bytes(),
            OFlags::PATH,
            Mode::empty(),
            PathResolution::Auto,
        ) {
            Ok(fd) => {
                let st = rfs::fstat(&fd).map_err(|e| write_err(path, e))?;
                Ok(FileType::from_raw_mode(st.st_mode) == FileType::Directory)
            }
            Err(Errno::NOENT | Errno::NOTDIR) => Ok(false),
            Err(e) => Err(write_err(path, e)),
        }
    }

    /// Opens the directory `path` inside the root, creating what is
    /// missing (mode 0755, the copy's owner); true when the last
    /// component was created.
    fn mkdir_all(&self, path: &str) -> Result<(OwnedFd, bool), CopyError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        let mut path = clean_absolute(path);
        let mut links = 0;
        'restart: loop {
            let mut cur = open_in_root(
                self.root.as_fd(),
                b"",
                flags,
                Mode::empty(),
                PathResolution::Auto,
            )
            .map_err(|e| write_err("/", e))?;
            let mut created = false;
            let mut prefix = String::new();
            let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
            // Each component is resolved from the root: bounded, so that
            // the work (quadratic in the depth) is too.
            if comps.len() > MAX_DEPTH {
                return Err(CopyError::TooLarge {
                    what: "the destination's directory depth",
                    limit: MAX_DEPTH as u64,
                });
            }
            for (i, comp) in comps.iter().enumerate() {
                let parent = prefix.clone();
                prefix.push('/');
                prefix.push_str(comp);
                // Each existing component resolves inside the root (a link
                // to a directory is followed there, as Docker does).
                match open_in_root(
                    self.root.as_fd(),
                    prefix.as_bytes(),
                    flags,
                    Mode::empty(),
                    PathResolution::Auto,
                ) {
                    Ok(fd) => {
                        cur = fd;
                        created = false;
                        continue;
                    }
                    Err(Errno::NOENT) => {}
                    Err(e) => return Err(write_err(&prefix, e)),
                }
                match rfs::mkdirat(&cur, *comp, Mode::from_raw_mode(0o755)) {
                    Ok(()) => {}
                    // A dangling link: make its target, inside the root.
                    Err(Errno::EXIST) if links < 40 => {
                        let target = rfs::readlinkat(&cur, *comp, Vec::new())
                            .map_err(|e| write_err(&prefix, e))?;
                        let target = String::from_utf8_lossy(target.as_bytes()).into_owned();
                        let rest = comps[i + 1..].join("/");
                        let base = if target.starts_with('/') {
                            ""
                        } else {
                            parent.as_str()
                        };
                        path = clean_absolute(&format!("{base}/{target}/{rest}"));
                        links += 1;
                        continue 'restart;
                    }
                    Err(e) => return Err(write_err(&prefix, e)),
                }
                let fd = open_child(cur.as_fd(), comp.as_bytes(), true)
                    .map_err(|e| write_err(&prefix, e))?;
                rfs::fchown(
                    &fd,
                    Some(rfs::Uid::from_raw(self.uid)),
                    Some(rfs::Gid::from_raw(self.gid)),
                )
                .map_err(|e| write_err(&prefix, e))?;
                rfs::fchmod(&fd, Mode::from_raw_mode(0o755)).map_err(|e| write_err(&prefix, e))?;
                cur = fd;
                created = true;
            }
            return Ok((cur, created));
        }
    }

    /// Removes a non-directory named `name` in `dir` (a directory there is
    /// a conflict unless `dir_ok`); true when a directory is there.
    fn clear(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        dir_ok: bool,
        path: &str,
    ) -> Result<bool, CopyError> {
        match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                if dir_ok {
                    Ok(true)
                } else {
                    Err(CopyError::Conflict {
                        path: path.to_owned(),
                    })
                }
            }
            Ok(_) => {
                rfs::unlinkat(dir, name, AtFlags::empty()).map_err(|e| write_err(path, e))?;
                Ok(false)
            }
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(write_err(path, e)),
        }
    }

    fn create_file(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &str,
    ) -> Result<OwnedFd, CopyError> {
        self.clear(dir, name, false, path)?;
        rfs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| write_err(path, e))
    }

    /// The owner the copy of an entry owned by `source` gets.
    fn owner(&self, source: (u32, u32)) -> (u32, u32) {
        match self.keep_owners {
            true => source,
            false => (self.uid, self.gid),
        }
    }

    /// Gives the link or node `name` in `dir` (copied from one owned by
    /// `source`) the copy's owner.
    fn lchown(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        source: (u32, u32),
        path: &str,
    ) -> Result<(), CopyError> {
        let (uid, gid) = self.owner(source);
        rfs::chownat(
            dir,
            name,
            Some(rfs::Uid::from_raw(uid)),
            Some(rfs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|err| write_err(path, err))
    }

    /// The mode an entry of mode `mode` gets (`--chmod`).
    fn mode(&self, mode: u32, dir: bool) -> u32 {
        self.chmod.as_ref().map_or(mode, |c| c.apply(mode, dir))
    }

    /// Owner, mode and times of an open file or directory.
    fn meta_fd(&self, fd: &OwnedFd, meta: Meta, dir: bool, path: &str) -> Result<(), CopyError> {
        let Meta {
            mode,
            source_owner,
            mtime,
        } = meta;
        let (uid, gid) = self.owner(source_owner);
        rfs::fchown(
            fd,
            Some(rfs::Uid::from_raw(uid)),
            Some(rfs::Gid::from_raw(gid)),
        )
        .map_err(|e| write_err(path, e))?;
        rfs::fchmod(fd, Mode::from_raw_mode(self.mode(mode, dir)))
            .map_err(|e| write_err(path, e))?;
        rfs::futimens(fd, &stamp(mtime)).map_err(|e| write_err(path, e))
    }

    /// Copies a directory's entries (`entries[0]` is the directory) from
    /// `sdir` into `ddir`.
    fn tree(
        &mut self,
        sdir: OwnedFd,
        ddir: OwnedFd,
        created: bool,
        entries: &[Entry],
        first: usize,
        target: &str,
    ) -> Result<(), CopyError> {
        // The directories open: source, destination, entry index.
        let mut stack: Vec<(OwnedFd, OwnedFd, usize)> = vec![(sdir, ddir, 0)];
        if created {
            self.report.files += 1;
        }
        let mut paths: Vec<String> = vec![target.to_owned()];
        for (k, e) in entries.iter().enumerate().skip(1) {
            if !e.keep {
                continue;
            }
            while stack.len() > e.depth {
                let (_, d, i) = stack.pop().expect("a directory");
                let p = paths.pop().expect("a path");
                if i != 0 {
                    let e = &entries[i];
                    self.meta_fd(&d, Meta::of(e), true, &p)?;
                }
            }
            let (s, d, _) = stack.last().expect("the parent");
            let path = format!(
                "{}/{}",
                paths.last().expect("a path"),
                String::from_utf8_lossy(&e.name)
            );
            if e.kind == Kind::Dir {
                let is_dir = self.clear(d.as_fd(), &e.name, true, &path)?;
                if !is_dir {
                    rfs::mkdirat(d, &e.name[..], Mode::from_raw_mode(0o700))
                        .map_err(|err| write_err(&path, err))?;
                }
                let nd =
                    open_child(d.as_fd(), &e.name, true).map_err(|err| write_err(&path, err))?;
                let ns = open_child(s.as_fd(), &e.name, true)
                    .map_err(|err| super::walk::read_err(&path, err))?;
                same(&ns, e, &path)?;
                self.report.files += 1;
                stack.push((ns, nd, k));
                paths.push(path);
                continue;
            }
            let sfile = match e.kind {
                Kind::File(_) => {
                    let f = open_child(s.as_fd(), &e.name, false)
                        .map_err(|err| super::walk::read_err(&path, err))?;
                    Some(f)
                }
                _ => None,
            };
            let d = d.as_fd();
            self.entry(d, &e.name, e, first + k, sfile, &path)?;
        }
        while let Some((_, d, i)) = stack.pop() {
            let p = paths.pop().expect("a path");
            if i != 0 {
                let e = &entries[i];
                self.meta_fd(&d, Meta::of(e), true, &p)?;
            }
        }
        Ok(())
    }

    /// Copies the content of `from` into `to`, hashing it on the way: it
    /// must be the `size` bytes of sha256 `want` that the plan read (an
    /// in-place rewrite of the same size would otherwise put other bytes
    /// under the plan's cache key). Returns `to`.
    fn copy_checked(
        &mut self,
        from: OwnedFd,
        to: OwnedFd,
        size: u64,
        want: &[u8; 32],
        path: &str,
    ) -> Result<OwnedFd, CopyError> {
        use sha2::Digest as _;
        use std::io::{Read, Write};
        let (mut from, mut to) = (std::fs::File::from(from), std::fs::File::from(to));
        let buf = self.buf.get_or_insert_with(|| vec![0; 256 << 10]);
        let mut h = sha2::Sha256::new();
        let mut n = 0u64;
        loop {
            let k = match from.read(buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(CopyError::Read {
                        path: path.to_owned(),
                        source,
                    })
                }
            };
            n += k as u64;
            if n > size {
                break;
            }
            h.update(&buf[..k]);
            to.write_all(&buf[..k]).map_err(|source| CopyError::Write {
                path: path.to_owned(),
                source,
            })?;
        }
        if n != size || h.finalize().as_slice() != want {
            return Err(CopyError::Changed {
                path: path.to_owned(),
            });
        }
        Ok(OwnedFd::from(to))
    }

    /// Writes one non-directory entry `e` (plan index `index`) as `name`
    /// in `dir`.
    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        e: &Entry,
        index: usize,
        sfile: Option<OwnedFd>,
        path: &str,
    ) -> Result<(), CopyError> {
        match &e.kind {
            Kind::File(want) => {
                let sfile = sfile.expect("a file has its source open");
                same(&sfile, e, path)?;
                let f = self.create_file(dir, name, path)?;
                let f = self.copy_checked(sfile, f, e.size, want, path)?;
                self.meta_fd(&f, Meta::of(e), false, path)?;
                self.report.bytes += e.size;
            }
            Kind::Hardlink(j) => {
                self.clear(dir, name, false, path)?;
                let Some(Some((tdir, tname))) = self.links.get(j) else {
                    return Err(CopyError::Changed {
                        path: path.to_owned(),
                    });
                };
                rfs::linkat(tdir, &tname[..], dir, name, AtFlags::empty())
                    .map_err(|err| write_err(path, err))?;
            }
            Kind::Symlink(t) => {
                self.clear(dir, name, false, path)?;
                rfs::symlinkat(&t[..], dir, name).map_err(|err| write_err(path, err))?;
                self.lchown(dir, name, (e.uid, e.gid), path)?;
                rfs::utimensat(dir, name, &stamp(e.mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|err| write_err(path, err))?;
            }
            Kind::Special(t, dev) => {
                self.clear(dir, name, false, path)?;
                rfs::mknodat(dir, name, *t, Mode::from_raw_mode(0o600), *dev)
                    .map_err(|err| write_err(path, err))?;
                self.lchown(dir, name, (e.uid, e.gid), path)?;
                rfs::chmodat(
                    dir,
                    name,
                    Mode::from_raw_mode(self.mode(e.mode, false)),
                    AtFlags::empty(),
                )
                .map_err(|err| write_err(path, err))?;
                rfs::utimensat(dir, name, &stamp(e.mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|err| write_err(path, err))?;
            }
            Kind::Dir => unreachable!("directories are written by tree"),
        }
        if let Some(slot) = self.links.get_mut(&index) {
            let d = rfs::openat(dir, ".", OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
                .map_err(|err| write_err(path, err))?;
            *slot = Some((d, name.to_vec()));
        }
        self.report.files += 1;
        Ok(())
    }
}
