//! Whether a test can run here: tools on `PATH`, busybox-static, root.
//!
//! What is missing makes a test skip loudly (`SKIPPED: ...` on stderr, and
//! the test returns) on a developer's machine, and fail under `CI=true`,
//! where every tool is installed and a skip would hide a broken setup.

use std::path::{Path, PathBuf};

/// Where the static busybox that root filesystems are made of is taken from.
pub const BUSYBOX: &str = "/bin/busybox";

/// Whether the tests run under CI (`CI=true`), where nothing may be skipped.
pub fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// The path of `program` in a directory of `PATH`, if there is one.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Says that `what` is missing: panics under CI, else prints a loud
/// `SKIPPED: missing ...` naming it.
///
/// # Panics
/// Under `CI=true`.
pub fn skip_or_fail(what: &str) {
    assert!(!ci(), "CI=true and missing: {what}");
    eprintln!("SKIPPED: missing {what}");
}

/// Whether the test runs as root; when not, [`skip_or_fail`] says that
/// `why` needs it.
pub fn root(why: &str) -> bool {
    let ok = is_root();
    if !ok {
        skip_or_fail(&format!("root privileges ({why})"));
    }
    ok
}

/// Whether `tool` is on `PATH`; when it is not, [`skip_or_fail`].
pub fn have(tool: &str) -> bool {
    let found = which(tool).is_some();
    if !found {
        skip_or_fail(&format!("{tool} (not installed)"));
    }
    found
}

/// Those of `tools` that are on `PATH`; each missing one is
/// [`skip_or_fail`]ed (for a test that tries every installed runtime).
pub fn installed<'a>(tools: &[&'a str]) -> Vec<&'a str> {
    tools.iter().copied().filter(|t| have(t)).collect()
}

/// Whether a test that runs containers can run: every program of `tools`
/// on `PATH`, [`BUSYBOX`] and root privileges. When something is missing,
/// [`skip_or_fail`] names all of it.
pub fn ready(tools: &[&str]) -> bool {
    let mut missing: Vec<String> = tools
        .iter()
        .filter(|t| which(t).is_none())
        .map(|t| (*t).to_owned())
        .collect();
    if !Path::new(BUSYBOX).is_file() {
        missing.push(format!("{BUSYBOX} (busybox-static)"));
    }
    if !is_root() {
        missing.push("root privileges".into());
    }
    if missing.is_empty() {
        return true;
    }
    skip_or_fail(&format!("{missing:?}"));
    false
}
