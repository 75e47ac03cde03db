//! The host side of a RUN's mounts: each [`MountSpec`] made into a
//! directory or file of the host that the container gets bind-mounted at
//! the mount's target, and undone after the run ([`Prepared`]'s drop).
//!
//! - bind: the source resolved inside its root (`openat2` with
//!   `RESOLVE_IN_ROOT`: a link in the context or a stage's root resolves
//!   inside it, never out), opened `O_PATH`, and that descriptor
//!   bind-mounted (`/proc/self/fd/<n>`) on a throwaway directory of ours,
//!   which the container gets: what it mounts is the file resolved,
//!   whatever replaces a name on the source's path meanwhile (the
//!   container's mount namespace cannot bind a descriptor of ours
//!   itself); mounted read-only; with `rw`, an overlay whose
//!   lower directory is that bind and whose upper directory is thrown
//!   away (a single file: a throwaway copy);
//! - cache: the id's directory under [`cache_dir_root`], made (seeded,
//!   then renamed into place) on first use; `locked` holds (waiting, the
//!   interrupt honoured) an exclusive
//!   `flock` on its lock file for the run, `private` takes it without
//!   waiting and, when busy, mounts a new empty directory thrown away
//!   after;
//! - tmpfs: a tmpfs of the given size;
//! - secret: a file on a private tmpfs (so its bytes never reach a disk
//!   of ours), or a `KEY=value` for the run's environment only.
//!
//! Each throwaway directory (`run-mount-*` in [`Setup::work`]) is held
//! with a `flock` while its RUN lasts; one nobody holds is a killed
//! build's, and the next RUN with a mount [`sweep`]s it: a secret's
//! tmpfs is not left mounted, with the secret, after a crash.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use image_overlay::mount::{Mount, MountGuard, SysMounter};
use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use super::{cache_dir_root, CacheMount, MountSpec, SecretMount, MAX_SECRET};
use crate::context::Context;
use crate::copy::{self, CopySource, CopySpec};

/// A secret's value, given by the build's caller. Its `Debug` form shows
/// only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret of `bytes`.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }

    /// Its bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Setting up a RUN's mounts failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A `required` secret the caller did not give.
    #[error("the secret {id:?} is required and was not given")]
    SecretMissing {
        /// Its id.
        id: String,
    },
    /// A secret larger than [`MAX_SECRET`], or not UTF-8 for `env=`.
    #[error("the secret {id:?} {reason}")]
    SecretValue {
        /// Its id.
        id: String,
        /// Why.
        reason: &'static str,
    },
    /// A bind or seed source that cannot be used.
    #[error("the mount source {path:?} {reason}")]
    Source {
        /// The source, as given.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// A `from` that names nothing the build made ready.
    #[error("--mount from={0} names no stage or image of the build")]
    From(String),
    /// A file or directory of the host could not be made or read.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A tmpfs or overlay could not be mounted.
    #[error("mounting a {what} at {path}")]
    Mount {
        /// The kind of mount.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        #[source]
        source: Box<image_overlay::MountError>,
    },
    /// The interrupt was set while waiting for a locked cache mount.
    #[error("interrupted waiting for the cache mount {id}")]
    Cancelled {
        /// The cache id.
        id: String,
    },
    /// Copying a cache mount's seed failed.
    #[error("seeding the cache mount {id}")]
    Seed {
        /// The cache id.
        id: String,
        /// The copy's error.
        #[source]
        source: Box<copy::CopyError>,
    },
    /// Copying what a bind of the context shows (the context has ignore
    /// rules) failed.
    #[error("copying the context's {path:?} for a bind mount")]
    ContextCopy {
        /// The source, as given.
        path: String,
        /// The copy's error.
        #[source]
        source: Box<copy::CopyError>,
    },
}

impl image_core::Classify for SetupError {
    fn kind(&self) -> image_core::ErrorKind {
        use image_core::ErrorKind;
        match self {
            SetupError::SecretMissing { .. } => ErrorKind::NotFound,
            SetupError::Cancelled { .. } => ErrorKind::Cancelled,
            SetupError::SecretValue { .. } | SetupError::Source { .. } | SetupError::From(_) => {
                ErrorKind::InvalidInput
            }
            SetupError::Io { source, .. } => ErrorKind::from_io(source),
            SetupError::Mount { source, .. } => source.kind(),
            SetupError::Seed { source, .. } | SetupError::ContextCopy { source, .. } => {
                source.kind()
            }
        }
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SetupError {
    let path = path.to_owned();
    move |source| SetupError::Io { what, path, source }
}

/// A bind mount the container gets: a host path at a container path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostBind {
    /// The host file or directory.
    pub source: PathBuf,
    /// The absolute path in the container.
    pub destination: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// What a RUN's mounts need while it runs; dropping it unmounts the
/// tmpfs and overlays, removes the throwaway directories and releases the
/// locks (the cache locks, the throwaway directories' own), in that
/// order.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The binds to give the container.
    pub binds: Vec<HostBind>,
    /// `KEY=value` entries for the run's environment (secrets with `env=`).
    pub env: Vec<String>,
    /// What did not stop the RUN but the user should hear of (a stale
    /// directory a sweep could not remove, [`Swept::warnings`]).
    pub warnings: Vec<String>,
    // Dropped in declaration order: mounts, then their directories, then
    // the locks.
    mounts: Vec<MountGuard<SysMounter>>,
    dirs: Vec<tempfile::TempDir>,
    locks: Vec<OwnedFd>,
}

/// What setting up mounts reads: where to make throwaway directories, the
/// runtime's state directory (for the cache mounts), the caller's secrets,
/// the context and the mounted roots of the stages and images named by
/// `from`.
pub struct Setup<'a> {
    /// A directory for throwaway directories (on a filesystem overlayfs
    /// takes as upper directory).
    pub work: &'a Path,
    /// The runtime's state directory ([`cache_dir_root`] of it).
    pub state: &'a Path,
    /// The caller's secrets.
    pub secrets: &'a BTreeMap<String, Secret>,
    /// The build context.
    pub context: &'a Context,
    /// The root of each `from` the mounts name, mounted.
    pub roots: &'a BTreeMap<String, PathBuf>,
    /// Stops a wait for a `sharing=locked` cache mount another build
    /// holds ([`SetupError::Cancelled`]).
    pub interrupt: Option<&'a image_core::Interrupt>,
    /// For the specs given to [`Setup::prepare`] (by index), how each bind
    /// of the context shows it when the context has ignore rules, from the
    /// walk that keyed the RUN; a bind with none here is copied for its
    /// RUN alone.
    pub views: &'a [Option<ContextView>],
    /// The build's shared filtered copies ([`ContextView::Filtered`]);
    /// None: each is copied for its RUN alone.
    pub copies: Option<&'a ContextCopies>,
}

/// How a RUN shows a bind of the context when the context has ignore
/// rules, decided from the walk that keyed the RUN (a `COPY` plan of the
/// source from the context).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextView {
    /// The rules exclude nothing under the source: it is bound as it is,
    /// as without rules (no copy).
    Whole,
    /// They exclude something: the filtered copy of the source whose plan
    /// has this digest, made once for the build ([`ContextCopies`]).
    Filtered(image_core::Digest),
}

/// The filtered copies of the context that one build's RUNs share, one
/// for each source and content ([`ContextView::Filtered`]): made by the
/// first RUN that binds it, in a throwaway directory of [`Setup::work`]
/// held (`flock`) until the build drops this, which removes them.
#[derive(Debug, Default)]
pub struct ContextCopies {
    made: std::sync::Mutex<BTreeMap<(String, image_core::Digest), SharedCopy>>,
}

#[derive(Debug)]
struct SharedCopy {
    /// The copy of the source (a directory, or a file in one).
    path: PathBuf,
    // Dropped in order: the directory removed, then its lock let go.
    _dir: tempfile::TempDir,
    _lock: OwnedFd,
}

impl Setup<'_> {
    /// Makes the host side of `specs`.
    ///
    /// # Errors
    /// [`SetupError`]; what was made before the failure is undone.
    pub fn prepare(&self, specs: &[MountSpec]) -> Result<Prepared, SetupError> {
        let mut p = Prepared::default();
        if !specs.is_empty() {
            p.warnings.extend(sweep(self.work)?.warnings());
        }
        for (i, spec) in specs.iter().enumerate() {
            match spec {
                MountSpec::Bind(b) => {
                    let resolved = self.resolve(b.from.as_deref(), &b.source)?;
                    let filtered = b.from.is_none() && has_ignore_rules(self.context);
                    let view = self.views.get(i).and_then(Option::as_ref);
                    let shared = match (view, self.copies) {
                        (Some(ContextView::Filtered(digest)), Some(copies)) if filtered => {
                            Some(self.shared_copy(copies, &resolved, &b.source, digest)?)
                        }
                        _ => None,
                    };
                    let source = if let Some(shared) = shared {
                        // The build's copy, which no RUN may change.
                        if b.rw {
                            self.throwaway(&mut p, &shared, &b.source)?
                        } else {
                            shared
                        }
                    } else if filtered && view != Some(&ContextView::Whole) {
                        // A copy for this RUN alone: rw as it is.
                        let tree = self.temp_dir(&mut p)?.join("tree");
                        self.context_copy(&tree, &resolved, &b.source)?
                    } else {
                        let source = self.pin(&mut p, &resolved)?;
                        if b.rw {
                            self.throwaway(&mut p, &source, &b.source)?
                        } else {
                            source
                        }
                    };
                    p.binds.push(HostBind {
                        source,
                        destination: b.target.clone(),
                        read_only: !b.rw,
                    });
                }
                MountSpec::Cache(c) => {
                    let source = self.cache(&mut p, c)?;
                    p.binds.push(HostBind {
                        source,
                        destination: c.target.clone(),
                        read_only: c.read_only,
                    });
                }
                MountSpec::Tmpfs(t) => {
                    let mut options = vec!["mode=755".to_owned()];
                    if let Some(size) = t.size {
                        options.push(format!("size={size}"));
                    }
                    let source = self.tmpfs(&mut p, options)?;
                    p.binds.push(HostBind {
                        source,
                        destination: t.target.clone(),
                        read_only: false,
                    });
                }
                MountSpec::Secret(s) => self.secret(&mut p, s)?,
            }
        }
        Ok(p)
    }

    /// A new throwaway directory under `work`, locked (`flock`) by this
    /// process until `p` is dropped, so that [`sweep`] leaves it alone.
    fn temp_dir(&self, p: &mut Prepared) -> Result<PathBuf, SetupError> {
        std::fs::create_dir_all(self.work).map_err(io("making", self.work))?;
        let (dir, lock) =
            locked_dir(self.work, THROWAWAY).map_err(io("making a directory in", self.work))?;
        let path = dir.path().to_owned();
        p.dirs.push(dir);
        p.locks.push(lock);
        Ok(path)
    }

    /// The file `resolved` holds, bound read-only on a new throwaway
    /// directory (a directory) or on a file in one (anything else): a
    /// path only this build makes and names, for the container to bind.
    /// The bind is of the descriptor (`/proc/self/fd/<n>`: the kernel
    /// follows the magic link to the very file), never of a name in the
    /// source's root, so a link swapped in since it was resolved is not
    /// followed; no file is opened (a FIFO or device is bound as itself).
    /// Read-only and not recursive, so that a removal of the throwaway
    /// directory that found it still mounted could change nothing of the
    /// source.
    fn pin(&self, p: &mut Prepared, resolved: &OwnedFd) -> Result<PathBuf, SetupError> {
        let dir = self.temp_dir(p)?;
        let held = PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(resolved)
        ));
        let st = rustix::fs::fstat(resolved).map_err(|e| io("looking at", &held)(e.into()))?;
        let is_dir = rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir();
        let target = (!is_dir).then(|| PathBuf::from("file"));
        if let Some(t) = &target {
            let point = dir.join(t);
            std::fs::File::create_new(&point).map_err(io("making", &point))?;
        }
        let m = Mount {
            fs_type: "bind".to_owned(),
            source: held.to_string_lossy().into_owned(),
            target: target.clone(),
            options: vec!["bind".to_owned(), "ro".to_owned()],
        };
        let guard =
            MountGuard::mount(SysMounter, &[m], &dir).map_err(|source| SetupError::Mount {
                what: "bind",
                path: dir.clone(),
                source: Box::new(source),
            })?;
        p.mounts.push(guard);
        Ok(target.map_or(dir.clone(), |t| dir.join(t)))
    }

    /// A new tmpfs with `options`, mounted on a throwaway directory.
    fn tmpfs(&self, p: &mut Prepared, options: Vec<String>) -> Result<PathBuf, SetupError> {
        let dir = self.temp_dir(p)?;
        mount_on(p, "tmpfs", options, dir)
    }

    /// `source` inside the root of `from` (the context when `None`),
    /// every link resolved inside that root, opened `O_PATH`.
    fn resolve(&self, from: Option<&str>, source: &str) -> Result<OwnedFd, SetupError> {
        match from {
            None => open_in_context(self.context, source),
            Some(f) => {
                let path = self
                    .roots
                    .get(f)
                    .ok_or_else(|| SetupError::From(f.to_owned()))?;
                let root = rustix::fs::open(
                    path,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io("opening", path)(e.into()))?;
                open_in(&root, source)
            }
        }
    }

    /// What a bind of the context shows of `resolved` (the source `given`,
    /// resolved in the context) when the context has ignore rules: a copy,
    /// in `tree` (made here, in a throwaway directory), made as a `COPY` of it from the context
    /// makes it, so that what the rules leave out is not there (as in
    /// BuildKit, whose context holds only what they let through).
    fn context_copy(
        &self,
        tree: &Path,
        resolved: &OwnedFd,
        given: &str,
    ) -> Result<PathBuf, SetupError> {
        let rel = context_relative(self.context, resolved, given)?;
        std::fs::create_dir(tree).map_err(io("making", tree))?;
        let spec = CopySpec::new(vec![rel.clone()], "/".to_owned(), "/".to_owned());
        let source = CopySource::Context(self.context);
        let failed = |e| SetupError::ContextCopy {
            path: given.to_owned(),
            source: Box::new(e),
        };
        let plan = copy::plan(&source, &spec).map_err(failed)?;
        copy::apply(&plan, &source, &spec, tree).map_err(failed)?;
        let st = rustix::fs::fstat(resolved).map_err(|e| io("looking at", tree)(e.into()))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir() {
            return Ok(tree.to_owned());
        }
        // A file is copied into the directory under its name.
        let name = rel.rsplit('/').next().unwrap_or(&rel);
        Ok(tree.join(name))
    }

    /// The build's filtered copy of `resolved` (the source `given`) whose
    /// plan had `digest` when the RUN was keyed: the one made before, else
    /// made now ([`Setup::context_copy`]) and kept in `copies` for the
    /// build's other RUNs.
    fn shared_copy(
        &self,
        copies: &ContextCopies,
        resolved: &OwnedFd,
        given: &str,
        digest: &image_core::Digest,
    ) -> Result<PathBuf, SetupError> {
        let key = (
            context_relative(self.context, resolved, given)?,
            digest.clone(),
        );
        // Held while the copy is made: another stage's RUN of the same
        // source waits for it rather than making its own.
        let mut made = copies.made.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = made.get(&key) {
            return Ok(c.path.clone());
        }
        std::fs::create_dir_all(self.work).map_err(io("making", self.work))?;
        let (dir, lock) =
            locked_dir(self.work, THROWAWAY).map_err(io("making a directory in", self.work))?;
        let path = self.context_copy(&dir.path().join("tree"), resolved, given)?;
        made.insert(
            key,
            SharedCopy {
                path: path.clone(),
                _dir: dir,
                _lock: lock,
            },
        );
        Ok(path)
    }

    /// A writable throwaway view of `source` (`given` in the Dockerfile):
    /// an overlay on it (a directory) or a copy (a regular file; anything
    /// else, a FIFO or a device node, is refused before it is opened).
    fn throwaway(
        &self,
        p: &mut Prepared,
        source: &Path,
        given: &str,
    ) -> Result<PathBuf, SetupError> {
        let md = std::fs::symlink_metadata(source).map_err(io("looking at", source))?;
        let dir = self.temp_dir(p)?;
        if !md.is_dir() {
            // A device is never opened (an open has effects); the file is
            // opened without following a link and without blocking, and
            // looked at again through the descriptor: what is copied is a
            // regular file, whatever replaced its name meanwhile.
            let refused = || SetupError::Source {
                path: given.to_owned(),
                reason: "is neither a regular file nor a directory (rw copies it)",
            };
            if !md.is_file() {
                return Err(refused());
            }
            let from: std::fs::File = rustix::fs::open(
                source,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| match e {
                Errno::LOOP => refused(),
                e => io("opening", source)(e.into()),
            })?
            .into();
            if !from.metadata().map_err(io("looking at", source))?.is_file() {
                return Err(refused());
            }
            let copy = dir.join("file");
            let mut to = std::fs::File::create_new(&copy).map_err(io("making", &copy))?;
            std::io::copy(&mut &from, &mut to).map_err(io("copying", source))?;
            to.set_permissions(md.permissions())
                .map_err(io("changing the mode of", &copy))?;
            return Ok(copy);
        }
        let text = source.to_string_lossy();
        if text.contains([',', ':', '\\']) || text != source.as_os_str().to_str().unwrap_or("") {
            return Err(SetupError::Source {
                path: text.into_owned(),
                reason: "has a name overlayfs cannot take (',', ':', '\\' or not UTF-8)",
            });
        }
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
        for d in [&upper, &work, &merged] {
            std::fs::create_dir(d).map_err(io("making", d))?;
        }
        let options = vec![
            format!("lowerdir={text}"),
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.display()),
        ];
        mount_on(p, "overlay", options, merged)
    }

    /// The cache directory of `c`, locked as its sharing asks.
    fn cache(&self, p: &mut Prepared, c: &CacheMount) -> Result<PathBuf, SetupError> {
        use super::Sharing;
        let root = cache_dir_root(self.state);
        std::fs::create_dir_all(&root).map_err(io("making", &root))?;
        let name = c.id.escaped();
        let dir = root.join(&name);
        if c.sharing != Sharing::Shared {
            let lock_path = root.join(format!("{name}.lock"));
            let lock = rustix::fs::open(
                &lock_path,
                OFlags::CREATE | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| io("opening the lock", &lock_path)(e.into()))?;
            let mut locked = rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive);
            // Locked: waited for, the interrupt looked at meanwhile (a
            // blocking flock would not return on Ctrl-C).
            while c.sharing == Sharing::Locked && locked == Err(Errno::WOULDBLOCK) {
                if self.interrupt.is_some_and(image_core::Interrupt::is_set) {
                    return Err(SetupError::Cancelled {
                        id: c.id.to_string(),
                    });
                }
                std::thread::sleep(LOCK_POLL);
                locked = rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive);
            }
            match locked {
                Ok(()) => p.locks.push(lock),
                Err(Errno::WOULDBLOCK) => {
                    // Private and busy: a new directory for this run only.
                    let fresh = self.temp_dir(p)?.join("cache");
                    self.make_cache_dir(&fresh, c)?;
                    return Ok(fresh);
                }
                Err(e) => return Err(io("locking", &lock_path)(e.into())),
            }
        }
        match std::fs::symlink_metadata(&dir) {
            Ok(md) if md.is_dir() => return Ok(dir),
            Ok(_) => {
                return Err(SetupError::Source {
                    path: dir.display().to_string(),
                    reason: "is not a directory",
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("looking at", &dir)(e)),
        }
        // Made in a directory of its own, locked while it is made (builds
        // in threads may make the same id at once: the first rename wins),
        // which a killed build leaves for the next maker to sweep.
        let swept = sweep_staging(&root).map_err(io("sweeping", &root))?;
        p.warnings.extend(swept.warnings());
        let (staging, _lock) =
            locked_dir(&root, NEW).map_err(io("making a directory in", &root))?;
        let new = staging.path().join(&name);
        self.make_cache_dir(&new, c)?;
        match std::fs::rename(&new, &dir) {
            Ok(()) => Ok(dir),
            // Another build made it first: theirs is kept (ours goes with
            // `staging`).
            Err(_) if dir.is_dir() => Ok(dir),
            Err(e) => Err(io("renaming into place", &dir)(e)),
        }
    }

    /// A new cache directory at `dir`: seeded, then given its mode and
    /// owner.
    fn make_cache_dir(&self, dir: &Path, c: &CacheMount) -> Result<(), SetupError> {
        std::fs::create_dir(dir).map_err(io("making", dir))?;
        if c.from.is_some() || !c.source.is_empty() {
            let root;
            let source = match c.from.as_deref() {
                None => CopySource::Context(self.context),
                Some(f) => {
                    root = self
                        .roots
                        .get(f)
                        .ok_or_else(|| SetupError::From(f.to_owned()))?;
                    CopySource::Root(root)
                }
            };
            let from = if c.source.is_empty() {
                ".".to_owned()
            } else {
                c.source.clone()
            };
            let spec = CopySpec::new(vec![from], "/".to_owned(), "/".to_owned());
            let seed = |e| SetupError::Seed {
                id: c.id.to_string(),
                source: Box::new(e),
            };
            let plan = copy::plan(&source, &spec).map_err(seed)?;
            copy::apply(&plan, &source, &spec, dir).map_err(seed)?;
        }
        let fd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io("opening", dir)(e.into()))?;
        rustix::fs::fchown(
            &fd,
            Some(rustix::fs::Uid::from_raw(c.uid)),
            Some(rustix::fs::Gid::from_raw(c.gid)),
        )
        .map_err(|e| io("changing the owner of", dir)(e.into()))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(c.mode))
            .map_err(|e| io("changing the mode of", dir)(e.into()))
    }

    /// `s` as a file on a private tmpfs, or an environment entry.
    fn secret(&self, p: &mut Prepared, s: &SecretMount) -> Result<(), SetupError> {
        let Some(value) = self.secrets.get(&s.id) else {
            if s.required {
                return Err(SetupError::SecretMissing { id: s.id.clone() });
            }
            return Ok(());
        };
        let bytes = value.bytes();
        if bytes.len() > MAX_SECRET {
            return Err(SetupError::SecretValue {
                id: s.id.clone(),
                reason: "is larger than 500 KiB",
            });
        }
        if let Some(env) = &s.env {
            let text = std::str::from_utf8(bytes).map_err(|_| SetupError::SecretValue {
                id: s.id.clone(),
                reason: "is not UTF-8 text, as an environment variable must be",
            })?;
            p.env.push(format!("{env}={text}"));
        }
        let Some(target) = &s.target else {
            return Ok(());
        };
        let dir = self.tmpfs(
            p,
            vec![
                "mode=700".to_owned(),
                format!("size={}", MAX_SECRET + 64 * 1024),
            ],
        )?;
        let file = dir.join("secret");
        write_secret(&file, bytes, s).map_err(io("writing the secret file", &file))?;
        p.binds.push(HostBind {
            source: file,
            destination: target.clone(),
            read_only: true,
        });
        Ok(())
    }
}

/// How often a wait for a locked cache mount tries the lock again.
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// The name prefix of a RUN's throwaway directories in [`Setup::work`].
const THROWAWAY: &str = "run-mount-";

/// The name prefix of a directory in a cache mount root in which a cache
/// directory is being made (seeded, then renamed out).
pub(crate) const NEW: &str = ".new-";

/// The name prefix of a directory in a cache mount root in which an
/// imported cache mount is being unpacked (then renamed out).
pub(crate) const IMPORT: &str = ".import-";

/// A new directory in `parent` named `prefix` and a random part, locked
/// (`flock`) by this process while the descriptor returned is open (the
/// kernel releases the lock when the process dies), so that a sweep of
/// `parent` ([`sweep`], [`sweep_staging`]) leaves it alone meanwhile.
/// The directory is removed when the `TempDir` is dropped.
///
/// # Errors
/// The I/O error.
pub(crate) fn locked_dir(
    parent: &Path,
    prefix: &str,
) -> std::io::Result<(tempfile::TempDir, OwnedFd)> {
    // A sweep in another process may take the directory between its
    // creation and its lock (it is not locked yet): then it is no longer
    // the one at its name, and another is made.
    for _ in 0..8 {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(parent)?;
        let lock = open_dir(dir.path())?;
        match rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            // A sweep took it first: it goes, another is made.
            Err(Errno::WOULDBLOCK) => continue,
            Err(e) => return Err(e.into()),
        }
        let ours = rustix::fs::fstat(&lock)?;
        let named = rustix::fs::lstat(dir.path());
        if named.is_ok_and(|n| (n.st_dev, n.st_ino) == (ours.st_dev, ours.st_ino)) {
            return Ok((dir, lock));
        }
    }
    Err(std::io::Error::other(
        "removed as soon as made, again and again",
    ))
}

/// What a sweep removed, and what it could not.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Swept {
    /// Directories removed.
    pub removed: usize,
    /// Directories no process held that could not be removed (a mount
    /// left on something inside, a read-only file system), left where they
    /// are with the error: the next sweep tries them again.
    pub left: Vec<(PathBuf, std::io::Error)>,
}

impl Swept {
    /// One line for each directory left, for the build's warnings.
    pub fn warnings(&self) -> Vec<String> {
        self.left
            .iter()
            .map(|(path, e)| {
                format!(
                    "could not remove {} (left by a build that stopped): {e}",
                    path.display()
                )
            })
            .collect()
    }
}

/// Removes from `parent` the directories named with one of `prefixes`
/// that no process holds (their maker's `flock`, see [`locked_dir`]),
/// calling `undo` on each first. An entry that is not a directory (a
/// link) is left alone; one that cannot be removed is skipped and listed
/// in [`Swept::left`], so that one stuck directory does not stop every
/// later RUN or import.
fn sweep_unheld(parent: &Path, prefixes: &[&str], undo: impl Fn(&Path)) -> std::io::Result<Swept> {
    let entries = match std::fs::read_dir(parent) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Swept::default()),
        Err(e) => return Err(e),
    };
    let mut swept = Swept::default();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if !prefixes
            .iter()
            .any(|p| name.as_encoded_bytes().starts_with(p.as_bytes()))
        {
            continue;
        }
        let path = entry.path();
        let Ok(lock) = open_dir(&path) else { continue };
        match rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => continue,
            Err(e) => return Err(e.into()),
        }
        undo(&path);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => swept.removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => swept.left.push((path, e)),
        }
    }
    Ok(swept)
}

/// Removes from the cache mount root `root` the directories a killed
/// build or import left half-made ([`NEW`], [`IMPORT`]), once no process
/// holds them ([`Swept`]).
///
/// # Errors
/// The I/O error of listing `root` or locking an entry.
pub(crate) fn sweep_staging(root: &Path) -> std::io::Result<Swept> {
    sweep_unheld(root, &[NEW, IMPORT], |_| {})
}

fn open_dir(path: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Removes from `work` (a [`Setup::work`]) the throwaway directories of
/// RUNs whose process is gone without undoing its mounts (killed in the
/// middle of a RUN): each is unmounted (lazily: a container left running
/// may still hold it) and removed, with what it held (a secret's tmpfs,
/// a `rw` bind's writes). A directory is another process's while that
/// process holds its `flock`, which the kernel releases when it dies.
/// [`Setup::prepare`] sweeps before it makes anything; returns what went
/// and what could not ([`Swept`]: skipped, for the build's warnings).
///
/// # Errors
/// [`SetupError::Io`] when `work` cannot be listed or an entry locked.
pub fn sweep(work: &Path) -> Result<Swept, SetupError> {
    sweep_unheld(work, &[THROWAWAY], |path| {
        // What a RUN mounts there: a tmpfs or a bind on the directory
        // itself, a bind on its `file`, or an overlay on its `merged`
        // (never a link: NOFOLLOW).
        use image_overlay::mount::Mounter;
        for point in [path.join("file"), path.to_owned(), path.join("merged")] {
            for _ in 0..8 {
                if SysMounter.unmount(&point, true).is_err() {
                    break;
                }
            }
        }
    })
    .map_err(io("sweeping", work))
}

/// A mount of type `fs` (`tmpfs`, `overlay`) with `options` on `dir`,
/// kept in `p` until it is dropped; `dir` back.
fn mount_on(
    p: &mut Prepared,
    fs: &'static str,
    options: Vec<String>,
    dir: PathBuf,
) -> Result<PathBuf, SetupError> {
    let m = Mount {
        fs_type: fs.to_owned(),
        source: fs.to_owned(),
        target: None,
        options,
    };
    let guard = MountGuard::mount(SysMounter, &[m], &dir).map_err(|source| SetupError::Mount {
        what: fs,
        path: dir.clone(),
        source: Box::new(source),
    })?;
    p.mounts.push(guard);
    Ok(dir)
}

fn write_secret(file: &Path, bytes: &[u8], s: &SecretMount) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc_nofollow())
        .open(file)?;
    f.write_all(bytes)?;
    std::os::unix::fs::fchown(&f, Some(s.uid), Some(s.gid))?;
    f.set_permissions(std::fs::Permissions::from_mode(s.mode))
}

fn libc_nofollow() -> i32 {
    OFlags::NOFOLLOW.bits() as i32
}

/// The host path of `source` in the build context, every link resolved
/// inside the context (`RESOLVE_IN_ROOT`).
///
/// # Errors
/// [`SetupError::Source`] when the build has no context, or `source` is
/// missing; [`SetupError::Io`].
pub fn resolve_in_context(context: &Context, source: &str) -> Result<PathBuf, SetupError> {
    fd_path(&open_in_context(context, source)?)
}

/// Whether the context has ignore rules (then what a bind of it shows is
/// a copy that leaves out what they exclude).
pub fn has_ignore_rules(context: &Context) -> bool {
    context.ignore().is_some_and(|i| !i.patterns().is_empty())
}

/// The path of `source` in the context, resolved there (every link
/// followed inside it, as a bind's source is): relative to the context's
/// root, `/`-separated, `.` for the root itself, so that a `COPY` from the
/// context reads it with its ignore rules.
///
/// # Errors
/// As [`resolve_in_context`]; [`SetupError::Source`] for a path that is
/// not UTF-8.
pub fn context_path(context: &Context, source: &str) -> Result<String, SetupError> {
    context_relative(context, &open_in_context(context, source)?, source)
}

/// [`context_path`] of the file `resolved` (opened in the context).
fn context_relative(
    context: &Context,
    resolved: &OwnedFd,
    given: &str,
) -> Result<String, SetupError> {
    let dir = context.dir().ok_or_else(|| SetupError::Source {
        path: given.to_owned(),
        reason: "is in the context, and the build has none",
    })?;
    let host = fd_path(resolved)?;
    let root = fd_path(&dir)?;
    let rel = host.strip_prefix(&root).map_err(|_| SetupError::Source {
        path: given.to_owned(),
        reason: "resolves outside its root",
    })?;
    let rel = rel.to_str().ok_or(SetupError::Source {
        path: given.to_owned(),
        reason: "resolves to a path that is not UTF-8",
    })?;
    Ok(if rel.is_empty() {
        ".".to_owned()
    } else {
        rel.to_owned()
    })
}

/// `source` in the context, opened as [`open_in`] opens it.
fn open_in_context(context: &Context, source: &str) -> Result<OwnedFd, SetupError> {
    let dir = context.dir().ok_or_else(|| SetupError::Source {
        path: source.to_owned(),
        reason: "is in the context, and the build has none",
    })?;
    open_in(&dir, source)
}

/// `source` under the directory `root`, every link resolved inside it,
/// opened `O_PATH`; its path checked to be beneath `root`'s own path.
fn open_in(root: &impl AsFd, source: &str) -> Result<OwnedFd, SetupError> {
    // openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), or the component
    // walk where a seccomp filter refuses it or the kernel lacks it.
    let fd = image_overlay::resolve::open_in_root(
        root.as_fd(),
        source.as_bytes(),
        OFlags::PATH,
        Mode::empty(),
        image_overlay::PathResolution::Auto,
    )
    .map_err(|e| match e {
        Errno::NOENT | Errno::NOTDIR => SetupError::Source {
            path: source.to_owned(),
            reason: "does not exist",
        },
        e => io("opening the mount source", Path::new(source))(e.into()),
    })?;
    let host = fd_path(&fd)?;
    if !host.starts_with(fd_path(root)?) {
        return Err(SetupError::Source {
            path: source.to_owned(),
            reason: "resolves outside its root",
        });
    }
    Ok(fd)
}

/// The path the kernel gives the open `fd`.
fn fd_path(fd: &impl AsFd) -> Result<PathBuf, SetupError> {
    let link = format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd.as_fd())
    );
    std::fs::read_link(&link).map_err(io("reading", Path::new(&link)))
}
