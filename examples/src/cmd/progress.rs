//! Progress bars on a terminal (`load`, `save`, `copy`, `unpack`), none
//! when standard error is not a terminal or with `--quiet`; and Ctrl-C:
//! the trackers of long commands carry the process's [`interrupt`], which
//! SIGINT and SIGTERM set, so the library stops and cleans up (containers
//! stopped, snapshots removed, leases released) and imagectl exits 130.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use image_core::progress::Interrupt;
use image_core::{Progress, Tracker};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Output options shared by every command.
#[derive(Debug, Clone, clap::Args)]
pub struct UiArgs {
    /// Show no progress bars (they are shown only when standard error is a
    /// terminal); `ps` prints only container IDs.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

impl UiArgs {
    /// The tracker of a long operation: bars on standard error when it is
    /// a terminal and `--quiet` was not given, else one that reports nothing.
    pub fn tracker(&self) -> Tracker {
        let tracker = Tracker::default().with_interrupt(interrupt());
        if self.quiet || !std::io::stderr().is_terminal() {
            return tracker;
        }
        tracker.with_progress(Arc::new(Bars::new()))
    }
}

/// The interrupt of this process, set by its first SIGINT or SIGTERM (the
/// handlers are installed on the first call, by a command that watches
/// it); a second signal while it is set ends the process at once with
/// status 130, for an operation that does not stop.
pub fn interrupt() -> Interrupt {
    static INTERRUPT: OnceLock<Interrupt> = OnceLock::new();
    INTERRUPT
        .get_or_init(|| {
            let flag = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                // The conditional exit first: it sees the flag as it was
                // before this signal set it. A handler that cannot be
                // installed leaves the signal's default action (the process
                // ends, as it did before).
                let _ = signal_hook::flag::register_conditional_shutdown(
                    signal,
                    130,
                    Arc::clone(&flag),
                );
                let _ = signal_hook::flag::register(signal, Arc::clone(&flag));
            }
            Interrupt::from_flag(flag)
        })
        .clone()
}

/// One bar per item, under one another.
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn new() -> Bars {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, item: &str) -> Option<ProgressBar> {
        self.bars
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(item)
            .cloned()
    }
}

/// `sha256:0123456789ab` for a digest, the name itself otherwise.
fn label(item: &str) -> String {
    match item.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            format!("{alg}:{}", &hex[..12])
        }
        _ => item.to_owned(),
    }
}

impl Progress for Bars {
    fn item_started(&self, item: &str, total: Option<u64>) {
        let bar = match total {
            Some(total) => ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "{msg:24} [{bar:30}] {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
            None => ProgressBar::no_length().with_style(
                ProgressStyle::with_template("{spinner} {msg:24} {bytes:>10} {bytes_per_sec:>12}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        let bar = self.multi.add(bar.with_message(label(item)));
        self.bars
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(item.to_owned(), bar);
    }

    fn item_progress(&self, item: &str, done: u64) {
        if let Some(bar) = self.bar(item) {
            bar.set_position(done);
        }
    }

    fn item_finished(&self, item: &str) {
        let bar = self
            .bars
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(item);
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        // Bars of items that did not finish (a failed or stopped operation)
        // are taken off the terminal before the error is printed.
        for (_, bar) in self
            .bars
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
        {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_shorten_digests_only() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(label(&d), "sha256:abababababab");
        assert_eq!(label("blobs/sha256/x"), "blobs/sha256/x");
        assert_eq!(label("archive"), "archive");
    }
}
