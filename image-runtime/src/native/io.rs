//! Standard streams of a native container: the descriptors the child gets
//! as 0, 1 and 2 (pipes, `/dev/null`, the caller's, or a terminal's slave
//! side), and the threads that feed and drain the parent's ends.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::thread::JoinHandle;

use crate::stdio::{Input, Output, Stdio};

/// Descriptors for the child and the work to start once it runs.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The child's 0, 1, 2 (each numbered >= 3 and close-on-exec here; the
    /// child `dup2`s them into place).
    pub child: [OwnedFd; 3],
    pending: Pending,
}

#[derive(Debug)]
struct Pending {
    /// The caller's terminal, raw while the container's pty is open.
    link: Option<super::tty::Link>,
    input: Option<(OwnedFd, Vec<u8>)>,
    copy_stdin: Option<OwnedFd>,
    /// Copied from the first to the second (a descriptor into a master).
    feed: Option<(OwnedFd, OwnedFd)>,
    stdout: Option<(OwnedFd, Output)>,
    stderr: Option<(OwnedFd, Output)>,
}

/// Running pumps: the same as the OCI backends' ([`Pumps::finish`]).
pub(crate) use crate::stdio::Pumps;

fn high(fd: impl AsFd) -> std::io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 3)?)
}

fn dev_null(write: bool) -> std::io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")?;
    high(f)
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

fn output(o: Output, which: i32) -> std::io::Result<(OwnedFd, Option<(OwnedFd, Output)>)> {
    Ok(match o {
        Output::Null => (dev_null(true)?, None),
        Output::Inherit => (
            high(if which == 1 {
                std::io::stdout().as_fd().try_clone_to_owned()?
            } else {
                std::io::stderr().as_fd().try_clone_to_owned()?
            })?,
            None,
        ),
        Output::Fd(fd) => (high(fd)?, None),
        other => {
            let (r, w) = pipe()?;
            (high(w)?, Some((r, other)))
        }
    })
}

/// Prepares `stdio` for a child; with `tty`, the child's three streams are
/// a new terminal's slave side and the parent's master carries stdin in
/// and stdout (stderr merged) out.
///
/// # Errors
/// Pipes, `/dev/null`, the terminal.
pub(crate) fn prepare(stdio: Stdio, tty: Option<(u16, u16)>) -> std::io::Result<Prepared> {
    if let Some((rows, cols)) = tty {
        return prepare_tty(stdio, rows, cols);
    }
    let mut input = None;
    let copy_stdin = None;
    let stdin = match stdio.stdin {
        Input::Null => dev_null(false)?,
        Input::Inherit => high(std::io::stdin().as_fd())?,
        Input::Fd(fd) | Input::Terminal { input: fd, .. } => high(fd)?,
        Input::Bytes(b) => {
            let (r, w) = pipe()?;
            input = Some((w, b));
            high(r)?
        }
    };
    let (out, stdout) = output(stdio.stdout, 1)?;
    let (err, stderr) = output(stdio.stderr, 2)?;
    Ok(Prepared {
        child: [stdin, out, err],
        pending: Pending {
            link: None,
            input,
            copy_stdin,
            feed: None,
            stdout,
            stderr,
        },
    })
}

fn prepare_tty(stdio: Stdio, rows: u16, cols: u16) -> std::io::Result<Prepared> {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    rustix::termios::tcsetwinsize(&slave, window(&stdio, rows, cols))?;
    let child = [high(&slave)?, high(&slave)?, high(&slave)?];
    drop(slave);
    Ok(Prepared {
        child,
        pending: master_side(master, stdio)?,
    })
}

/// The caller's own terminal, when `stdio` inherits a stdin that is one.
fn caller_terminal(stdio: &Stdio) -> Option<std::io::Stdin> {
    matches!(stdio.stdin, Input::Inherit)
        .then(std::io::stdin)
        .filter(|s| rustix::termios::isatty(s))
}

/// The container terminal's first size: the caller's terminal's, else
/// `rows` x `cols` (the spec's `consoleSize`).
fn window(stdio: &Stdio, rows: u16, cols: u16) -> rustix::termios::Winsize {
    let (rows, cols) = caller_terminal(stdio)
        .as_ref()
        .and_then(super::tty::size_of)
        .unwrap_or((rows, cols));
    rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// The parent's work on a terminal's `master`: stdin into it, its output
/// (stdout and stderr merged) out, the caller's terminal linked (raw,
/// window sizes followed) while it is open.
fn master_side(master: OwnedFd, stdio: Stdio) -> std::io::Result<Pending> {
    let mut input = None;
    let mut copy_stdin = None;
    let mut feed = None;
    let caller = caller_terminal(&stdio);
    match stdio.stdin {
        Input::Bytes(b) => input = Some((master.try_clone()?, b)),
        Input::Inherit => copy_stdin = Some(master.try_clone()?),
        Input::Fd(fd) => feed = Some((fd, master.try_clone()?)),
        Input::Terminal {
            input: fd,
            master: to,
        } => {
            feed = Some((fd, master.try_clone()?));
            // The receiver may be gone: then nobody sizes the terminal.
            let _ = to.send(master.try_clone()?);
        }
        _ => {}
    }
    let link = match &caller {
        Some(terminal) => super::tty::Link::new(terminal, &master)?,
        None => None,
    };
    let stdout = match stdio.stdout {
        o @ (Output::Capture | Output::Stream(_)) => Some((master, o)),
        Output::Inherit => Some((master, Output::Stream(Box::new(std::io::stdout())))),
        Output::Fd(fd) => Some((master, Output::Stream(Box::new(File::from(fd))))),
        _ => None,
    };
    Ok(Pending {
        link,
        input,
        copy_stdin,
        feed,
        stdout,
        stderr: None,
    })
}

/// Drives the `master` of a terminal made by someone else (runc or crun,
/// received over their console socket) as the native backend drives its
/// own: sized `rows` x `cols` or as the caller's terminal, then the same
/// pumps and link of the caller's terminal as [`prepare`] with a tty.
///
/// # Errors
/// The window size, the caller's terminal, descriptors.
pub(crate) fn drive_master(
    master: OwnedFd,
    stdio: Stdio,
    (rows, cols): (u16, u16),
) -> std::io::Result<Pumps> {
    rustix::termios::tcsetwinsize(&master, window(&stdio, rows, cols))?;
    Ok(master_side(master, stdio)?.start())
}

/// Drains `r` into `out` on a thread; `link` is dropped (the caller's
/// terminal restored) when `r` ends.
fn pump(r: OwnedFd, out: Output, link: Option<super::tty::Link>) -> Option<JoinHandle<Vec<u8>>> {
    let mut r = File::from(r);
    // A terminal master reports EIO once every slave is closed: an end.
    let read_all = move |r: &mut File, sink: &mut dyn FnMut(&[u8])| {
        let mut buf = [0u8; 16384];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => sink(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    };
    match out {
        Output::Capture => Some(std::thread::spawn(move || {
            let mut v = Vec::new();
            read_all(&mut r, &mut |b| v.extend_from_slice(b));
            drop(link);
            v
        })),
        Output::Stream(mut w) => Some(std::thread::spawn(move || {
            read_all(&mut r, &mut |b| {
                let _ = w.write_all(b);
            });
            let _ = w.flush();
            drop(link);
            Vec::new()
        })),
        _ => None,
    }
}

impl Prepared {
    /// Starts the pumps (after the child has its copies).
    pub(crate) fn start(self) -> Pumps {
        let Prepared { child, pending } = self;
        drop(child);
        pending.start()
    }
}

impl Pending {
    fn start(self) -> Pumps {
        let pending = self;
        let input = pending.input.map(|(w, bytes)| {
            std::thread::spawn(move || {
                let mut w = File::from(w);
                // A process that does not read its stdin closes the pipe.
                let _ = w.write_all(&bytes);
            })
        });
        if let Some(fd) = pending.copy_stdin {
            // Detached: the caller's stdin may never end.
            std::thread::spawn(move || {
                let mut w = File::from(fd);
                let _ = std::io::copy(&mut std::io::stdin(), &mut w);
            });
        }
        if let Some((from, to)) = pending.feed {
            // Ends with its input (the terminal stays open).
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut File::from(from), &mut File::from(to));
            });
        }
        Pumps::new(
            input,
            pending.stdout.and_then(|(r, o)| pump(r, o, pending.link)),
            pending.stderr.and_then(|(r, o)| pump(r, o, None)),
        )
    }
}
