//! Rootless imagectl: the commands of an unprivileged user run in one user
//! and mount namespace, held by a pause process (`image_runtime::rootless`),
//! as podman's do, and `imagectl unshare` runs any program there (as
//! `podman unshare`).
//!
//! The first command starts the pause process; every command joins its
//! namespaces first thing in `main` ([`join`]) and then runs as root
//! inside, store writes, unpacks, mounts and containers included. So a
//! detached container run by one command is there for the next one's `ps`,
//! `exec`, `logs` and `stop`. The pause process's pid file is in
//! `$XDG_RUNTIME_DIR/imagectl`, or, without a runtime directory (a
//! `runuser` or `su` session), in the directory holding the store and the
//! container state (`$XDG_DATA_HOME/imagectl` by default).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use image_runtime::rootless;

use super::store::StoreArgs;

/// Arguments of `imagectl unshare`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The program and its arguments (default: $SHELL, else /bin/sh).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Runs the program of `args` in this command's user namespace (replacing
/// imagectl); it only returns on failure.
pub fn unshare(args: Args) -> anyhow::Result<()> {
    if !rootless::in_user_namespace() {
        bail!("unshare is for an unprivileged user: root needs no user namespace");
    }
    let mut argv = args.command;
    if argv.is_empty() {
        argv.push(std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".to_owned()));
    }
    let e = Command::new(&argv[0]).args(&argv[1..]).exec();
    Err(e).with_context(|| format!("running {}", argv[0]))
}

/// The directory of the pause process's pid file: `$XDG_RUNTIME_DIR/imagectl`
/// when there is a runtime directory of this user's (`su` may leave
/// another user's in the environment), else the parent of the store.
pub fn pause_dir(store: &StoreArgs) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let uid = rustix::process::getuid().as_raw();
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(run)
            if run.is_absolute()
                && std::fs::metadata(&run).is_ok_and(|m| m.is_dir() && m.uid() == uid) =>
        {
            run.join("imagectl")
        }
        _ => {
            let store = std::path::absolute(store.path()).unwrap_or_else(|_| store.path());
            store
                .parent()
                .map_or_else(|| PathBuf::from("/"), PathBuf::from)
        }
    }
}

/// Joins the user and mount namespaces of this user's pause process,
/// starting it when there is none. Must run while imagectl is
/// single-threaded.
pub fn join(store: &StoreArgs) -> anyhow::Result<()> {
    let dir = pause_dir(store);
    rootless::join_or_start(&dir).context("joining this unprivileged user's namespaces")?;
    Ok(())
}
