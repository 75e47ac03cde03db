//! Attaching to a detached container's standard streams, as `docker
//! attach` does: the monitor keeps the container's stdin (a pipe, or the
//! terminal's master under `-t`) and listens on a socket in the
//! container's directory ([`SOCKET`], mode 0600, bound through a
//! descriptor of the directory, as conmon's attach socket); an attacher
//! connects, sends its input and window sizes, and receives the output as
//! it comes. Several attachers may be connected at once: each sees the
//! output, input from any goes to the container.
//!
//! The wire format, both ways: frames of one kind byte, a big-endian
//! `u32` length and that many bytes (at most [`MAX_FRAME`]). The attacher
//! sends [`IN_DATA`], [`IN_CLOSE`] (end of the container's stdin) and
//! [`IN_RESIZE`] (rows and columns, `u16` each); the monitor sends
//! [`OUT_STDOUT`] and [`OUT_STDERR`], and closes every connection once
//! the run's exit is recorded.
//!
//! # Security
//! The socket is bound and connected through `/proc/self/fd/N/attach`,
//! `N` a descriptor of the container's directory opened without following
//! links, with the umask giving mode 0600 at its creation; the monitor
//! serves at most [`MAX_ATTACHERS`] attachers, drops one whose frame is
//! malformed or too long, and drops one that does not take its output
//! within [`SEND_TIMEOUT`], so an attacher can neither stall the container
//! nor grow the monitor's memory. Input goes to the container's stdin
//! through a non-blocking pipe without any lock but its own: a container
//! that does not read stalls only the attachers whose input waits (one
//! frame each, counted among the [`MAX_ATTACHERS`] until it gives up),
//! never another attacher's close or detach, nor the run's end, which
//! closes the stdin and ends the waiting writes. A waiting write also
//! ends when its own attacher detaches or goes away, so attachers that
//! left hold no place among the [`MAX_ATTACHERS`].

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use image_core::{Classify, ErrorKind};

use crate::error::ContainerError;
use crate::model::ContainerStatus;

/// The attach socket's name in the container's directory.
pub const SOCKET: &str = "attach";
/// The largest frame payload either side sends or accepts.
pub const MAX_FRAME: usize = 64 << 10;
/// The most attachers a monitor serves at once.
pub const MAX_ATTACHERS: usize = 16;
/// How long the monitor waits for an attacher to take a piece of output
/// before it drops that attacher.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest detach sequence accepted.
pub const MAX_DETACH_KEYS: usize = 16;

/// Attacher → monitor: bytes for the container's stdin.
pub const IN_DATA: u8 = 0;
/// Attacher → monitor: close the container's stdin (no payload).
pub const IN_CLOSE: u8 = 1;
/// Attacher → monitor: the terminal's size (rows, columns: `u16` each).
pub const IN_RESIZE: u8 = 2;
/// Monitor → attacher: the container's standard output (with a terminal:
/// all of its output).
pub const OUT_STDOUT: u8 = 1;
/// Monitor → attacher: the container's standard error.
pub const OUT_STDERR: u8 = 2;
/// Monitor → attacher: refused, [`MAX_ATTACHERS`] are attached already
/// (the only frame, then the connection closes).
pub const OUT_REFUSED: u8 = 3;
/// Monitor → attacher: taken in (the first frame; every piece of output
/// from then on follows it). [`Runtime::attach_stream`](crate::Runtime::attach_stream)
/// returns once it has it, so an attachment sees all the output written
/// after it returns, whatever input another attachment sends.
pub const OUT_ATTACHED: u8 = 4;
/// How long [`connect`] waits for the monitor to take the attacher in.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of attaching to a detached container.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// Loading the container's record failed.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// The container is not a detached container that runs.
    #[error("container {id} is not a running detached container")]
    NotRunning {
        /// The container.
        id: String,
    },
    /// Its monitor's socket could not be reached.
    #[error("connecting to the attach socket of container {id} ({path})")]
    Connect {
        /// The container.
        id: String,
        /// The socket.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Reading the output or writing the caller's streams failed.
    #[error("attached to container {id}: {what}")]
    Io {
        /// The container.
        id: String,
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The monitor refused the attacher: [`MAX_ATTACHERS`] are attached.
    #[error("container {id} has {max} attachers already")]
    Busy {
        /// The container.
        id: String,
        /// The most attachers a container takes.
        max: usize,
    },
    /// The monitor sent a frame this side does not accept.
    #[error("attached to container {id}: the monitor sent a malformed frame ({why})")]
    Protocol {
        /// The container.
        id: String,
        /// What was wrong.
        why: &'static str,
    },
}

impl Classify for AttachError {
    fn kind(&self) -> ErrorKind {
        match self {
            AttachError::Container(e) => e.kind(),
            AttachError::NotRunning { .. } => ErrorKind::FailedPrecondition,
            AttachError::Connect { source, .. } | AttachError::Io { source, .. } => {
                ErrorKind::from_io(source)
            }
            AttachError::Protocol { .. } => ErrorKind::InvalidInput,
            AttachError::Busy { .. } => ErrorKind::Unavailable,
        }
    }
}

/// A `--detach-keys` value that Docker's syntax does not allow.
#[derive(Debug, thiserror::Error)]
#[error("detach keys {keys:?}: {why}")]
pub struct DetachKeysError {
    /// The value given.
    pub keys: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl Classify for DetachKeysError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

/// The key sequence that detaches an attacher and leaves the container
/// running (Docker's `--detach-keys`; default ctrl-p ctrl-q). Empty: no
/// sequence detaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachKeys(Vec<u8>);

impl Default for DetachKeys {
    fn default() -> DetachKeys {
        DetachKeys(vec![0x10, 0x11])
    }
}

impl DetachKeys {
    /// No detach sequence (input passes unchanged).
    pub fn none() -> DetachKeys {
        DetachKeys(Vec::new())
    }

    /// The bytes of the sequence.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::str::FromStr for DetachKeys {
    type Err = DetachKeysError;

    /// Docker's syntax: keys separated by commas, each a single character
    /// or `ctrl-X` with `X` a letter or one of `@ [ \ ] ^ _`.
    fn from_str(s: &str) -> Result<DetachKeys, DetachKeysError> {
        let err = |why| DetachKeysError {
            keys: s.to_owned(),
            why,
        };
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s.split(',').count() > MAX_DETACH_KEYS {
            return Err(err("too many keys"));
        }
        s.split(',')
            .map(|k| {
                let mut chars = k.chars();
                match (k.strip_prefix("ctrl-"), chars.next(), chars.next()) {
                    (Some(rest), _, _) => match rest.as_bytes() {
                        [c @ b'a'..=b'z'] => Ok(c - b'a' + 1),
                        [c @ b'A'..=b'Z'] => Ok(c - b'A' + 1),
                        [b'@'] => Ok(0),
                        [c @ (b'[' | b'\\' | b']' | b'^' | b'_')] => Ok(c - b'[' + 27),
                        _ => Err(err("ctrl- takes a letter or one of @ [ \\ ] ^ _")),
                    },
                    (None, Some(c), None) if c.is_ascii() => Ok(c as u8),
                    _ => Err(err("each key is one ASCII character or ctrl-X")),
                }
            })
            .collect::<Result<Vec<u8>, _>>()
            .map(DetachKeys)
    }
}

/// Finds the detach sequence in a stream of input, holding back the bytes
/// of a partial match until the next byte decides (as Docker's escape
/// proxy does: a partial match followed by another byte is passed on).
#[derive(Debug, Clone)]
pub struct DetachScanner {
    keys: DetachKeys,
    matched: usize,
}

/// What a piece of input holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Scanned {
    /// These bytes go to the container (possibly none).
    Input(Vec<u8>),
    /// These bytes go first, then the attacher detaches.
    Detach(Vec<u8>),
}

impl DetachScanner {
    /// A scanner for `keys`.
    pub fn new(keys: DetachKeys) -> DetachScanner {
        DetachScanner { keys, matched: 0 }
    }

    /// Scans the next piece of input.
    pub fn feed(&mut self, input: &[u8]) -> Scanned {
        let keys = self.keys.bytes();
        if keys.is_empty() {
            return Scanned::Input(input.to_vec());
        }
        let mut out = Vec::with_capacity(input.len());
        let mut held = Vec::with_capacity(keys.len());
        for &b in input {
            held.clear();
            held.extend_from_slice(&keys[..self.matched]);
            held.push(b);
            if held == keys {
                self.matched = 0;
                return Scanned::Detach(out);
            }
            // The longest end of what is held that may still begin the
            // sequence stays held; the rest was input after all.
            let keep = (0..held.len().min(keys.len() - 1) + 1)
                .rev()
                .find(|&m| held[held.len() - m..] == keys[..m])
                .unwrap_or(0);
            out.extend_from_slice(&held[..held.len() - keep]);
            self.matched = keep;
        }
        Scanned::Input(out)
    }

    /// The bytes still held at the end of the input.
    pub fn finish(&mut self) -> Vec<u8> {
        let held = self.keys.bytes()[..self.matched].to_vec();
        self.matched = 0;
        held
    }
}

/// Writes one frame.
fn write_frame(w: &mut impl Write, kind: u8, payload: &[u8]) -> std::io::Result<()> {
    debug_assert!(payload.len() <= MAX_FRAME);
    let mut frame = Vec::with_capacity(5 + payload.len());
    frame.push(kind);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    w.write_all(&frame)
}

/// A frame read, or why none was.
enum Frame {
    Data(u8, Vec<u8>),
    End,
    TooLong,
}

/// Reads one frame (its payload at most [`MAX_FRAME`]); `End` at a clean
/// end of stream before a frame.
fn read_frame(r: &mut impl Read) -> std::io::Result<Frame> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(Frame::End),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Ok(Frame::TooLong);
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Frame::Data(head[0], payload))
}

/// The container directory `dir` opened without following links, and the
/// socket's path through it (short, whatever `dir`'s length: a socket
/// path has at most 107 bytes).
fn socket_path(dir: &Path) -> std::io::Result<(OwnedFd, PathBuf)> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let path = PathBuf::from(format!(
        "/proc/self/fd/{}/{SOCKET}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ));
    Ok((fd, path))
}

/// A run's stdin as attachers write it: the pipe's writing end, made
/// non-blocking, so that a container that does not read its stdin stalls
/// only the attachers whose input waits for room (one frame at a time, a
/// turn each), never a close, a detach or the run's end: those
/// [`close`](RunStdin::close) it, which wakes a waiting write. A write
/// (waiting for its turn or for room) also watches its attacher's
/// connection and ends when the attacher leaves (detaches, goes away, or
/// is dropped), so a departed attacher holds no place. The pipe closes
/// once the hub and every write have let go of it.
#[derive(Debug)]
pub(crate) struct RunStdin {
    pipe: OwnedFd,
    /// True while one frame is written (its turn), so two attachers'
    /// frames do not interleave.
    busy: Mutex<bool>,
    /// An eventfd, readable once a turn ends (reset by the next taker).
    freed: OwnedFd,
    closed: AtomicBool,
    /// An eventfd, readable once closed.
    wake: OwnedFd,
}

/// How a waiting write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    /// Written whole, or the rest dropped: the stdin was closed, or the
    /// container closed its end.
    Done,
    /// The attacher left (its connection hung up) before it was written:
    /// the rest is dropped.
    Left,
}

/// What a wait of [`RunStdin::wait`] saw.
enum Woken {
    /// Room, or a turn, may be free now.
    Retry,
    /// The attacher left.
    Left,
    /// The wait failed or the stdin closed: give up.
    GiveUp,
}

/// One attacher's turn at writing a frame; ends when dropped.
struct Turn<'a>(&'a RunStdin);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut busy = lock(&self.0.busy);
        *busy = false;
        let _ = rustix::io::write(&self.0.freed, &1u64.to_ne_bytes());
    }
}

impl RunStdin {
    /// The stdin of a run whose pipe's writing end is `pipe`.
    ///
    /// # Errors
    /// Making it non-blocking, or the eventfds, failed.
    pub(crate) fn new(pipe: OwnedFd) -> std::io::Result<RunStdin> {
        use rustix::event::{eventfd, EventfdFlags};
        use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
        fcntl_setfl(&pipe, fcntl_getfl(&pipe)? | OFlags::NONBLOCK)?;
        let flags = EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK;
        Ok(RunStdin {
            pipe,
            busy: Mutex::new(false),
            freed: eventfd(0, flags)?,
            closed: AtomicBool::new(false),
            wake: eventfd(0, flags)?,
        })
    }

    /// Waits until `ready` is ready, the stdin is closed or the attacher
    /// on `conn` leaves (its peer hung up, or the monitor shut it down).
    fn wait(&self, ready: rustix::event::PollFd<'_>, conn: BorrowedFd<'_>) -> Woken {
        use rustix::event::{poll, PollFd, PollFlags};
        use rustix::io::Errno;
        let mut fds = [
            ready,
            PollFd::new(&self.wake, PollFlags::IN),
            PollFd::new(&conn, PollFlags::RDHUP),
        ];
        match poll(&mut fds, None) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(_) => return Woken::GiveUp,
        }
        let gone = PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR;
        if fds[2].revents().intersects(gone) {
            Woken::Left
        } else if self.closed.load(Ordering::SeqCst) {
            Woken::GiveUp
        } else {
            Woken::Retry
        }
    }

    /// Takes the turn to write a frame, waiting for it; `Err` with how
    /// the wait ended when the stdin closes or the attacher leaves first.
    fn turn(&self, conn: BorrowedFd<'_>) -> Result<Turn<'_>, Written> {
        use rustix::event::{PollFd, PollFlags};
        loop {
            {
                let mut busy = lock(&self.busy);
                if self.closed.load(Ordering::SeqCst) {
                    return Err(Written::Done);
                }
                if !*busy {
                    *busy = true;
                    let mut count = [0u8; 8];
                    let _ = rustix::io::read(&self.freed, &mut count);
                    return Ok(Turn(self));
                }
            }
            match self.wait(PollFd::new(&self.freed, PollFlags::IN), conn) {
                Woken::Retry => {}
                Woken::Left => return Err(Written::Left),
                Woken::GiveUp => return Err(Written::Done),
            }
        }
    }

    /// Writes `data` whole, waiting for its turn and for room as long as
    /// it takes, unless the stdin is closed meanwhile or the container
    /// closed its end ([`Written::Done`], the rest dropped), or the
    /// attacher on `conn` leaves ([`Written::Left`], the rest dropped).
    fn write(&self, mut data: &[u8], conn: BorrowedFd<'_>) -> Written {
        use rustix::event::{PollFd, PollFlags};
        use rustix::io::Errno;
        let _turn = match self.turn(conn) {
            Ok(t) => t,
            Err(why) => return why,
        };
        while !data.is_empty() && !self.closed.load(Ordering::SeqCst) {
            match rustix::io::write(&self.pipe, data) {
                Ok(n) => data = &data[n..],
                Err(Errno::AGAIN) => match self.wait(PollFd::new(&self.pipe, PollFlags::OUT), conn)
                {
                    Woken::Retry => {}
                    Woken::Left => return Written::Left,
                    Woken::GiveUp => return Written::Done,
                },
                Err(Errno::INTR) => {}
                // The container may have closed its stdin.
                Err(_) => return Written::Done,
            }
        }
        Written::Done
    }

    /// Closes it for writers: a waiting write gives up.
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }
}

/// The monitor's side: the listening socket, the attachers, the current
/// run's stdin and terminal.
#[derive(Debug)]
pub(crate) struct Hub {
    clients: Mutex<Vec<(u64, UnixStream)>>,
    next: AtomicU64,
    /// Attachers being served, counted until their thread ends (a write
    /// waiting for the container ends when its attacher leaves).
    serving: AtomicUsize,
    stdin: Mutex<Option<Arc<RunStdin>>>,
    master: Mutex<Option<OwnedFd>>,
}

impl Hub {
    /// A hub with no attacher and no run.
    fn new() -> Arc<Hub> {
        Arc::new(Hub {
            clients: Mutex::new(Vec::new()),
            next: AtomicU64::new(0),
            serving: AtomicUsize::new(0),
            stdin: Mutex::new(None),
            master: Mutex::new(None),
        })
    }

    /// Binds the attach socket in `dir` (a stale one removed first, no
    /// link followed) and serves attachers on a thread. Call while the
    /// process has one thread: the umask is changed around the bind.
    pub(crate) fn listen(dir: &Path) -> std::io::Result<Arc<Hub>> {
        let (dir_fd, path) = socket_path(dir)?;
        match rustix::fs::unlinkat(&dir_fd, SOCKET, rustix::fs::AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
        let bound = UnixListener::bind(&path);
        rustix::process::umask(old);
        let listener = bound?;
        let hub = Hub::new();
        let serving = Arc::clone(&hub);
        std::thread::spawn(move || {
            let _dir = dir_fd;
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                serving.add(conn);
            }
        });
        Ok(hub)
    }

    /// Takes a new attacher (refused beyond [`MAX_ATTACHERS`] served).
    fn add(self: &Arc<Hub>, conn: UnixStream) {
        let Ok(writer) = conn.try_clone() else { return };
        if writer.set_write_timeout(Some(SEND_TIMEOUT)).is_err() {
            return;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        {
            let mut clients = lock(&self.clients);
            if self.serving.load(Ordering::SeqCst) >= MAX_ATTACHERS {
                // Said, so the attacher does not take the close for the
                // end of the run.
                let mut conn = conn;
                let _ = write_frame(&mut conn, OUT_REFUSED, &[]);
                return;
            }
            // Said under the lock a broadcast takes, so the output that
            // follows reaches this attacher whole from here on.
            if write_frame(&mut &writer, OUT_ATTACHED, &[]).is_err() {
                return;
            }
            clients.push((n, writer));
            self.serving.fetch_add(1, Ordering::SeqCst);
        }
        let hub = Arc::clone(self);
        std::thread::spawn(move || {
            let mut conn = conn;
            hub.serve(&mut conn);
            lock(&hub.clients).retain(|(m, _)| *m != n);
            let _ = conn.shutdown(std::net::Shutdown::Both);
            hub.serving.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// One attacher's input, until it detaches or misbehaves.
    fn serve(&self, conn: &mut UnixStream) {
        loop {
            match read_frame(conn) {
                Ok(Frame::Data(IN_DATA, data)) => {
                    // Written without the lock, which a close and the
                    // run's end take.
                    let stdin = lock(&self.stdin).clone();
                    if let Some(stdin) = stdin {
                        if stdin.write(&data, conn.as_fd()) == Written::Left {
                            return;
                        }
                    }
                }
                Ok(Frame::Data(IN_CLOSE, _)) => self.close_stdin(),
                Ok(Frame::Data(IN_RESIZE, size)) if size.len() == 4 => {
                    let ws = rustix::termios::Winsize {
                        ws_row: u16::from_be_bytes([size[0], size[1]]),
                        ws_col: u16::from_be_bytes([size[2], size[3]]),
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    if let Some(m) = lock(&self.master).as_ref() {
                        let _ = rustix::termios::tcsetwinsize(m, ws);
                    }
                }
                _ => return,
            }
        }
    }

    /// A run begins: its stdin and its terminal's master.
    pub(crate) fn begin_run(&self, stdin: Option<RunStdin>, master: Option<OwnedFd>) {
        let old = std::mem::replace(&mut *lock(&self.stdin), stdin.map(Arc::new));
        if let Some(old) = old {
            old.close();
        }
        *lock(&self.master) = master;
    }

    /// Closes the run's stdin (the container reads the end of its input
    /// once every write in progress has given up).
    fn close_stdin(&self) {
        let stdin = lock(&self.stdin).take();
        if let Some(stdin) = stdin {
            stdin.close();
        }
    }

    /// A run's exit is recorded: its stdin closed, every attacher
    /// disconnected (each then reads the exit from the record).
    pub(crate) fn end_run(&self) {
        self.close_stdin();
        lock(&self.master).take();
        for (_, c) in lock(&self.clients).drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Sends a piece of the container's output to every attacher; one
    /// that does not take it in time is dropped.
    pub(crate) fn broadcast(&self, kind: u8, bytes: &[u8]) {
        let mut clients = lock(&self.clients);
        if clients.is_empty() {
            return;
        }
        for piece in bytes.chunks(MAX_FRAME) {
            clients.retain_mut(|(_, c)| {
                let ok = write_frame(c, kind, piece).is_ok();
                if !ok {
                    let _ = c.shutdown(std::net::Shutdown::Both);
                }
                ok
            });
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How an attachment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachEnd {
    /// The container's run ended with this exit code (`None`: unknown, or
    /// it was auto-removed).
    Exited(Option<i32>),
    /// The attacher detached (the detach keys, or [`AttachInput::detach`]);
    /// the container runs on.
    Detached,
}

/// A connection to a running detached container's monitor: its output
/// read with [`Attachment::copy_output`], its input sent through
/// [`Attachment::input`].
#[derive(Debug)]
pub struct Attachment {
    root: PathBuf,
    id: String,
    exits: u64,
    conn: UnixStream,
    detached: Arc<AtomicBool>,
}

/// The sending half of an [`Attachment`]: input, the end of input, window
/// sizes, detaching. Cheap to clone; usable from any thread.
#[derive(Debug)]
pub struct AttachInput {
    conn: Arc<Mutex<UnixStream>>,
    /// The same connection, shut down by a detach without waiting for a
    /// send that the container's full stdin holds up.
    control: Arc<UnixStream>,
    detached: Arc<AtomicBool>,
}

impl Clone for AttachInput {
    fn clone(&self) -> AttachInput {
        AttachInput {
            conn: Arc::clone(&self.conn),
            control: Arc::clone(&self.control),
            detached: Arc::clone(&self.detached),
        }
    }
}

impl AttachInput {
    fn send(&self, kind: u8, payload: &[u8]) -> std::io::Result<()> {
        write_frame(&mut *lock(&self.conn), kind, payload)
    }

    /// Sends bytes to the container's stdin (dropped when it was not made
    /// with stdin).
    ///
    /// The monitor writes each frame (at most [`MAX_FRAME`] bytes) whole
    /// unless the container's stdin closes first: a frame waiting for a
    /// container that does not read is cut (its rest dropped) when any
    /// attacher closes the stdin ([`AttachInput::close_stdin`]), when the
    /// run ends or restarts (the next run gets a new stdin), or when this
    /// attacher detaches or goes away. A return of `Ok` means the bytes
    /// were sent to the monitor, not that the container read them.
    ///
    /// # Errors
    /// The connection is gone (the run ended or the attacher detached).
    pub fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        bytes
            .chunks(MAX_FRAME)
            .try_for_each(|piece| self.send(IN_DATA, piece))
    }

    /// Closes the container's stdin (as the end of a pipe: `cat` ends).
    ///
    /// # Errors
    /// As [`AttachInput::write`].
    pub fn close_stdin(&self) -> std::io::Result<()> {
        self.send(IN_CLOSE, &[])
    }

    /// Gives the container's terminal a window size (ignored without one).
    ///
    /// # Errors
    /// As [`AttachInput::write`].
    pub fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()> {
        let mut size = rows.to_be_bytes().to_vec();
        size.extend_from_slice(&cols.to_be_bytes());
        self.send(IN_RESIZE, &size)
    }

    /// Links the caller's terminal `terminal` to the container's, as
    /// `docker attach` does under `-t`: raw mode (keys, ctrl-c and the
    /// detach keys included, go to the container), its window size sent
    /// now and on every `SIGWINCH`; dropping the link restores the
    /// terminal. `None` when `terminal` is no terminal. `SIGWINCH` is
    /// watched process-wide while the link lives.
    ///
    /// # Errors
    /// The terminal's attributes, the signal handler, sending the size.
    pub fn link_terminal(&self, terminal: impl AsFd) -> std::io::Result<Option<TerminalLink>> {
        let size = crate::native::tty::size_of(&terminal);
        let to = self.clone();
        let Some(link) = crate::native::tty::Link::with_resize(terminal, move |ws| {
            let _ = to.resize(ws.ws_row, ws.ws_col);
        })?
        else {
            return Ok(None);
        };
        if let Some((rows, cols)) = size {
            self.resize(rows, cols)?;
        }
        Ok(Some(TerminalLink { _link: link }))
    }

    /// Detaches: the output ends with [`AttachEnd::Detached`], the
    /// container runs on.
    pub fn detach(&self) {
        self.detached.store(true, Ordering::SeqCst);
        let _ = self.control.shutdown(std::net::Shutdown::Both);
    }
}

/// The caller's terminal linked to an attached container's terminal (see
/// [`AttachInput::link_terminal`]); dropping it restores the terminal.
#[derive(Debug)]
pub struct TerminalLink {
    _link: crate::native::tty::Link,
}

/// Connects to container `id`'s monitor under the state directory `root`
/// (see [`Runtime::attach_stream`](crate::Runtime::attach_stream)).
///
/// # Errors
/// [`AttachError::NotRunning`], [`AttachError::Connect`],
/// [`AttachError::Container`].
pub fn connect(root: &Path, id: &str) -> Result<Attachment, AttachError> {
    let r = super::observed(root, id)?;
    if r.detached.is_none() || r.status != ContainerStatus::Running {
        return Err(AttachError::NotRunning { id: id.to_owned() });
    }
    let connect_err = |path: PathBuf| {
        let id = id.to_owned();
        move |source| AttachError::Connect { id, path, source }
    };
    let (_dir, path) = socket_path(&r.bundle).map_err(connect_err(r.bundle.clone()))?;
    let mut conn = UnixStream::connect(&path).map_err(connect_err(r.bundle.join(SOCKET)))?;
    taken_in(&mut conn, id)?;
    Ok(Attachment {
        root: root.to_owned(),
        id: id.to_owned(),
        exits: r.detached.map_or(0, |d| d.exits),
        conn,
        detached: Arc::new(AtomicBool::new(false)),
    })
}

/// Waits (at most [`ATTACH_TIMEOUT`]) for the monitor's first frame on
/// `conn`: [`OUT_ATTACHED`], or why the attacher was not taken in.
fn taken_in(conn: &mut UnixStream, id: &str) -> Result<(), AttachError> {
    let io = |what| {
        let id = id.to_owned();
        move |source| AttachError::Io { id, what, source }
    };
    conn.set_read_timeout(Some(ATTACH_TIMEOUT))
        .map_err(io("waiting to be taken in"))?;
    let frame = read_frame(conn).map_err(io("waiting to be taken in"))?;
    conn.set_read_timeout(None)
        .map_err(io("waiting to be taken in"))?;
    match frame {
        Frame::Data(OUT_ATTACHED, _) => Ok(()),
        Frame::Data(OUT_REFUSED, _) => Err(AttachError::Busy {
            id: id.to_owned(),
            max: MAX_ATTACHERS,
        }),
        // Closed before taking it in: the run ended meanwhile.
        Frame::End => Err(AttachError::NotRunning { id: id.to_owned() }),
        Frame::TooLong | Frame::Data(..) => Err(AttachError::Protocol {
            id: id.to_owned(),
            why: "its first frame is not the greeting",
        }),
    }
}

impl Attachment {
    /// The sending half.
    ///
    /// # Errors
    /// The connection could not be duplicated.
    pub fn input(&self) -> Result<AttachInput, AttachError> {
        let share = || {
            self.conn.try_clone().map_err(|source| AttachError::Io {
                id: self.id.clone(),
                what: "sharing the connection",
                source,
            })
        };
        Ok(AttachInput {
            conn: Arc::new(Mutex::new(share()?)),
            control: Arc::new(share()?),
            detached: Arc::clone(&self.detached),
        })
    }

    /// Copies the container's output to `stdout` and `stderr` as it comes,
    /// until the run ends (then its exit code, read from the record) or an
    /// [`AttachInput`] detaches. Blocks.
    ///
    /// # Errors
    /// [`AttachError::Io`] when reading the output or writing it fails,
    /// [`AttachError::Protocol`] on a malformed frame, the record's errors.
    pub fn copy_output(
        mut self,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> Result<AttachEnd, AttachError> {
        let io = |what, id: &str| {
            let id = id.to_owned();
            move |source| AttachError::Io { id, what, source }
        };
        loop {
            let frame = match read_frame(&mut self.conn) {
                Ok(f) => f,
                // Shut down by a detach: an end like any other.
                Err(_) if self.detached.load(Ordering::SeqCst) => Frame::End,
                Err(e) => return Err(io("reading its output", &self.id)(e)),
            };
            let (to_stderr, bytes) = match frame {
                Frame::End => break,
                Frame::TooLong => return Err(self.protocol("too long")),
                Frame::Data(OUT_STDOUT, b) => (false, b),
                Frame::Data(OUT_STDERR, b) => (true, b),
                Frame::Data(OUT_REFUSED, _) => {
                    return Err(AttachError::Busy {
                        id: self.id.clone(),
                        max: MAX_ATTACHERS,
                    })
                }
                Frame::Data(..) => return Err(self.protocol("unknown kind")),
            };
            let sink: &mut dyn Write = if to_stderr { stderr } else { stdout };
            sink.write_all(&bytes)
                .and_then(|()| sink.flush())
                .map_err(io("writing its output", &self.id))?;
        }
        if self.detached.load(Ordering::SeqCst) {
            return Ok(AttachEnd::Detached);
        }
        Ok(AttachEnd::Exited(super::query::wait_after(
            &self.root, &self.id, self.exits,
        )?))
    }

    fn protocol(&self, why: &'static str) -> AttachError {
        AttachError::Protocol {
            id: self.id.clone(),
            why,
        }
    }
}

/// Attaches the caller's streams to container `id` under `root` (see
/// [`Runtime::attach_io`](crate::Runtime::attach_io)).
///
/// # Errors
/// As [`connect`] and [`Attachment::copy_output`].
pub fn attach_io(
    root: &Path,
    id: &str,
    stdin: Option<Box<dyn Read + Send>>,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
    keys: DetachKeys,
) -> Result<AttachEnd, AttachError> {
    connect(root, id)?.run(stdin, stdout, stderr, keys)
}

impl Attachment {
    /// Sends `stdin` (read on a thread of its own) to the container until
    /// its end, which closes the container's stdin, or until `keys`, which
    /// detach; copies the output meanwhile (see [`Attachment::copy_output`]).
    ///
    /// # Errors
    /// As [`Attachment::copy_output`].
    pub fn run(
        self,
        stdin: Option<Box<dyn Read + Send>>,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
        keys: DetachKeys,
    ) -> Result<AttachEnd, AttachError> {
        if let Some(stdin) = stdin {
            let input = self.input()?;
            std::thread::spawn(move || forward_input(stdin, &input, keys));
        }
        self.copy_output(stdout, stderr)
    }
}

/// Sends `stdin` to the container until its end (then the container's
/// stdin is closed) or the detach keys (then the attacher detaches).
fn forward_input(mut stdin: Box<dyn Read + Send>, input: &AttachInput, keys: DetachKeys) {
    let mut scanner = DetachScanner::new(keys);
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        match scanner.feed(&buf[..n]) {
            Scanned::Input(b) => {
                if !b.is_empty() && input.write(&b).is_err() {
                    return;
                }
            }
            Scanned::Detach(b) => {
                let _ = input.write(&b);
                input.detach();
                return;
            }
        }
    }
    let _ = input.write(&scanner.finish());
    let _ = input.close_stdin();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_detach_key_syntax() {
        let k = |s: &str| s.parse::<DetachKeys>().map(|k| k.bytes().to_vec());
        assert_eq!(k("ctrl-p,ctrl-q").unwrap(), [0x10, 0x11]);
        assert_eq!(DetachKeys::default().bytes(), [0x10, 0x11]);
        assert_eq!(k("a,ctrl-@,ctrl-[,ctrl-_").unwrap(), [b'a', 0, 27, 31]);
        assert_eq!(k("ctrl-A").unwrap(), [1]);
        for bad in ["", "ctrl-", "ctrl-1", "ab", "a,,b", "é"] {
            assert!(bad.parse::<DetachKeys>().is_err(), "{bad:?}");
        }
    }

    /// Feeding `input` in pieces cut at `cuts` gives what reached the
    /// container and whether it detached.
    fn scan(keys: &[u8], input: &[u8], cuts: &[usize]) -> (Vec<u8>, bool) {
        let mut s = DetachScanner::new(DetachKeys(keys.to_vec()));
        let mut out = Vec::new();
        let mut at = 0;
        for &c in cuts.iter().chain([&input.len()]) {
            let c = c.clamp(at, input.len());
            match s.feed(&input[at..c]) {
                Scanned::Input(b) => out.extend(b),
                Scanned::Detach(b) => {
                    out.extend(b);
                    return (out, true);
                }
            }
            at = c;
        }
        out.extend(s.finish());
        (out, false)
    }

    /// The reference: the input before the first occurrence of the keys,
    /// and whether there is one.
    fn reference(keys: &[u8], input: &[u8]) -> (Vec<u8>, bool) {
        if keys.is_empty() {
            return (input.to_vec(), false);
        }
        match input.windows(keys.len()).position(|w| w == keys) {
            Some(p) => (input[..p].to_vec(), true),
            None => (input.to_vec(), false),
        }
    }

    /// Generated inputs over a small alphabet (so partial matches are
    /// frequent), cut anywhere: the scanner agrees with the reference.
    #[test]
    fn the_scanner_finds_exactly_the_first_sequence_however_cut() {
        let mut next = image_testsupport::xorshift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..5000 {
            let klen = (next() % 4) as usize;
            let keys: Vec<u8> = (0..klen).map(|_| (next() % 3) as u8).collect();
            let len = (next() % 24) as usize;
            let input: Vec<u8> = (0..len).map(|_| (next() % 3) as u8).collect();
            let cuts: Vec<usize> = {
                let mut c: Vec<usize> = (0..(next() % 5)).map(|_| (next() % 25) as usize).collect();
                c.sort_unstable();
                c
            };
            assert_eq!(
                scan(&keys, &input, &cuts),
                reference(&keys, &input),
                "keys {keys:?} input {input:?} cuts {cuts:?}"
            );
        }
    }

    /// A refused attacher gets a typed `Busy` when it connects.
    #[test]
    fn a_refused_attacher_is_told_so_when_it_connects() {
        let (mut mine, mut theirs) = UnixStream::pair().unwrap();
        write_frame(&mut theirs, OUT_REFUSED, &[]).unwrap();
        let e = taken_in(&mut mine, "c1").unwrap_err();
        assert!(matches!(e, AttachError::Busy { .. }), "{e:?}");
        drop(theirs);
        let e = taken_in(&mut mine, "c1").unwrap_err();
        assert!(matches!(e, AttachError::NotRunning { .. }), "{e:?}");
    }

    /// An attacher the monitor takes in late (its accept thread slow)
    /// is told so before any output, and once told sees all the output
    /// that follows: what `attach_stream` returning promises. Before the
    /// greeting, an attachment could return before the monitor served
    /// it, and miss what the container wrote meanwhile (a second
    /// attacher missed the echo of the first one's input under load).
    #[test]
    fn an_attacher_sees_all_the_output_once_taken_in() {
        let hub = Hub::new();
        let (mut mine, theirs) = UnixStream::pair().unwrap();
        let adding = {
            let hub = Arc::clone(&hub);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                hub.add(theirs);
            })
        };
        taken_in(&mut mine, "c1").unwrap();
        hub.broadcast(OUT_STDOUT, b"right after");
        assert!(matches!(
            read_frame(&mut mine).unwrap(),
            Frame::Data(OUT_STDOUT, b) if b == b"right after"
        ));
        adding.join().unwrap();
    }

    /// A refused attacher's frame read by the output copy is a typed
    /// `Busy` too, not the end of a run.
    #[test]
    fn a_refused_attacher_is_told_so() {
        let (mine, mut theirs) = UnixStream::pair().unwrap();
        write_frame(&mut theirs, OUT_REFUSED, &[]).unwrap();
        drop(theirs);
        let a = Attachment {
            root: PathBuf::from("/nonexistent"),
            id: "c1".into(),
            exits: 0,
            conn: mine,
            detached: Arc::new(AtomicBool::new(false)),
        };
        let e = a
            .copy_output(&mut std::io::sink(), &mut std::io::sink())
            .unwrap_err();
        assert!(
            matches!(
                e,
                AttachError::Busy {
                    max: MAX_ATTACHERS,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.kind(), ErrorKind::Unavailable);
    }

    /// Bytes waiting in the pipe whose read end is `r`.
    fn waiting(r: &OwnedFd) -> u64 {
        rustix::io::ioctl_fionread(r).unwrap()
    }

    /// Whether every write end of the pipe whose read end is `r` is
    /// closed (without reading it).
    fn hung_up(r: &OwnedFd) -> bool {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let mut fds = [PollFd::new(r, PollFlags::IN)];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        poll(&mut fds, Some(&now)).unwrap();
        fds[0].revents().contains(PollFlags::HUP)
    }

    /// Waits, a generous minute at most, until `done` holds; whether it did.
    fn eventually(mut done: impl FnMut() -> bool) -> bool {
        let end = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < end {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// `f`'s result, run on a thread, if it ends within a generous minute.
    fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(60)).ok()
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    /// A new attacher of `hub` (a connected pair, as the listener adds).
    fn attacher(hub: &Arc<Hub>) -> AttachInput {
        let (mine, theirs) = UnixStream::pair().unwrap();
        hub.add(theirs);
        AttachInput {
            control: Arc::new(mine.try_clone().unwrap()),
            conn: Arc::new(Mutex::new(mine)),
            detached: Arc::new(AtomicBool::new(false)),
        }
    }

    /// What the attacher of [`stalled`] sends, in pipefuls: more than
    /// the pipe and the socket's buffers hold together.
    const SENT: usize = 16;

    /// A run whose stdin is a real pipe nobody reads yet (its read end,
    /// and how much it holds), with one attacher (returned) that sends
    /// [`SENT`] times what the pipe holds: once the pipe is full, that
    /// input waits, and so does the attacher's sending.
    fn stalled() -> (Arc<Hub>, OwnedFd, usize, AttachInput) {
        let hub = Hub::new();
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let room = rustix::pipe::fcntl_getpipe_size(&r).unwrap();
        hub.begin_run(Some(RunStdin::new(w).unwrap()), None);
        let input = attacher(&hub);
        let sending = input.clone();
        std::thread::spawn(move || sending.write(&pattern(SENT * room)));
        assert!(
            eventually(|| waiting(&r) == room as u64),
            "the pipe never filled"
        );
        (hub, r, room, input)
    }

    /// Another attacher's close (the end of its input) is served while
    /// the first one's input waits for a container that does not read:
    /// the container's stdin closes, after the bytes already in the pipe.
    #[test]
    fn a_close_is_served_while_another_attachers_input_waits() {
        let (hub, r, room, _) = stalled();
        let other = attacher(&hub);
        other.close_stdin().unwrap();
        other.detach();
        assert!(
            eventually(|| hung_up(&r)),
            "the close waited behind the pending input"
        );
        let mut got = Vec::new();
        std::fs::File::from(r).read_to_end(&mut got).unwrap();
        assert_eq!(got, pattern(room));
    }

    /// The run's end is recorded while an attacher's input waits for a
    /// container that does not read: `end_run` returns and the stdin
    /// closes.
    #[test]
    fn the_run_ends_while_an_attachers_input_waits() {
        let (hub, r, _, _) = stalled();
        let ending = Arc::clone(&hub);
        assert!(
            within(move || ending.end_run()).is_some(),
            "the run's end waited behind the pending input"
        );
        assert!(eventually(|| hung_up(&r)));
    }

    /// A container that reads slowly gets every byte of a pending input,
    /// in order, from an attacher that stays attached.
    #[test]
    fn a_slow_reader_gets_all_the_input_in_order() {
        let (_hub, r, room, _staying) = stalled();
        let got = within(move || {
            let mut got = vec![0u8; SENT * room];
            std::fs::File::from(r).read_exact(&mut got).map(|()| got)
        });
        assert_eq!(
            got.expect("the input stopped").unwrap(),
            pattern(SENT * room)
        );
    }

    /// An attacher whose sending waits for the container can still
    /// detach (its connection is shut down without the sending's lock).
    #[test]
    fn an_attacher_whose_input_waits_detaches() {
        let (_hub, _r, _, input) = stalled();
        assert!(
            within(move || input.detach()).is_some(),
            "the detach waited behind the attacher's own input"
        );
    }

    /// Attachers whose input waits for the container count against
    /// [`MAX_ATTACHERS`] while they stay (a 17th is refused), but once
    /// they detach their waiting input gives up and their places free: a
    /// new attacher is then served and its input reaches the container.
    #[test]
    fn attachers_whose_waiting_input_detach_free_their_places() {
        let (hub, r, room, first) = stalled();
        let mut others = Vec::new();
        for _ in 1..MAX_ATTACHERS {
            let other = attacher(&hub);
            // Waits behind the first attacher's input.
            other.write(b"more").unwrap();
            others.push(other);
        }
        let (mut refused, theirs) = UnixStream::pair().unwrap();
        refused
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        hub.add(theirs);
        assert!(
            matches!(read_frame(&mut refused), Ok(Frame::Data(OUT_REFUSED, _))),
            "a 17th attacher was served"
        );
        first.detach();
        others.iter().for_each(AttachInput::detach);
        assert!(
            eventually(|| hub.serving.load(Ordering::SeqCst) == 0),
            "detached attachers kept their places"
        );
        let served = attacher(&hub);
        assert_eq!(hub.serving.load(Ordering::SeqCst), 1);
        let mut pipe = std::fs::File::from(r);
        let mut got = vec![0u8; room];
        pipe.read_exact(&mut got).unwrap();
        assert_eq!(got, pattern(room), "a departed attacher's input got in");
        served.write(b"new").unwrap();
        let got = within(move || {
            let mut got = [0u8; 3];
            pipe.read_exact(&mut got).map(|()| got)
        });
        assert_eq!(&got.expect("the new input never came").unwrap(), b"new");
    }

    #[test]
    fn frames_round_trip_and_are_bounded() {
        let mut wire = Vec::new();
        write_frame(&mut wire, OUT_STDERR, b"hi").unwrap();
        write_frame(&mut wire, IN_CLOSE, b"").unwrap();
        let mut r = &wire[..];
        assert!(matches!(read_frame(&mut r).unwrap(), Frame::Data(OUT_STDERR, b) if b == b"hi"));
        assert!(matches!(read_frame(&mut r).unwrap(), Frame::Data(IN_CLOSE, b) if b.is_empty()));
        assert!(matches!(read_frame(&mut r).unwrap(), Frame::End));
        let mut long = vec![IN_DATA];
        long.extend_from_slice(&(MAX_FRAME as u32 + 1).to_be_bytes());
        assert!(matches!(
            read_frame(&mut &long[..]).unwrap(),
            Frame::TooLong
        ));
        assert!(read_frame(&mut &long[..3]).is_err());
    }
}
