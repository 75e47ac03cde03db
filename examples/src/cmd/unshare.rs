//! Rootless imagectl: a command of an unprivileged user runs in a user
//! namespace of its own (`image_runtime::rootless`), as podman's do, and
//! `imagectl unshare` runs any program there (as `podman unshare`).
//!
//! The namespace is entered once for the whole command: `main` re-executes
//! imagectl with the same arguments in it ([`reexec`]) and waits, forwarding
//! the signals a user sends; the re-executed imagectl finishes entering
//! first thing ([`image_runtime::rootless::finish_entry`]) and then runs
//! the command as root inside, store writes, unpacks, mounts and
//! containers included. Nothing outlives the command: its mounts are in
//! its own mount namespace, gone when it exits.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};
use image_runtime::rootless;

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

/// Runs this imagectl again, with the same arguments, in a new user
/// namespace with the user's subordinate ids, and waits for it; its exit
/// status is ours. SIGTERM and SIGHUP sent to this process are passed on.
/// SIGINT and SIGQUIT are not: a terminal sends them to its whole
/// foreground group, the command included, and a second SIGINT would make
/// the command stop at once instead of cancelling cleanly (see
/// `progress`); this process only outlives them until the command ends.
pub fn reexec() -> anyhow::Result<ExitCode> {
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "imagectl".into());
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0(arg0).args(args);
    let child = rootless::spawn_in_user_namespace(&mut cmd)
        .context("entering a user namespace for this unprivileged user")?;
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT])
        .context("forwarding signals")?;
    let handle = signals.handle();
    let code = std::thread::scope(|scope| {
        scope.spawn(|| {
            for s in signals.forever() {
                if s == SIGTERM || s == SIGHUP {
                    child.signal(s);
                }
            }
        });
        let code = child.wait();
        handle.close();
        code
    })?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
