//! Standard input and output of a container process: inherited, discarded,
//! captured, streamed to a caller's writer or file descriptor, and stdin
//! fed from bytes or a descriptor. Pumps are threads; [`Pumps::finish`]
//! joins them once the process has exited.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{ChildStderr, ChildStdin, ChildStdout, Command};
use std::thread::JoinHandle;

/// Where the process's stdin comes from.
#[derive(Debug, Default)]
#[non_exhaustive]
pub enum Input {
    /// `/dev/null`.
    #[default]
    Null,
    /// The caller's own stdin.
    Inherit,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// A file descriptor (a pipe, a file).
    Fd(OwnedFd),
    /// Read from `input` as [`Input::Fd`]; when the process has a terminal
    /// (`process.terminal`), a copy of the terminal's master is also sent
    /// on `master` as soon as it exists, so that the caller can size it
    /// (what a detached container's monitor does for its attachers).
    Terminal {
        /// Where the input comes from.
        input: OwnedFd,
        /// Receives the terminal's master.
        master: std::sync::mpsc::Sender<OwnedFd>,
    },
}

/// Where stdout or stderr goes.
#[derive(Default)]
#[non_exhaustive]
pub enum Output {
    /// `/dev/null`.
    Null,
    /// The caller's own stdout / stderr.
    Inherit,
    /// Collected into [`crate::backend::Exit`].
    #[default]
    Capture,
    /// Copied to a writer as it comes (on a thread).
    Stream(Box<dyn Write + Send>),
    /// Written directly to a file descriptor.
    Fd(OwnedFd),
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Null => f.write_str("Null"),
            Output::Inherit => f.write_str("Inherit"),
            Output::Capture => f.write_str("Capture"),
            Output::Stream(_) => f.write_str("Stream(..)"),
            Output::Fd(fd) => f.debug_tuple("Fd").field(fd).finish(),
        }
    }
}

/// The three standard streams of a container process. The default: stdin
/// from `/dev/null`, stdout and stderr captured.
#[derive(Debug, Default)]
pub struct Stdio {
    /// Standard input.
    pub stdin: Input,
    /// Standard output.
    pub stdout: Output,
    /// Standard error.
    pub stderr: Output,
}

impl Stdio {
    /// Everything inherited from the caller.
    pub fn inherit() -> Stdio {
        Stdio {
            stdin: Input::Inherit,
            stdout: Output::Inherit,
            stderr: Output::Inherit,
        }
    }

    /// stdin null, stdout and stderr captured (the default).
    pub fn capture() -> Stdio {
        Stdio::default()
    }
}

fn out_stdio(o: &mut Output) -> std::process::Stdio {
    match std::mem::replace(o, Output::Null) {
        Output::Null => std::process::Stdio::null(),
        Output::Inherit => std::process::Stdio::inherit(),
        Output::Fd(fd) => std::process::Stdio::from(fd),
        other => {
            *o = other;
            std::process::Stdio::piped()
        }
    }
}

/// Sets a command's stdio from `stdio`; what needs a thread is returned as
/// [`PendingIo`] to be started once the child is spawned.
pub fn apply(cmd: &mut Command, mut stdio: Stdio) -> PendingIo {
    let mut input = None;
    match std::mem::take(&mut stdio.stdin) {
        Input::Null => {
            cmd.stdin(std::process::Stdio::null());
        }
        Input::Inherit => {
            cmd.stdin(std::process::Stdio::inherit());
        }
        Input::Fd(fd) | Input::Terminal { input: fd, .. } => {
            cmd.stdin(std::process::Stdio::from(fd));
        }
        Input::Bytes(b) => {
            cmd.stdin(std::process::Stdio::piped());
            input = Some(b);
        }
    }
    cmd.stdout(out_stdio(&mut stdio.stdout));
    cmd.stderr(out_stdio(&mut stdio.stderr));
    PendingIo {
        input,
        stdout: stdio.stdout,
        stderr: stdio.stderr,
    }
}

/// Stdio work to start once the child exists.
#[derive(Debug)]
pub struct PendingIo {
    input: Option<Vec<u8>>,
    stdout: Output,
    stderr: Output,
}

/// Running pump threads.
#[derive(Debug, Default)]
pub struct Pumps {
    input: Option<JoinHandle<()>>,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

fn pump<R: Read + Send + 'static>(r: Option<R>, out: Output) -> Option<JoinHandle<Vec<u8>>> {
    let mut r = r?;
    match out {
        Output::Capture => Some(std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })),
        Output::Stream(mut w) => Some(std::thread::spawn(move || {
            let _ = std::io::copy(&mut r, &mut w);
            let _ = w.flush();
            Vec::new()
        })),
        _ => None,
    }
}

impl PendingIo {
    /// Starts the threads on the child's pipes.
    pub fn start(
        self,
        stdin: Option<ChildStdin>,
        stdout: Option<ChildStdout>,
        stderr: Option<ChildStderr>,
    ) -> Pumps {
        let input = match (self.input, stdin) {
            (Some(bytes), Some(mut w)) => Some(std::thread::spawn(move || {
                // A process that does not read its stdin closes the pipe: not an error.
                let _ = w.write_all(&bytes);
            })),
            _ => None,
        };
        Pumps::new(input, pump(stdout, self.stdout), pump(stderr, self.stderr))
    }
}

impl Pumps {
    /// Pumps from their threads: the stdin feeder and the stdout and
    /// stderr readers (each returning what it captured). Also used by the
    /// native backend, whose threads work on its own descriptors.
    pub(crate) fn new(
        input: Option<JoinHandle<()>>,
        stdout: Option<JoinHandle<Vec<u8>>>,
        stderr: Option<JoinHandle<Vec<u8>>>,
    ) -> Pumps {
        Pumps {
            input,
            stdout,
            stderr,
        }
    }

    /// Waits for the pumps (every writer of the pipes must have closed
    /// them, which happens when the container's processes are gone) and
    /// returns captured stdout and stderr.
    pub fn finish(&mut self) -> (Vec<u8>, Vec<u8>) {
        if let Some(h) = self.input.take() {
            let _ = h.join();
        }
        let out = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let err = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        (out, err)
    }
}
