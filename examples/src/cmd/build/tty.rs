//! `imagectl build --progress tty`: BuildKit's tty display. The steps that
//! run are shown with their elapsed time and their last output lines,
//! redrawn in place; a step that ends settles as one line above them
//! (`DONE 0.3s` or `CACHED`), as do warnings and skipped stages; at the end
//! the live area is cleared and the plain summary follows.
//!
//! [`Tty`] is the state machine (events in, frames out, no terminal);
//! [`Painter`] draws its frames with ANSI sequences; [`Live`] ties them to a
//! ticker thread that redraws the elapsed times between events.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use image_build::build::BuildEvent;

/// The output lines kept for each running step.
pub const OUTPUT_LINES: usize = 5;

/// How often the elapsed times are redrawn without an event.
const TICK: Duration = Duration::from_millis(150);

/// A step that runs.
#[derive(Debug)]
struct Running {
    title: String,
    started: Instant,
    cached: bool,
    output: VecDeque<String>,
}

/// What a frame shows: lines settled since the last frame (printed once,
/// above the live area), and the live area itself.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Frame {
    /// Printed once, for good.
    pub settled: Vec<String>,
    /// Redrawn in place.
    pub live: Vec<String>,
}

/// The display's state, fed the build's events.
#[derive(Debug, Default)]
pub struct Tty {
    running: BTreeMap<usize, Running>,
    settled: Vec<String>,
}

/// A line of a RUN's output as the terminal may show it: control
/// characters (a hostile RUN could move the cursor or clear the screen)
/// shown as `?`, tabs as a space.
fn printable(line: &str) -> String {
    line.chars()
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

/// The step a `StepStarted` starts and its title, `#step [stage
/// index/total] text`, as the plain display writes it too.
pub fn started(e: &BuildEvent) -> Option<(usize, String)> {
    let BuildEvent::StepStarted {
        step,
        stage,
        index,
        total,
        text,
    } = e
    else {
        return None;
    };
    let at = if stage == "stage-0" {
        format!("{index}/{total}")
    } else {
        format!("{stage} {index}/{total}")
    };
    Some((*step, format!("#{step} [{at}] {text}")))
}

impl Tty {
    /// Takes one event of the build, seen at `now`.
    pub fn event(&mut self, e: &BuildEvent, now: Instant) {
        if let Some((step, title)) = started(e) {
            let running = Running {
                title: printable(&title),
                started: now,
                cached: false,
                output: VecDeque::new(),
            };
            self.running.insert(step, running);
            return;
        }
        match e {
            BuildEvent::StepCached { step } => {
                if let Some(r) = self.running.get_mut(step) {
                    r.cached = true;
                }
            }
            BuildEvent::Output { step, line, .. } => {
                if let Some(r) = self.running.get_mut(step) {
                    if r.output.len() == OUTPUT_LINES {
                        r.output.pop_front();
                    }
                    r.output.push_back(printable(line));
                }
            }
            BuildEvent::StepDone { step, elapsed, .. } => {
                if let Some(r) = self.running.remove(step) {
                    let end = if r.cached {
                        "CACHED".to_owned()
                    } else {
                        format!("DONE {:.1}s", elapsed.as_secs_f64())
                    };
                    self.settled.push(format!("{} {end}", r.title));
                }
            }
            BuildEvent::StageSkipped { stage } => {
                self.settled.push(format!("skipping stage {stage}"));
            }
            BuildEvent::Warning { message } => {
                self.settled
                    .push(format!("WARNING: {}", printable(message)));
            }
            _ => {}
        }
    }

    /// The frame at `now`: the lines settled since the last frame, then
    /// each running step with its elapsed time and last output lines, each
    /// line cut to `width` columns so that none wraps.
    pub fn frame(&mut self, now: Instant, width: usize) -> Frame {
        let cut = |s: &str| console::truncate_str(s, width, "").into_owned();
        let mut live = Vec::new();
        for r in self.running.values() {
            let secs = now.saturating_duration_since(r.started).as_secs_f64();
            live.push(cut(&format!("{} {secs:.1}s", r.title)));
            for line in &r.output {
                live.push(cut(&format!("  {line}")));
            }
        }
        Frame {
            settled: std::mem::take(&mut self.settled)
                .iter()
                .map(|l| cut(l))
                .collect(),
            live,
        }
    }

    /// The steps still running (the display's end clears them).
    pub fn running(&self) -> usize {
        self.running.len()
    }
}

/// Draws frames on a terminal: the live area of the last frame is erased
/// (cursor up, clear to the end of the screen) and the new one drawn.
#[derive(Debug)]
pub struct Painter<W: Write> {
    out: W,
    drawn: usize,
}

impl<W: Write> Painter<W> {
    /// A painter on `out`, which nothing has been drawn on.
    pub fn new(out: W) -> Self {
        Painter { out, drawn: 0 }
    }

    /// Replaces the last frame's live area with `frame`.
    pub fn paint(&mut self, frame: &Frame) -> std::io::Result<()> {
        let mut buf = Vec::new();
        if self.drawn > 0 {
            write!(buf, "\x1b[{}F\x1b[J", self.drawn)?;
        }
        for line in frame.settled.iter().chain(&frame.live) {
            writeln!(buf, "{line}")?;
        }
        self.drawn = frame.live.len();
        self.out.write_all(&buf)?;
        self.out.flush()
    }

    /// The writer, for what follows the display (the summary).
    pub fn out(&mut self) -> &mut W {
        &mut self.out
    }
}

/// The display while a build runs: its state and painter shared with a
/// thread that redraws the elapsed times.
pub struct Live<W: Write + Send + 'static> {
    shared: Arc<Mutex<(Tty, Painter<W>)>>,
    stop: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
    width: usize,
}

impl<W: Write + Send + 'static> Live<W> {
    /// Starts the display on `out`, `width` columns wide.
    pub fn start(out: W, width: usize) -> Self {
        let shared = Arc::new(Mutex::new((Tty::default(), Painter::new(out))));
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("build-progress".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        let mut guard = shared.lock().unwrap_or_else(PoisonError::into_inner);
                        let (tty, painter) = &mut *guard;
                        if tty.running() > 0 {
                            let _ = painter.paint(&tty.frame(Instant::now(), width));
                        }
                    }
                })
                .ok()
        };
        Live {
            shared,
            stop,
            ticker,
            width,
        }
    }

    /// Takes one event and redraws.
    pub fn event(&self, e: &BuildEvent) {
        let mut guard = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let (tty, painter) = &mut *guard;
        let now = Instant::now();
        tty.event(e, now);
        // Best effort: a closed stderr does not stop a build.
        let _ = painter.paint(&tty.frame(now, self.width));
    }

    /// Stops redrawing, clears the live area (the settled lines stay), and
    /// runs `then` on the writer (the summary, or a failure's last lines).
    pub fn finish(&mut self, then: impl FnOnce(&mut W)) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
        let mut guard = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let (tty, painter) = &mut *guard;
        let mut frame = tty.frame(Instant::now(), self.width);
        frame.live.clear();
        let _ = painter.paint(&frame);
        then(painter.out());
    }
}

impl<W: Write + Send + 'static> Drop for Live<W> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image_build::build::OutputStream;

    fn started(step: usize, text: &str) -> BuildEvent {
        BuildEvent::StepStarted {
            step,
            stage: "stage-0".into(),
            index: step,
            total: 3,
            text: text.into(),
        }
    }

    fn output(step: usize, line: &str) -> BuildEvent {
        BuildEvent::Output {
            step,
            stream: OutputStream::Stdout,
            line: line.into(),
        }
    }

    fn done(step: usize, ms: u64) -> BuildEvent {
        BuildEvent::StepDone {
            step,
            layer_size: Some(10),
            elapsed: Duration::from_millis(ms),
        }
    }

    #[test]
    fn running_steps_show_time_and_last_lines_then_settle() {
        let t0 = Instant::now();
        let mut tty = Tty::default();
        tty.event(&started(1, "FROM base"), t0);
        tty.event(&done(1, 0), t0);
        tty.event(&started(2, "RUN make"), t0);
        for i in 0..8 {
            tty.event(&output(2, &format!("line {i}")), t0);
        }
        let f = tty.frame(t0 + Duration::from_millis(1500), 80);
        assert_eq!(f.settled, ["#1 [1/3] FROM base DONE 0.0s"]);
        assert_eq!(
            f.live,
            [
                "#2 [2/3] RUN make 1.5s",
                "  line 3",
                "  line 4",
                "  line 5",
                "  line 6",
                "  line 7"
            ]
        );
        // Settled lines are given once; the live area each time.
        let f = tty.frame(t0 + Duration::from_secs(3), 80);
        assert!(f.settled.is_empty());
        assert_eq!(f.live[0], "#2 [2/3] RUN make 3.0s");
        tty.event(&started(3, "COPY a /a"), t0);
        tty.event(&BuildEvent::StepCached { step: 3 }, t0);
        tty.event(&done(3, 0), t0);
        tty.event(&done(2, 2500), t0);
        let f = tty.frame(t0, 80);
        assert_eq!(
            f.settled,
            ["#3 [3/3] COPY a /a CACHED", "#2 [2/3] RUN make DONE 2.5s"]
        );
        assert!(f.live.is_empty());
        assert_eq!(tty.running(), 0);
    }

    #[test]
    fn lines_are_cut_to_the_width_and_control_characters_neutralised() {
        let t0 = Instant::now();
        let mut tty = Tty::default();
        tty.event(&started(1, "RUN echo"), t0);
        tty.event(&output(1, "\x1b[2Jcleared\tx"), t0);
        tty.event(&output(1, &"y".repeat(200)), t0);
        let f = tty.frame(t0, 20);
        assert_eq!(f.live[1], "  ?[2Jcleared x");
        assert!(f.live.iter().all(|l| l.chars().count() <= 20), "{f:?}");
    }

    #[test]
    fn the_painter_erases_the_last_live_area_only() {
        let mut p = Painter::new(Vec::new());
        p.paint(&Frame {
            settled: vec!["a".into()],
            live: vec!["b".into(), "c".into()],
        })
        .unwrap();
        p.paint(&Frame {
            settled: vec!["d".into()],
            live: vec!["e".into()],
        })
        .unwrap();
        p.paint(&Frame::default()).unwrap();
        assert_eq!(
            String::from_utf8(p.out).unwrap(),
            "a\nb\nc\n\x1b[2F\x1b[Jd\ne\n\x1b[1F\x1b[J"
        );
    }
}
