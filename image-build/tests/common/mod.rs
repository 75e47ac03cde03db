//! What the build engine's test binaries share.

use std::path::Path;

use image_runtime::Runtime;

/// Nothing a test made outlives it: every mount under `dir` is detached,
/// deepest first, and every snapshot of `runtime` removed (children before
/// their parents, over a few rounds).
pub fn clean_up(dir: &Path, runtime: &Runtime) {
    if let Ok(mounts) = image_runtime::mountinfo::mounts_under(dir) {
        for m in mounts.iter().rev() {
            let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
        }
    }
    if let Some(s) = runtime.snapshots() {
        let sn = s.snapshotter();
        for _ in 0..64 {
            let all = sn.list().unwrap_or_default();
            if all.is_empty() {
                break;
            }
            for i in all {
                let _ = sn.remove(&i.name);
            }
        }
    }
}

/// A native runtime with state in `dir/state` and its snapshots in
/// `dir/snapshots` (the default driver), as the builds of a test use.
pub fn runtime(dir: &Path) -> Runtime {
    let snapshots = image_runtime::snapshots::Snapshots::open_default(&dir.join("snapshots"))
        .expect("snapshots");
    Runtime::native(&dir.join("state"), image_runtime::NativeOptions::default())
        .expect("runtime")
        .with_snapshots(snapshots)
        .expect("with snapshots")
}
