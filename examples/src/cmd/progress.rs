//! Progress bars on a terminal (`load`, `save`, `copy`, `unpack`), none
//! when standard error is not a terminal or with `--quiet`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, PoisonError};

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
        if self.quiet || !std::io::stderr().is_terminal() {
            return Tracker::default();
        }
        Tracker::default().with_progress(Arc::new(Bars::new()))
    }
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
