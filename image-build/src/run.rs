//! `RUN`: a command run in a container on a build step's snapshot, whose
//! changes become the step's layer.
//!
//! [`RunSpec::from_instruction`] turns a parsed `RUN` into the argv as
//! BuildKit's Dockerfile frontend does (shell form through the stage's
//! `SHELL`, exec form as is, heredocs; see its docs). `run` (feature
//! `runtime`) runs it
//! through image-runtime on the mounts of an active snapshot the caller
//! prepared: no terminal, stdin empty, stdout and stderr delivered line by
//! line as they come, the interrupt honoured, the container deleted
//! afterwards whatever happened.
//!
//! # The mount points the runtime makes
//! A container gets `/proc`, `/dev`, `/sys`, `/etc/hosts`,
//! `/etc/hostname`, `/etc/resolv.conf` ... mounted; where the root
//! filesystem has no such path, the runtime creates an empty directory or
//! file to mount on, which would end up in the layer. As BuildKit's
//! executor does (its mount-stub cleaner), `run` notes which of those
//! paths are missing before the run (each resolved inside the root as
//! the runtime resolves it: through an image's `/run -> /etc` the stub is
//! `/etc/...`) and removes them afterwards when they
//! are still empty, then gives their parent directory its old
//! modification time back, so that a comparison of the snapshot with its
//! parent sees only the command's changes. On an overlay snapshot an
//! empty parent directory that the stub's creation copied up into the
//! upper directory, identical to its lower one, is removed from the upper
//! directory too (see `run`'s `# Security`).
//!
//! The working directory is created when missing, as Docker's and
//! BuildKit's `RUN` do, owned by the command's user (BuildKit's executor
//! makes it with its user's identity); it stays in the layer.

use std::str::FromStr;

use crate::dockerfile::{CommandLine, Run};
use crate::mounts::{HostBind, MountError, MountSpec};

/// Where the files of [`RunSpec::files`] are in the container: BuildKit's
/// read-only mount for a heredoc with a shebang. It is inside the
/// container's `/dev` (a tmpfs), so its mount point is never in the layer.
pub const FILES_DIR: &str = "/dev/pipes";

/// How many lines of output a failure keeps ([`RunError::Failed`]).
pub const LAST_LINES: usize = 10;

/// The longest line delivered whole: a longer one is delivered in pieces
/// of this size, so a command writing without newlines is held in bounded
/// memory.
pub const MAX_LINE: usize = 64 * 1024;

/// The shell of a shell-form command when the stage sets no `SHELL`.
pub const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// `RUN --network`: the container's network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Network {
    /// A network namespace with only loopback (`none`, and `default`:
    /// there is no other network here). The default.
    #[default]
    None,
    /// The host's network namespace (`host`).
    Host,
}

impl FromStr for Network {
    type Err = RunError;

    /// `none`, `default` (as `none`) or `host`.
    fn from_str(s: &str) -> Result<Network, RunError> {
        match s {
            "none" | "default" => Ok(Network::None),
            "host" => Ok(Network::Host),
            other => Err(RunError::Network {
                value: other.to_owned(),
            }),
        }
    }
}

/// One `RUN`, ready to run: the final argv and its surroundings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// The argv (the program first).
    pub args: Vec<String>,
    /// `KEY=value` entries: the stage's `Env` and, for this run only, the
    /// build args.
    pub env: Vec<String>,
    /// `USER` (`name`, `uid`, `name:group`, `uid:gid`; names resolved in the
    /// container's `/etc/passwd` and `/etc/group`); `None` is root.
    pub user: Option<String>,
    /// `WORKDIR` (absolute; empty is `/`), created when missing.
    pub workdir: String,
    /// `--network`.
    pub network: Network,
    /// Files the command needs, `(name, content)`: placed read-only in
    /// [`FILES_DIR`] (mode 0755), outside the layer. Each name is one path
    /// component.
    pub files: Vec<(String, Vec<u8>)>,
    /// `--mount`, parsed: what the caller makes ready as [`Self::binds`].
    pub mounts: Vec<MountSpec>,
    /// Host files and directories bind-mounted into the container (the
    /// mounts' host side): their mount points are removed from the root
    /// filesystem after the run when the runtime created them.
    pub binds: Vec<HostBind>,
    /// `--security=insecure`: `run` makes the container privileged
    /// (`image_runtime`'s `RunOptions::privileged`); the build refuses it
    /// unless the caller allowed `security.insecure`.
    pub insecure: bool,
}

impl RunSpec {
    /// A spec of `args` run as root in `/`, no extra environment, no
    /// network, no files.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(args: I) -> RunSpec {
        RunSpec {
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            user: None,
            workdir: "/".to_owned(),
            network: Network::None,
            files: Vec::new(),
            mounts: Vec::new(),
            binds: Vec::new(),
            insecure: false,
        }
    }

    /// The spec of `run` as BuildKit's Dockerfile frontend makes it:
    /// - exec form (`RUN ["a", "b"]`): the argv as written;
    /// - shell form: `shell` (the stage's `SHELL`; `/bin/sh -c` when
    ///   empty) followed by the command text;
    /// - a command that is one heredoc and nothing else (`RUN <<EOF`,
    ///   `RUN <<-EOF`, `RUN <<"EOF"`): its body (tabs stripped for `<<-`)
    ///   is the shell text; when the body starts with `#!` it is written as
    ///   an executable file `FILES_DIR/<name>` instead and the shell runs
    ///   that path (so the shebang's interpreter runs it);
    /// - any other line with heredocs (`RUN cat <<A <<B`): the line and each
    ///   heredoc as written (body, then delimiter) joined by newlines, for
    ///   the shell to read (quoted delimiters and `<<-` are the shell's).
    ///
    /// The heredoc bodies are never expanded by the builder (BuildKit
    /// ignores the choice for `RUN`: the shell expands what it reads).
    ///
    /// `--mount` values are parsed ([`crate::mounts`]) against the working
    /// directory; `--security=insecure` sets [`Self::insecure`].
    ///
    /// # Errors
    /// [`RunError::Network`] (`--network` not `none`, `default`, `host`),
    /// [`RunError::Security`] (`--security` not `sandbox` or `insecure`),
    /// [`RunError::MountFlag`] (a `--mount` that cannot be used),
    /// [`RunError::Invalid`] (heredocs on an exec-form line, a shebang
    /// heredoc whose name is not one path component, no command).
    pub fn from_instruction(
        run: &Run,
        shell: &[String],
        env: Vec<String>,
        user: Option<String>,
        workdir: String,
    ) -> Result<RunSpec, RunError> {
        let network = match &run.network {
            Some(n) => n.parse()?,
            None => Network::None,
        };
        let insecure = match run.security.as_deref() {
            None | Some("sandbox") => false,
            Some("insecure") => true,
            Some(other) => {
                return Err(RunError::Security {
                    value: other.to_owned(),
                })
            }
        };
        let mounts = crate::mounts::parse_all(&run.mounts, &workdir)
            .map_err(|source| RunError::MountFlag { source })?;
        let mut files = Vec::new();
        let text = match &run.command {
            CommandLine::Exec(args) => {
                if !run.heredocs.is_empty() {
                    return Err(invalid("heredocs need the shell form"));
                }
                if args.is_empty() {
                    return Err(invalid("the command is empty"));
                }
                return Ok(RunSpec {
                    args: args.clone(),
                    env,
                    user,
                    workdir,
                    network,
                    files,
                    mounts,
                    binds: Vec::new(),
                    insecure,
                });
            }
            CommandLine::Shell(text) => match run.heredocs.as_slice() {
                [] => text.clone(),
                [doc] if is_heredoc_word(text.trim()) => {
                    let body = doc.body();
                    if body.starts_with("#!") {
                        if !is_component(&doc.name) {
                            return Err(invalid("a script heredoc's name must be a file name"));
                        }
                        files.push((doc.name.clone(), body.into_bytes()));
                        format!("{FILES_DIR}/{}", doc.name)
                    } else {
                        body
                    }
                }
                docs => {
                    let mut full = text.clone();
                    for d in docs {
                        full.push('\n');
                        full.push_str(&d.content);
                        full.push_str(&d.name);
                    }
                    full
                }
            },
        };
        let mut args: Vec<String> = if shell.is_empty() {
            DEFAULT_SHELL.iter().map(|s| (*s).to_owned()).collect()
        } else {
            shell.to_vec()
        };
        args.push(text);
        Ok(RunSpec {
            args,
            env,
            user,
            workdir,
            network,
            files,
            mounts,
            binds: Vec::new(),
            insecure,
        })
    }
}

fn invalid(reason: &'static str) -> RunError {
    RunError::Invalid { reason }
}

/// `[fd]<<[-]word`, one word: BuildKit's test for a command that is a
/// single heredoc.
fn is_heredoc_word(text: &str) -> bool {
    let rest = text.trim_start_matches(|c: char| c.is_ascii_digit());
    match rest.strip_prefix("<<") {
        Some(r) => {
            let r = r.strip_prefix('-').unwrap_or(r);
            !r.is_empty() && !r.contains('<') && !r.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// One path component: not empty, `.` or `..`, no `/` or NUL.
fn is_component(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// Which stream a line of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A failed `RUN`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The command exited with a non-zero status (a signal's death is
    /// `128 + signal`).
    #[error("the command exited with code {code}")]
    Failed {
        /// The exit code.
        code: i32,
        /// The last lines of its output ([`LAST_LINES`]), both streams in
        /// the order they arrived.
        last_lines: Vec<String>,
    },
    /// The interrupt was set: the container was killed and removed.
    #[error("the RUN step was interrupted")]
    Cancelled,
    /// `--network` has a value other than `none`, `default` or `host`.
    #[error("RUN --network={value} is not none, default or host")]
    Network {
        /// The value.
        value: String,
    },
    /// `--security` has a value other than `sandbox` or `insecure`.
    #[error("RUN --security={value} is not sandbox or insecure")]
    Security {
        /// The value.
        value: String,
    },
    /// `--security=insecure` and the caller did not allow it.
    #[error("RUN --security=insecure is not allowed (the caller must allow security.insecure)")]
    InsecureNotAllowed,
    /// A `--mount` value that cannot be used.
    #[error("invalid RUN --mount")]
    MountFlag {
        /// Why.
        #[source]
        source: MountError,
    },
    /// A mount's host side could not be made ready.
    #[error("setting up the RUN's mounts")]
    MountSetup {
        /// Why.
        #[source]
        source: Box<crate::mounts::SetupError>,
    },
    /// A feature this builder does not have (yet).
    #[error("{what} is not supported")]
    Unsupported {
        /// What.
        what: &'static str,
    },
    /// The instruction or spec cannot be run.
    #[error("invalid RUN: {reason}")]
    Invalid {
        /// Why.
        reason: &'static str,
    },
    /// The container could not be made, started, waited for or removed.
    #[cfg(feature = "runtime")]
    #[error("{what} the RUN container")]
    Container {
        /// The step: `creating`, `reading the spec of`, `starting`, `waiting for`.
        what: &'static str,
        /// The runtime's error.
        #[source]
        source: Box<image_runtime::ContainerError>,
    },
    /// The container could not be deleted after the run: its root may
    /// still be mounted, so its mount points were left as they are.
    #[cfg(feature = "runtime")]
    #[error("the RUN container could not be deleted")]
    NotDeleted {
        /// The runtime's error.
        #[source]
        source: Box<image_runtime::ContainerError>,
        /// How the run itself failed, if it did.
        run: Option<Box<RunError>>,
    },
    /// Mounting the snapshot to look at or clean its mount points failed.
    #[error("mounting the snapshot {what}")]
    Mount {
        /// Why it was mounted.
        what: &'static str,
        /// The mount error.
        #[source]
        source: image_overlay::MountError,
    },
    /// Reading or changing the root filesystem, or the files' directory,
    /// failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path concerned (in the root filesystem, or on the host).
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl image_core::Classify for RunError {
    fn kind(&self) -> image_core::ErrorKind {
        use image_core::ErrorKind;
        match self {
            // The Dockerfile's command failed: the build's input is at
            // fault, not the system, and retrying gives the same result.
            RunError::Failed { .. } => ErrorKind::InvalidInput,
            RunError::Cancelled => ErrorKind::Cancelled,
            RunError::Network { .. } | RunError::Invalid { .. } | RunError::Security { .. } => {
                ErrorKind::InvalidInput
            }
            RunError::InsecureNotAllowed => ErrorKind::PermissionDenied,
            RunError::MountFlag { source } => source.kind(),
            RunError::MountSetup { source } => source.kind(),
            RunError::Unsupported { .. } => ErrorKind::Unsupported,
            #[cfg(feature = "runtime")]
            RunError::Container { source, .. } => source.kind(),
            #[cfg(feature = "runtime")]
            RunError::NotDeleted { source, .. } => source.kind(),
            RunError::Mount { source, .. } => source.kind(),
            RunError::Io { source, .. } => ErrorKind::from_io(source),
        }
    }
}

#[cfg(feature = "runtime")]
pub use exec::run;

#[cfg(feature = "runtime")]
mod exec {
    use std::collections::VecDeque;
    use std::io::Read;
    use std::os::fd::OwnedFd;
    use std::path::Path;
    use std::sync::mpsc;
    use std::time::Duration;

    use image_core::Interrupt;
    use image_overlay::mount::{Mount, Mounter, SysMounter};
    use image_runtime::{
        ContainerError, Exit, Input, NetworkMode, Output, Rootfs, RunningContainer, Runtime,
        Signal, Stdio, Volume,
    };

    use super::stubs::{self, Stubs};
    use super::{Network, OutputStream, RunError, RunSpec, FILES_DIR, LAST_LINES, MAX_LINE};

    /// How often the interrupt is looked at while the command runs.
    const POLL: Duration = Duration::from_millis(50);

    /// Runs `spec` in a container whose root filesystem is `mounts` (an
    /// active snapshot's), on `runtime`'s backend. Each line of the
    /// command's stdout and stderr goes to `output` as it comes (without
    /// its newline; a line longer than [`MAX_LINE`] in pieces), in order
    /// within each stream. When `interrupt` is set, the container is killed.
    ///
    /// Whatever the outcome, when this returns no container, mount or
    /// cgroup of the run is left, and the mount points the runtime created
    /// in the root filesystem are gone (see the module docs).
    ///
    /// # Errors
    /// [`RunError::Failed`] (non-zero exit: its code and last lines),
    /// [`RunError::Cancelled`], [`RunError::Invalid`] (no command, a file
    /// name that is not one component), [`RunError::Container`],
    /// [`RunError::NotDeleted`] (holding the run's own error, if any),
    /// [`RunError::Mount`], [`RunError::Io`]. A failure to remove the mount
    /// points is reported when the run itself succeeded.
    ///
    /// # Security
    /// The root filesystem is the image's: every path looked at or
    /// removed in it is reached component by component from its root with
    /// `O_NOFOLLOW`, so a symlink the image or the command put there is
    /// never followed; only an empty directory or an empty regular file
    /// at a mount point that did not exist before is removed. In an
    /// overlay upper directory, only an empty directory without
    /// overlayfs's opaque or redirect attributes, whose lower directory has
    /// the same mode, owner and modification time, is removed, and only
    /// once nothing is mounted on it.
    pub fn run(
        runtime: &Runtime,
        mounts: Vec<Mount>,
        spec: &RunSpec,
        output: &mut dyn FnMut(OutputStream, &[u8]),
        interrupt: Option<&Interrupt>,
    ) -> Result<(), RunError> {
        if spec.args.is_empty() {
            return Err(RunError::Invalid {
                reason: "the command is empty",
            });
        }
        if spec.files.iter().any(|(n, _)| !super::is_component(n)) {
            return Err(RunError::Invalid {
                reason: "a file's name must be one path component",
            });
        }
        if interrupt.is_some_and(Interrupt::is_set) {
            return Err(RunError::Cancelled);
        }
        let files = stage_files(&spec.files)?;
        let workdir = if spec.workdir.is_empty() {
            "/"
        } else {
            spec.workdir.as_str()
        };
        let stubs = with_root(&mounts, "to note its mount points", |root| {
            let mut destinations = stubs::destinations();
            destinations.extend(spec.binds.iter().map(|b| stubs::components(&b.destination)));
            Stubs::record(root, &destinations, workdir)
        })?;
        let ran = in_container(
            runtime,
            &mounts,
            spec,
            workdir,
            files.as_ref(),
            &stubs,
            output,
            interrupt,
        );
        // A container that could not be deleted may still have its root
        // mounted: its mount points are left alone.
        if matches!(ran, Err(RunError::NotDeleted { .. })) {
            return ran;
        }
        let cleaned = with_root(&mounts, "to remove its mount points", |root| {
            stubs.remove(root)
        })
        .and_then(|()| stubs.clean_upper(&mounts));
        ran.and(cleaned)
    }

    /// The files, in a new private directory of the host (removed on drop).
    fn stage_files(files: &[(String, Vec<u8>)]) -> Result<Option<tempfile::TempDir>, RunError> {
        if files.is_empty() {
            return Ok(None);
        }
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| RunError::Io {
                what: "writing the RUN files in",
                path,
                source,
            }
        };
        let dir = tempfile::Builder::new()
            .prefix("image-build-run-")
            .tempdir()
            .map_err(io(&std::env::temp_dir()))?;
        for (name, data) in files {
            use std::os::unix::fs::OpenOptionsExt;
            let path = dir.path().join(name);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o755)
                .open(&path)
                .map_err(io(&path))?;
            std::io::Write::write_all(&mut f, data).map_err(io(&path))?;
            let perms = std::os::unix::fs::PermissionsExt::from_mode(0o755);
            f.set_permissions(perms).map_err(io(&path))?;
        }
        Ok(Some(dir))
    }

    /// Mounts `mounts` on a new temporary directory (made private, so
    /// that a container created meanwhile by another thread does not keep
    /// it busy through propagation), runs `f` on it and unmounts; a mount
    /// still busy is detached, as the runtime does with a container's.
    fn with_root<T>(
        mounts: &[Mount],
        what: &'static str,
        f: impl FnOnce(&Path) -> Result<T, RunError>,
    ) -> Result<T, RunError> {
        let dir = tempfile::Builder::new()
            .prefix("image-build-root-")
            .tempdir()
            .map_err(|source| RunError::Io {
                what: "making a mount point in",
                path: std::env::temp_dir().display().to_string(),
                source,
            })?;
        SysMounter
            .mount(mounts, dir.path())
            .map_err(|source| RunError::Mount { what, source })?;
        let root = Mounted {
            points: mounts
                .iter()
                .map(|m| match &m.target {
                    Some(rel) => dir.path().join(rel),
                    None => dir.path().to_owned(),
                })
                .collect(),
        };
        let r =
            rustix::mount::mount_change(dir.path(), rustix::mount::MountPropagationFlags::PRIVATE)
                .map_err(|e| RunError::Io {
                    what: "making private the mount at",
                    path: dir.path().display().to_string(),
                    source: e.into(),
                })
                .and_then(|()| f(dir.path()));
        let unmounted = root
            .unmount()
            .map_err(|source| RunError::Mount { what, source });
        r.and_then(|t| unmounted.map(|()| t))
    }

    /// Mount points to unmount, last first: on drop, lazily.
    struct Mounted {
        points: Vec<std::path::PathBuf>,
    }

    impl Mounted {
        /// Unmounts every point; a busy one is detached instead.
        fn unmount(mut self) -> Result<(), image_overlay::MountError> {
            while let Some(p) = self.points.pop() {
                if SysMounter.unmount(&p, false).is_err() {
                    SysMounter.unmount(&p, true)?;
                }
            }
            Ok(())
        }
    }

    impl Drop for Mounted {
        fn drop(&mut self) {
            while let Some(p) = self.points.pop() {
                let _ = SysMounter.unmount(&p, true);
            }
        }
    }

    /// Deletes the container on drop (a panic's unwinding) unless it was
    /// deleted already.
    struct Cleanup<'r> {
        runtime: &'r Runtime,
        id: String,
        armed: bool,
    }

    impl Cleanup<'_> {
        fn delete(mut self) -> Result<(), ContainerError> {
            self.armed = false;
            self.runtime.delete(&self.id)
        }
    }

    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            if self.armed {
                let _ = self.runtime.delete(&self.id);
            }
        }
    }

    enum Event {
        Line(OutputStream, Vec<u8>),
        Exited(Result<Exit, ContainerError>),
    }

    #[allow(clippy::too_many_arguments)]
    fn in_container(
        runtime: &Runtime,
        mounts: &[Mount],
        spec: &RunSpec,
        workdir: &str,
        files: Option<&tempfile::TempDir>,
        stubs: &Stubs,
        output: &mut dyn FnMut(OutputStream, &[u8]),
        interrupt: Option<&Interrupt>,
    ) -> Result<(), RunError> {
        let mut b = runtime
            .container(Rootfs::Mounts(mounts.to_vec()))
            .cmd(spec.args.clone())
            .working_dir(workdir)
            .network(match spec.network {
                Network::None => NetworkMode::None,
                Network::Host => NetworkMode::Host,
            })
            .auto_remove(true)
            // The caller allowed it (see `BuildOptions::allow_insecure`).
            .privileged(spec.insecure);
        for e in &spec.env {
            b = b.env(e.clone());
        }
        if let Some(u) = &spec.user {
            b = b.user(u.clone());
        }
        for bind in &spec.binds {
            b = b.volume(Volume {
                source: bind.source.clone(),
                destination: bind.destination.clone().into(),
                read_only: bind.read_only,
            });
        }
        if let Some(dir) = files {
            b = b.volume(Volume {
                source: dir.path().to_owned(),
                destination: FILES_DIR.into(),
                read_only: true,
            });
        }
        let container = b.create().map_err(container_err("creating"))?;
        let cleanup = Cleanup {
            runtime,
            id: container.id().to_owned(),
            armed: true,
        };
        let ran = start_and_wait(runtime, container, stubs, output, interrupt);
        match cleanup.delete() {
            Ok(()) => ran,
            Err(source) => Err(RunError::NotDeleted {
                source: Box::new(source),
                run: ran.err().map(Box::new),
            }),
        }
    }

    /// The created `container` started, its output pumped, its exit
    /// waited for (the caller deletes it).
    fn start_and_wait(
        runtime: &Runtime,
        container: image_runtime::Container,
        stubs: &Stubs,
        output: &mut dyn FnMut(OutputStream, &[u8]),
        interrupt: Option<&Interrupt>,
    ) -> Result<(), RunError> {
        // The runtime made the missing working directory as root: give it
        // to the command's user, as BuildKit's executor makes it.
        let oci = container
            .spec()
            .map_err(container_err("reading the spec of"))?;
        let user = oci.process().as_ref().map(|p| p.user());
        let (uid, gid) = user.map_or((0, 0), |u| (u.uid(), u.gid()));
        if uid != 0 || gid != 0 {
            let root = oci.root().as_ref().map(|r| r.path().clone());
            if let Some(root) = root {
                stubs.chown_workdir(&container.bundle().join(root), uid, gid)?;
            }
        }
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let stdio = Stdio {
            stdin: Input::Null,
            stdout: Output::Fd(out_w),
            stderr: Output::Fd(err_w),
        };
        let running = container.start(stdio).map_err(container_err("starting"))?;
        let (exit, last_lines, interrupted) =
            pump(runtime, running, [out_r, err_r], output, interrupt);
        if interrupted {
            return Err(RunError::Cancelled);
        }
        let exit = exit.map_err(container_err("waiting for"))?;
        if exit.status.success() {
            return Ok(());
        }
        Err(RunError::Failed {
            code: exit.status.code(),
            last_lines: last_lines.into_iter().collect(),
        })
    }

    /// A runtime error at step `what` of the container's life.
    fn container_err(what: &'static str) -> impl FnOnce(ContainerError) -> RunError {
        move |source| RunError::Container {
            what,
            source: Box::new(source),
        }
    }

    fn pipe() -> Result<(OwnedFd, OwnedFd), RunError> {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| RunError::Io {
            what: "making a pipe for",
            path: "the RUN output".to_owned(),
            source: e.into(),
        })
    }

    type Pumped = (Result<Exit, ContainerError>, VecDeque<String>, bool);

    /// Delivers the output of `running` as it comes, waits for its exit,
    /// kills it when `interrupt` is set. Returns the exit, the last lines
    /// and whether it was interrupted.
    fn pump(
        runtime: &Runtime,
        running: RunningContainer,
        readers: [OwnedFd; 2],
        output: &mut dyn FnMut(OutputStream, &[u8]),
        interrupt: Option<&Interrupt>,
    ) -> Pumped {
        let id = running.id().to_owned();
        let (tx, rx) = mpsc::channel::<Event>();
        let [out_r, err_r] = readers;
        let mut threads = Vec::new();
        for (fd, stream) in [(out_r, OutputStream::Stdout), (err_r, OutputStream::Stderr)] {
            let tx = tx.clone();
            threads.push(std::thread::spawn(move || read_lines(fd, stream, &tx)));
        }
        let waiter = {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut running = running;
                let r = running.wait();
                let _ = tx.send(Event::Exited(r));
                running
            })
        };
        drop(tx);
        let mut last = VecDeque::with_capacity(LAST_LINES);
        let mut exit = None;
        let mut interrupted = false;
        loop {
            match rx.recv_timeout(POLL) {
                Ok(Event::Line(stream, line)) => {
                    output(stream, &line);
                    if last.len() == LAST_LINES {
                        last.pop_front();
                    }
                    last.push_back(String::from_utf8_lossy(&line).into_owned());
                }
                Ok(Event::Exited(r)) => exit = Some(r),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if !interrupted && interrupt.is_some_and(Interrupt::is_set) {
                interrupted = true;
                // A container that already exited refuses the signal:
                // the wait then returns anyway.
                let _ = runtime.kill(&id, Signal::KILL);
            }
        }
        for t in threads {
            let _ = t.join();
        }
        // The waiter hands the container back; dropping it kills the
        // process if it still runs (it does not: it was waited for).
        let _ = waiter.join();
        let exit = exit.unwrap_or_else(|| {
            Err(ContainerError::State {
                path: id.into(),
                source: std::io::Error::other("the waiting thread ended without an exit"),
            })
        });
        (exit, last, interrupted)
    }

    /// Sends each line read from `fd` (a piece of [`MAX_LINE`] bytes of a
    /// longer one), then a last unterminated one, until end of file.
    fn read_lines(fd: OwnedFd, stream: OutputStream, tx: &mpsc::Sender<Event>) {
        let mut file = std::fs::File::from(fd);
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut chunk = &buf[..n];
            while let Some(pos) = chunk.iter().position(|&b| b == b'\n') {
                feed(tx, stream, &mut pending, &chunk[..pos]);
                chunk = &chunk[pos + 1..];
                send_line(tx, stream, &mut pending);
            }
            feed(tx, stream, &mut pending, chunk);
        }
        if !pending.is_empty() {
            send_line(tx, stream, &mut pending);
        }
    }

    /// Adds `bytes` to the line in `pending`, sending a full line of
    /// [`MAX_LINE`] bytes before more is added to it.
    fn feed(
        tx: &mpsc::Sender<Event>,
        stream: OutputStream,
        pending: &mut Vec<u8>,
        mut bytes: &[u8],
    ) {
        while !bytes.is_empty() {
            if pending.len() == MAX_LINE {
                send_line(tx, stream, pending);
            }
            let take = (MAX_LINE - pending.len()).min(bytes.len());
            pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
    }

    fn send_line(tx: &mpsc::Sender<Event>, stream: OutputStream, pending: &mut Vec<u8>) {
        let _ = tx.send(Event::Line(stream, std::mem::take(pending)));
    }
}

#[cfg(feature = "runtime")]
mod stubs {
    //! The mount points the runtime makes in a root filesystem, noted
    //! before a run and removed after it.

    use std::os::fd::{AsFd, OwnedFd};
    use std::path::Path;

    use image_overlay::mount::Mount;
    use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
    use rustix::io::Errno;

    use super::RunError;

    /// The most components a mount destination or working directory may
    /// have for its stubs to be handled (deeper ones are left alone).
    const MAX_DEPTH: usize = crate::mounts::MAX_TARGET_DEPTH;

    /// Every path the runtime mounts on in the container's root: Docker's
    /// default mounts and the `/etc` files. (The RUN files' mount point is
    /// inside `/dev`, a tmpfs.)
    pub(super) fn destinations() -> Vec<Vec<String>> {
        let mut all: Vec<String> = image_runtime::spec::default_mounts()
            .iter()
            .map(|m| m.destination().to_string_lossy().into_owned())
            .collect();
        all.extend(["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"].map(str::to_owned));
        all.iter().map(|d| components(d)).collect()
    }

    /// `path`'s components (`.` and empty ones left out).
    pub(super) fn components(path: &str) -> Vec<String> {
        path.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_owned)
            .collect()
    }

    /// A mount destination whose components from `missing` on did not
    /// exist before the run.
    #[derive(Debug)]
    struct Stub {
        path: Vec<String>,
        missing: usize,
        /// The modification time of the directory holding `path[missing]`.
        parent_mtime: Timespec,
    }

    /// What was missing before a run.
    #[derive(Debug, Default)]
    pub(super) struct Stubs {
        stubs: Vec<Stub>,
        /// The working directory's components, and from which one on they
        /// were missing.
        workdir: Option<(Vec<String>, usize)>,
    }

    fn io(what: &'static str, path: &[String]) -> impl FnOnce(Errno) -> RunError {
        let path = format!("/{}", path.join("/"));
        move |e| RunError::Io {
            what,
            path,
            source: e.into(),
        }
    }

    fn open_dir(root: impl AsFd, name: &str) -> Result<OwnedFd, Errno> {
        rustix::fs::openat(
            root,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
    }

    fn open_root(root: &Path) -> Result<OwnedFd, RunError> {
        rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RunError::Io {
            what: "opening the root filesystem at",
            path: root.display().to_string(),
            source: e.into(),
        })
    }

    /// The directory `path[..n]` under `root`, every component opened
    /// without following a symlink; `None` when one is missing or not a
    /// directory.
    fn walk(root: &OwnedFd, path: &[String]) -> Result<Option<OwnedFd>, Errno> {
        let mut dir = rustix::io::dup(root)?;
        for c in path {
            match open_dir(&dir, c) {
                Ok(d) => dir = d,
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(Some(dir))
    }

    /// From which component on `path` is missing under `root` (`None`:
    /// it exists, or a component is not a directory, which is not ours to
    /// handle), and the directory holding that component.
    fn first_missing(root: &OwnedFd, path: &[String]) -> Result<Option<(usize, OwnedFd)>, Errno> {
        if path.is_empty() || path.len() > MAX_DEPTH {
            return Ok(None);
        }
        let mut dir = rustix::io::dup(root)?;
        for (i, c) in path.iter().enumerate() {
            match rustix::fs::statat(&dir, c.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Err(Errno::NOENT) => return Ok(Some((i, dir))),
                Err(e) => return Err(e),
                Ok(st) => {
                    if i + 1 == path.len()
                        || FileType::from_raw_mode(st.st_mode) != FileType::Directory
                    {
                        return Ok(None);
                    }
                    dir = open_dir(&dir, c)?;
                }
            }
        }
        Ok(None)
    }

    /// The most symlinks followed in resolving one destination (the
    /// kernel's own limit).
    const MAX_LINKS: usize = 40;

    /// `path` with every symlink among its existing components resolved
    /// inside `root`, as the runtime resolves a mount destination (an
    /// absolute link from the root, `..` never above it): where it makes
    /// the mount point. `None` past [`MAX_LINKS`] links or [`MAX_DEPTH`]
    /// components, or when an existing component before the last is not
    /// a directory (no stub of ours there).
    fn resolve_in_root(root: &OwnedFd, path: &[String]) -> Result<Option<Vec<String>>, Errno> {
        let mut todo: std::collections::VecDeque<String> = path.iter().cloned().collect();
        let mut done: Vec<String> = Vec::new();
        let mut dir = rustix::io::dup(root)?;
        let mut links = 0;
        while let Some(c) = todo.pop_front() {
            if done.len() > MAX_DEPTH {
                return Ok(None);
            }
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    done.pop();
                    let Some(d) = walk(root, &done)? else {
                        return Ok(None);
                    };
                    dir = d;
                    continue;
                }
                _ => {}
            }
            let st = match rustix::fs::statat(&dir, c.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Err(Errno::NOENT) => {
                    // Missing from here on: made as named.
                    done.push(c);
                    for c in todo {
                        match c.as_str() {
                            "" | "." => {}
                            ".." => {
                                done.pop();
                            }
                            _ => done.push(c),
                        }
                    }
                    return Ok((done.len() <= MAX_DEPTH).then_some(done));
                }
                Err(e) => return Err(e),
                Ok(st) => st,
            };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Symlink => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Ok(None);
                    }
                    let target = rustix::fs::readlinkat(&dir, c.as_str(), Vec::new())?;
                    let target = String::from_utf8_lossy(target.as_bytes()).into_owned();
                    if target.starts_with('/') {
                        done.clear();
                        dir = rustix::io::dup(root)?;
                    }
                    for t in target.split('/').rev() {
                        todo.push_front(t.to_owned());
                    }
                }
                FileType::Directory if !todo.is_empty() => {
                    dir = open_dir(&dir, &c)?;
                    done.push(c);
                }
                _ if todo.is_empty() => {
                    done.push(c);
                    return Ok((done.len() <= MAX_DEPTH).then_some(done));
                }
                _ => return Ok(None),
            }
        }
        Ok(Some(done))
    }

    impl Stubs {
        /// Notes which of `destinations` (resolved inside the root, as
        /// the runtime resolves them) and of `workdir` are missing in the
        /// root filesystem mounted at `root`.
        pub(super) fn record(
            root: &Path,
            destinations: &[Vec<String>],
            workdir: &str,
        ) -> Result<Stubs, RunError> {
            let root = open_root(root)?;
            let mut stubs = Vec::new();
            for path in destinations {
                let Some(path) = resolve_in_root(&root, path).map_err(io("resolving", path))?
                else {
                    continue;
                };
                let path = &path;
                let Some((missing, parent)) =
                    first_missing(&root, path).map_err(io("looking at", path))?
                else {
                    continue;
                };
                let st = rustix::fs::fstat(&parent).map_err(io("looking at", path))?;
                stubs.push(Stub {
                    path: path.clone(),
                    missing,
                    parent_mtime: Timespec {
                        tv_sec: st.st_mtime,
                        tv_nsec: st.st_mtime_nsec as _,
                    },
                });
            }
            // Deepest first: a directory's stubs go before it.
            stubs.sort_by_key(|s| std::cmp::Reverse(s.path.len()));
            let wd = components(workdir);
            let workdir = first_missing(&root, &wd)
                .map_err(io("looking at", &wd))?
                .map(|(missing, _)| (wd, missing));
            Ok(Stubs { stubs, workdir })
        }

        /// Gives the working directory's components the run's runtime
        /// created to `uid:gid` (in the root filesystem at `root`).
        pub(super) fn chown_workdir(
            &self,
            root: &Path,
            uid: u32,
            gid: u32,
        ) -> Result<(), RunError> {
            let Some((path, missing)) = &self.workdir else {
                return Ok(());
            };
            let root = open_root(root)?;
            let owner = (
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            );
            for n in *missing..path.len() {
                let Some(dir) = walk(&root, &path[..=n]).map_err(io("opening", &path[..=n]))?
                else {
                    return Ok(());
                };
                rustix::fs::fchown(&dir, owner.0, owner.1)
                    .map_err(io("changing the owner of", &path[..=n]))?;
            }
            Ok(())
        }

        /// Removes the stubs that are still empty from the root filesystem
        /// mounted at `root`, and gives their parents their modification
        /// time back.
        pub(super) fn remove(&self, root: &Path) -> Result<(), RunError> {
            let root = open_root(root)?;
            let mut restore = Vec::new();
            for s in &self.stubs {
                if remove_stub(&root, s).map_err(io("removing the mount point", &s.path))? {
                    restore.push(s);
                }
            }
            for s in restore {
                let parent = &s.path[..s.missing];
                let Some(dir) = walk(&root, parent).map_err(io("opening", parent))? else {
                    continue;
                };
                let times = Timestamps {
                    last_access: Timespec {
                        tv_sec: 0,
                        tv_nsec: rustix::fs::UTIME_OMIT,
                    },
                    last_modification: s.parent_mtime,
                };
                rustix::fs::futimens(&dir, &times).map_err(io("restoring the time of", parent))?;
            }
            Ok(())
        }

        /// On an overlay snapshot (unmounted): removes from the upper
        /// directory the empty directories that only a stub's creation
        /// copied up (see [`super::run`]'s `# Security`).
        pub(super) fn clean_upper(&self, mounts: &[Mount]) -> Result<(), RunError> {
            let [m] = mounts else { return Ok(()) };
            if m.fs_type != "overlay" {
                return Ok(());
            }
            let Some(upper) = m.option("upperdir") else {
                return Ok(());
            };
            let upper = open_root(Path::new(upper))?;
            let lowers: Vec<OwnedFd> = m
                .lowerdirs()
                .iter()
                .map(|l| open_root(Path::new(l)))
                .collect::<Result<_, _>>()?;
            let mut done: Vec<&[String]> = Vec::new();
            for s in &self.stubs {
                for n in (1..=s.missing).rev() {
                    let dir = &s.path[..n];
                    if done.contains(&dir) {
                        break;
                    }
                    done.push(dir);
                    if !redundant_copy_up(&upper, &lowers, dir)
                        .map_err(io("looking at the upper directory's", dir))?
                    {
                        break;
                    }
                    let Some(parent) = walk(&upper, &dir[..n - 1]).map_err(io("opening", dir))?
                    else {
                        break;
                    };
                    match rustix::fs::unlinkat(&parent, dir[n - 1].as_str(), AtFlags::REMOVEDIR) {
                        Ok(()) => {}
                        Err(Errno::NOTEMPTY | Errno::NOENT) => break,
                        Err(e) => return Err(io("removing the copied-up directory", dir)(e)),
                    }
                }
            }
            Ok(())
        }
    }

    /// Removes the stub `s` (the mount point, then the directories
    /// created for it) while each is empty; whether all of it went.
    fn remove_stub(root: &OwnedFd, s: &Stub) -> Result<bool, Errno> {
        for n in (s.missing + 1..=s.path.len()).rev() {
            let Some(parent) = walk(root, &s.path[..n - 1])? else {
                return Ok(false);
            };
            let name = s.path[n - 1].as_str();
            let st = match rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                // Another stub's removal took it.
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e),
            };
            let removed = match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => rustix::fs::unlinkat(&parent, name, AtFlags::REMOVEDIR),
                FileType::RegularFile if st.st_size == 0 && n == s.path.len() => {
                    rustix::fs::unlinkat(&parent, name, AtFlags::empty())
                }
                _ => return Ok(false),
            };
            match removed {
                Ok(()) => {}
                Err(Errno::NOTEMPTY | Errno::EXIST) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Whether `dir` in `upper` is an empty directory with no overlayfs
    /// opaque or redirect attribute, and the first lower directory holding
    /// `dir` has it as a directory of the same mode, owner and times.
    fn redundant_copy_up(
        upper: &OwnedFd,
        lowers: &[OwnedFd],
        dir: &[String],
    ) -> Result<bool, Errno> {
        let Some(u) = walk(upper, dir)? else {
            return Ok(false);
        };
        let mut entries = rustix::fs::Dir::read_from(&u)?;
        let mut count = 0;
        while let Some(e) = entries.read() {
            let e = e?;
            let name = e.file_name().to_bytes();
            if name != b"." && name != b".." {
                count += 1;
                break;
            }
        }
        if count > 0 {
            return Ok(false);
        }
        let mut names = vec![0u8; 4096];
        let n = match rustix::fs::flistxattr(&u, &mut names) {
            Ok(n) => n,
            Err(Errno::RANGE) => return Ok(false),
            Err(e) => return Err(e),
        };
        let overlay_marks = names[..n]
            .split(|&b| b == 0)
            .any(|a| a.ends_with(b"overlay.opaque") || a.ends_with(b"overlay.redirect"));
        if overlay_marks {
            return Ok(false);
        }
        let us = rustix::fs::fstat(&u)?;
        for lower in lowers {
            let parent = match walk(lower, &dir[..dir.len() - 1])? {
                Some(p) => p,
                None => continue,
            };
            match rustix::fs::statat(
                &parent,
                dir[dir.len() - 1].as_str(),
                AtFlags::SYMLINK_NOFOLLOW,
            ) {
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e),
                Ok(ls) => {
                    return Ok(FileType::from_raw_mode(ls.st_mode) == FileType::Directory
                        && ls.st_mode == us.st_mode
                        && ls.st_uid == us.st_uid
                        && ls.st_gid == us.st_gid
                        && ls.st_mtime == us.st_mtime
                        && ls.st_mtime_nsec == us.st_mtime_nsec);
                }
            }
        }
        Ok(false)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Generated trees of directories and links (relative, absolute,
        /// `..` past the root, loops): every existing path resolves where
        /// the kernel's `RESOLVE_IN_ROOT` resolves it.
        #[test]
        fn resolving_in_root_agrees_with_the_kernel() {
            let names = ["a", "b", "c", "..", "."];
            let mut seed = 0x2545_f491_u32;
            let mut next = |n: usize| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as usize % n
            };
            let mut checked = 0;
            for _ in 0..40 {
                let tmp = tempfile::tempdir().unwrap();
                let base = tmp.path();
                for d in ["a", "a/b", "b", "b/c", "c/a"] {
                    std::fs::create_dir_all(base.join(d)).unwrap();
                }
                for _ in 0..6 {
                    let at = ["l", "a/l", "b/c/l", "c/l"][next(4)];
                    let mut target: Vec<&str> = (0..1 + next(4)).map(|_| names[next(5)]).collect();
                    if next(2) == 0 {
                        target.insert(0, "");
                    }
                    let _ = std::os::unix::fs::symlink(target.join("/"), base.join(at));
                }
                let root = open_root(base).unwrap();
                for _ in 0..40 {
                    let path: Vec<String> = (0..1 + next(5))
                        .map(|_| ["a", "b", "c", "l", ".."][next(5)].to_owned())
                        .collect();
                    let Ok(fd) = rustix::fs::openat2(
                        &root,
                        path.join("/"),
                        OFlags::PATH | OFlags::CLOEXEC,
                        Mode::empty(),
                        rustix::fs::ResolveFlags::IN_ROOT,
                    ) else {
                        continue;
                    };
                    let real = std::fs::read_link(format!(
                        "/proc/self/fd/{}",
                        std::os::fd::AsRawFd::as_raw_fd(&fd)
                    ))
                    .unwrap();
                    let want: Vec<String> = real
                        .strip_prefix(std::fs::canonicalize(base).unwrap())
                        .unwrap()
                        .iter()
                        .map(|c| c.to_string_lossy().into_owned())
                        .collect();
                    let got = resolve_in_root(&root, &path).unwrap();
                    assert_eq!(got, Some(want), "{path:?}");
                    checked += 1;
                }
            }
            assert!(checked > 200, "only {checked} paths existed");
        }
    }
}
