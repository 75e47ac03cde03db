//! The console socket of runc and crun (`--console-socket`): a container
//! started with a terminal gets a new pty from its runtime, which sends
//! the pty's master to a unix socket we listen on (`SCM_RIGHTS`); we then
//! drive that master as the native backend drives its own pty (raw mode
//! of the caller's terminal, window sizes, `SIGWINCH`).
//!
//! # Security
//! The socket lives in a directory of our own, made with mode 0700 under
//! the temporary directory with a name nobody else can have taken
//! (`mkdir` fails on an existing name: no symlink is followed), and is
//! removed with it. One connection is accepted, one message read, with a
//! bounded payload; every descriptor received other than the first
//! terminal is closed; what is received must be a terminal.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SocketAddrUnix,
    SocketFlags, SocketType,
};

/// Why no terminal came from the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleError {
    /// The socket could not be made (its directory, `socket`, `bind`,
    /// `listen`).
    #[error("creating the console socket {path}")]
    Create {
        /// The socket's path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The runtime did not connect in time.
    #[error("the runtime did not connect to the console socket within {0:?}")]
    NoConnection(Duration),
    /// Accepting or reading the runtime's message failed.
    #[error("receiving the terminal from the console socket")]
    Receive(#[source] std::io::Error),
    /// The runtime's message carried no descriptor, or not a terminal.
    #[error("the console socket's message carried no terminal")]
    NotATerminal,
}

impl image_core::error::Classify for ConsoleError {
    fn kind(&self) -> image_core::error::ErrorKind {
        use image_core::error::ErrorKind;
        match self {
            ConsoleError::Create { source, .. } | ConsoleError::Receive(source) => {
                ErrorKind::from_io(source)
            }
            ConsoleError::NoConnection(_) => ErrorKind::Io,
            ConsoleError::NotATerminal => ErrorKind::InvalidInput,
        }
    }
}

/// A listening console socket; dropping it removes it and its directory.
#[derive(Debug)]
pub(crate) struct ConsoleSocket {
    dir: PathBuf,
    path: PathBuf,
    listener: OwnedFd,
}

/// The payload runc sends with the master (the pty's name) fits easily.
const MAX_PAYLOAD: usize = 4096;

static SEQ: AtomicU64 = AtomicU64::new(0);

impl ConsoleSocket {
    /// Listens on a new socket in a private directory under the temporary
    /// directory (a unix socket's path is limited to 107 bytes, which a
    /// bundle's path may exceed).
    ///
    /// # Errors
    /// [`ConsoleError::Create`].
    pub(crate) fn bind() -> Result<ConsoleSocket, ConsoleError> {
        let base = std::env::temp_dir();
        let (dir, path) = loop {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            let dir = base.join(format!(
                "image-runtime-console-{}-{n}-{nanos:x}",
                std::process::id()
            ));
            let path = dir.join("s");
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break (dir, path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(ConsoleError::Create { path, source }),
            }
        };
        let listen = || -> std::io::Result<OwnedFd> {
            let fd = rustix::net::socket_with(
                AddressFamily::UNIX,
                SocketType::STREAM,
                SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
                None,
            )?;
            rustix::net::bind(&fd, &SocketAddrUnix::new(path.as_path())?)?;
            rustix::net::listen(&fd, 1)?;
            Ok(fd)
        };
        match listen() {
            Ok(listener) => Ok(ConsoleSocket {
                dir,
                path,
                listener,
            }),
            Err(source) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(ConsoleError::Create { path, source })
            }
        }
    }

    /// The path to give the runtime (`--console-socket`).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts the runtime's connection (waiting up to `timeout`) and
    /// receives the terminal's master it sends.
    ///
    /// # Errors
    /// [`ConsoleError::NoConnection`], [`ConsoleError::Receive`],
    /// [`ConsoleError::NotATerminal`].
    pub(crate) fn receive(&self, timeout: Duration) -> Result<OwnedFd, ConsoleError> {
        let conn = self.accept(timeout)?;
        let mut payload = vec![0u8; MAX_PAYLOAD];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        loop {
            match rustix::net::recvmsg(
                &conn,
                &mut [IoSliceMut::new(&mut payload)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(ConsoleError::Receive(e.into())),
            }
        }
        // The first descriptor is the master; any other is closed here.
        let mut master = None;
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = msg {
                for fd in fds {
                    if master.is_none() {
                        master = Some(fd);
                    }
                }
            }
        }
        master
            .filter(|m| rustix::termios::isatty(m))
            .ok_or(ConsoleError::NotATerminal)
    }

    fn accept(&self, timeout: Duration) -> Result<OwnedFd, ConsoleError> {
        let deadline = Instant::now() + timeout;
        loop {
            match rustix::net::accept_with(&self.listener, SocketFlags::CLOEXEC) {
                Ok(fd) => {
                    // Blocking reads from here (the runtime sent already).
                    rustix::io::ioctl_fionbio(&fd, false)
                        .map_err(|e| ConsoleError::Receive(e.into()))?;
                    return Ok(fd);
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => {}
                Err(e) => return Err(ConsoleError::Receive(e.into())),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ConsoleError::NoConnection(timeout));
            }
            let mut fds = [rustix::event::PollFd::new(
                &self.listener,
                rustix::event::PollFlags::IN,
            )];
            let t = rustix::event::Timespec::try_from(left).unwrap_or(rustix::event::Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            });
            match rustix::event::poll(&mut fds, Some(&t)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(ConsoleError::Receive(e.into())),
            }
        }
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::io::IoSlice;
    use std::os::fd::AsFd;

    fn connect(path: &Path) -> OwnedFd {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        rustix::net::connect(&fd, &SocketAddrUnix::new(path).unwrap()).unwrap();
        fd
    }

    fn send(conn: &OwnedFd, fds: &[std::os::fd::BorrowedFd<'_>]) {
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
        rustix::net::sendmsg(
            conn,
            &[IoSlice::new(b"/dev/pts/x")],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
    }

    /// A terminal sent by a peer (as runc and crun send it) is received;
    /// the socket and its private directory are gone once dropped.
    #[test]
    fn a_terminal_is_received_and_the_socket_removed() {
        let socket = ConsoleSocket::bind().unwrap();
        let path = socket.path().to_owned();
        let meta = std::fs::metadata(path.parent().unwrap()).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o700
        );
        let master =
            rustix::pty::openpt(rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY)
                .unwrap();
        let conn = connect(&path);
        send(&conn, &[master.as_fd()]);
        let got = socket.receive(Duration::from_secs(5)).unwrap();
        assert!(rustix::termios::isatty(&got));
        drop(socket);
        assert!(!path.exists());
        assert!(!path.parent().unwrap().exists());
    }

    /// What is not a terminal (a pipe), or no descriptor at all, or no
    /// connection, is a typed error, not a hang.
    #[test]
    fn anything_but_a_terminal_is_refused() {
        let socket = ConsoleSocket::bind().unwrap();
        let (r, _w) = rustix::pipe::pipe().unwrap();
        let conn = connect(socket.path());
        send(&conn, &[r.as_fd()]);
        assert!(matches!(
            socket.receive(Duration::from_secs(5)),
            Err(ConsoleError::NotATerminal)
        ));
        let socket = ConsoleSocket::bind().unwrap();
        let conn = connect(socket.path());
        rustix::io::write(&conn, b"nothing").unwrap();
        assert!(matches!(
            socket.receive(Duration::from_secs(5)),
            Err(ConsoleError::NotATerminal)
        ));
        let socket = ConsoleSocket::bind().unwrap();
        assert!(matches!(
            socket.receive(Duration::from_millis(50)),
            Err(ConsoleError::NoConnection(_))
        ));
    }
}
