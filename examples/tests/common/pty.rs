//! A pty a test owns as imagectl's terminal: made, sized, read into a
//! buffer on a thread, its mode checked.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustix::termios::{tcgetattr, LocalModes, Winsize};

use super::TIMEOUT;

/// A window size.
pub fn winsize(rows: u16, cols: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// A new pty: (master, slave).
pub fn pty() -> (OwnedFd, OwnedFd) {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let slave = rustix::fs::open(
        name.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    (master, slave)
}

/// Whether the terminal is in canonical (not raw) mode.
pub fn canonical(master: &OwnedFd) -> bool {
    tcgetattr(master)
        .unwrap()
        .local_modes
        .contains(LocalModes::ICANON)
}

/// What was read from a master (or any descriptor), on a thread, until
/// its end (a master reads EIO once every slave is closed).
pub struct Seen {
    seen: Arc<Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Seen {
    /// Starts reading `from`.
    pub fn start(from: OwnedFd) -> Seen {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let seen = Arc::clone(&seen);
            let mut m = std::fs::File::from(from);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = m.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    seen.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            })
        };
        Seen { seen, reader }
    }

    /// What was read so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    /// Waits (bounded by TIMEOUT) until what was read holds `text`.
    pub fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let s = self.text();
            if s.contains(text) {
                return;
            }
            assert!(Instant::now() < deadline, "no {text:?} in {s:?}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Waits for the end of what is read (every writer gone); all of it.
    pub fn finish(self) -> String {
        let _ = self.reader.join();
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }
}
