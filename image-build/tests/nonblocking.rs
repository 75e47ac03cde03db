//! The async wrapper of a build (`nonblocking`, feature `tokio`) against
//! real builds: awaited, it is the blocking build; dropped, it stops the
//! build at once (a RUN's container killed), tags nothing and leaves
//! nothing behind. Run as root with busybox-static, or skipped loudly
//! unless CI=true.

mod support;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use image_build::build::{BuildEvent, BuildOptions};
use image_build::nonblocking;
use image_core::progress::Interrupt;
use image_core::{ErrorKind, Tracker};
use image_store::TagStore;
use support::{fixture, BASE};

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_time()
        .build()
        .expect("tokio runtime")
}

fn options(f: &support::Fixture, dockerfile: String, tag: &str) -> BuildOptions {
    let mut options = BuildOptions::new(f.context());
    options.dockerfile_text = Some(dockerfile);
    options.tags = vec![tag.to_owned()];
    options
}

#[test]
fn an_awaited_build_is_the_blocking_build() {
    let Some(f) = fixture() else {
        return;
    };
    std::fs::write(f.context().join("a"), "a\n").unwrap();
    let dockerfile = format!("FROM {BASE}\nCOPY a /a\nRUN cat /a /a > /b\n");
    let (tx, rx) = mpsc::channel();
    let observer = Box::new(move |e: &BuildEvent| {
        let _ = tx.send(e.clone());
    });
    let built = tokio()
        .block_on(nonblocking::build(
            f.store.clone(),
            f.runtime.clone(),
            options(&f, dockerfile, "test.local/async:1"),
            observer,
        ))
        .unwrap();
    assert_eq!((built.steps, built.cached), (2, 0));
    let tagged = f.store.resolve_tag("test.local/async:1").unwrap();
    assert_eq!(tagged.digest(), built.manifest.descriptor().digest());
    let events: Vec<BuildEvent> = rx.try_iter().collect();
    let done = events
        .iter()
        .filter(|e| matches!(e, BuildEvent::StepDone { .. }))
        .count();
    assert_eq!(done, 3, "{events:?}");
    f.assert_clean();
}

#[test]
fn dropping_a_build_future_stops_its_run_and_tags_nothing() {
    let Some(f) = fixture() else {
        return;
    };
    let dockerfile = format!("FROM {BASE}\nRUN echo started && sleep 60\n");
    let interrupt = Interrupt::new();
    let options = options(&f, dockerfile, "test.local/never:1")
        .with_tracker(Tracker::default().with_interrupt(interrupt.clone()));
    let (tx, rx) = mpsc::channel();
    let observer = Box::new(move |e: &BuildEvent| {
        let _ = tx.send(e.clone());
    });
    let tokio = tokio();
    let build = tokio.spawn(nonblocking::build(
        f.store.clone(),
        f.runtime.clone(),
        options,
        observer,
    ));
    // The RUN's container is running once its first line is out.
    loop {
        let e = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the RUN starts");
        if matches!(&e, BuildEvent::Output { line, .. } if line == "started") {
            break;
        }
    }
    let stopping = Instant::now();
    build.abort();
    // Dropping the runtime waits for the build's blocking thread.
    drop(tokio);
    assert!(interrupt.is_set(), "dropping the future sets the interrupt");
    assert!(
        stopping.elapsed() < Duration::from_secs(30),
        "the build ran on for {:?}",
        stopping.elapsed()
    );
    let e = f.store.resolve_tag("test.local/never:1").unwrap_err();
    assert_eq!(image_core::Classify::kind(&e), ErrorKind::NotFound);
    f.assert_clean();
}
