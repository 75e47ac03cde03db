//! The caller's terminal while a native container runs with `-t` and
//! the caller's standard input: put in raw mode (keys, Ctrl-C included,
//! go to the container's terminal, which does its own line editing and
//! signals), its window size given to the container's terminal at start
//! and on every `SIGWINCH` (`TIOCSWINSZ` on the pty master, which
//! signals the container's foreground process), and restored when the
//! container's terminal closes, as `docker run -it` does.

use std::os::fd::{AsFd, OwnedFd};

use rustix::termios::{
    tcgetattr, tcgetwinsize, tcsetattr, tcsetwinsize, OptionalActions, Termios, Winsize,
};
use signal_hook::consts::SIGWINCH;
use signal_hook::iterator::{Handle, Signals};

/// The caller's terminal linked to a container's pty; dropping it
/// restores the terminal's mode and stops the forwarding.
#[derive(Debug)]
pub(crate) struct Link {
    terminal: OwnedFd,
    saved: Termios,
    winch: Option<Handle>,
}

/// The window size of the caller's terminal `terminal` (rows, columns),
/// when it is one and has a size.
pub(crate) fn size_of(terminal: impl AsFd) -> Option<(u16, u16)> {
    let ws = tcgetwinsize(terminal).ok()?;
    (ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

impl Link {
    /// Links the caller's terminal `terminal` to the pty `master`: raw
    /// mode now, window sizes forwarded from now on. `None` when
    /// `terminal` is no terminal (nothing to do).
    ///
    /// # Errors
    /// The terminal's attributes could not be read or set; the signal
    /// handler could not be installed.
    pub(crate) fn new(terminal: impl AsFd, master: &OwnedFd) -> std::io::Result<Option<Link>> {
        let to = master.try_clone()?;
        Link::with_resize(terminal, move |ws| {
            let _ = tcsetwinsize(&to, ws);
        })
    }

    /// Links the caller's terminal `terminal` to whatever `resize` sizes:
    /// raw mode now, `resize` called with each new window size on
    /// `SIGWINCH`. `None` when `terminal` is no terminal.
    ///
    /// # Errors
    /// As [`Link::new`].
    pub(crate) fn with_resize(
        terminal: impl AsFd,
        resize: impl Fn(Winsize) + Send + 'static,
    ) -> std::io::Result<Option<Link>> {
        if !rustix::termios::isatty(&terminal) {
            return Ok(None);
        }
        let terminal = terminal.as_fd().try_clone_to_owned()?;
        let saved = tcgetattr(&terminal)?;
        let mut signals = Signals::new([SIGWINCH])?;
        let winch = signals.handle();
        let from = terminal.try_clone()?;
        std::thread::spawn(move || {
            for _ in signals.forever() {
                if let Ok(ws) = tcgetwinsize(&from) {
                    resize(ws);
                }
            }
        });
        let mut raw = saved.clone();
        raw.make_raw();
        let link = Link {
            terminal,
            saved,
            winch: Some(winch),
        };
        tcsetattr(&link.terminal, OptionalActions::Now, &raw)?;
        Ok(Some(link))
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = tcsetattr(&self.terminal, OptionalActions::Now, &self.saved);
        if let Some(h) = self.winch.take() {
            h.close();
        }
    }
}
