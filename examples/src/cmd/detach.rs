//! Detached containers: `run -d` and `start -d` (through [`DetachArgs`]),
//! `logs`, `wait`, `stop`, `attach`, `restart`. Each detached container has
//! a monitor process (imagectl run again, see `image_runtime::monitor`)
//! that owns its process, writes its output to a JSON log and records its
//! exit; these commands work by ID from any later imagectl.

use std::io::Write;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use image_runtime::monitor::log::parse_since;
use image_runtime::monitor::{AttachEnd, DetachKeys, LogEntry, LogQuery};
use image_runtime::state::ContainerStatus;
use image_runtime::Signal;

use super::run::{has_terminal, PlaceArgs, SigProxyArg, SignalProxy};
use super::store::StoreArgs;

const DETACHED: &str =
    "A detached container's output goes to <state>/containers/<id>/container.log \
in Docker's json-file format (one JSON object per line: log, stream, time), rotated at \
--log-opt max-size (default 10m) keeping --log-opt max-file files (default 3). Its monitor \
records each exit in the container's record and restarts it as --restart says (no, \
on-failure[:N], always, unless-stopped; 100 ms doubling between restarts, reset after 10 s of \
running); `stop` ends the restarts. `ps` shows a container whose monitor was killed as \
unknown: `rm -f` or the next command's gc removes it (a --rm one with its anonymous volumes). \
`attach` connects to the monitor's socket (<state>/containers/<id>/attach): the output from \
then on, standard input to a container made with -i (the end of the input closes its stdin), \
the terminal raw with its size followed under -t; ctrl-p ctrl-q (--detach-keys) detach.";

/// Arguments of `imagectl logs`.
#[derive(Debug, clap::Args)]
#[command(after_help = DETACHED)]
pub struct LogsArgs {
    #[command(flatten)]
    pub place: PlaceArgs,
    /// Keep printing new output until the container stops.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines (or "all").
    #[arg(long, short = 'n', value_name = "N", default_value = "all")]
    pub tail: String,
    /// Only lines since a time: RFC 3339, Unix seconds, or a duration before now (10m, 1h30m).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Prefix each line with its time (RFC 3339 with nanoseconds).
    #[arg(short, long)]
    pub timestamps: bool,
    /// The container (ID or unique prefix).
    pub container: String,
}

/// Writes one entry to stdout or stderr, as its stream was.
fn print_entry(e: &LogEntry, timestamps: bool) {
    let text = if timestamps {
        format!("{} {}", e.time, e.log)
    } else {
        e.log.clone()
    };
    let _ = if e.stream == "stderr" {
        std::io::stderr().write_all(text.as_bytes())
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes()).and_then(|()| out.flush())
    };
}

/// Prints a container's log.
pub fn logs(store: &StoreArgs, a: LogsArgs) -> anyhow::Result<()> {
    let root = a.place.state_dir(store)?;
    let record = a.place.find(store, &a.container)?;
    let query = LogQuery {
        tail: match a.tail.as_str() {
            "all" => None,
            n => Some(
                n.parse()
                    .with_context(|| format!("--tail {n:?}: a number or all"))?,
            ),
        },
        since: match &a.since {
            Some(s) => Some(
                parse_since(s, SystemTime::now())
                    .with_context(|| format!("--since {s:?}: not a time or duration"))?,
            ),
            None => None,
        },
    };
    let (entries, follower) = image_runtime::monitor::logs(&root, &record.id, &query)?;
    for e in &entries {
        print_entry(e, a.timestamps);
    }
    if a.follow {
        image_runtime::monitor::follow(&root, &record.id, follower, |e| {
            print_entry(e, a.timestamps)
        })?;
    }
    Ok(())
}

/// Arguments of `imagectl wait`.
#[derive(Debug, clap::Args)]
#[command(after_help = DETACHED)]
pub struct WaitArgs {
    #[command(flatten)]
    pub place: PlaceArgs,
    /// The containers (IDs or unique prefixes).
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// Waits for each container's run to end and prints its exit code, as
/// `docker wait` does (-1 when the code is unknown).
pub fn wait(store: &StoreArgs, a: WaitArgs) -> anyhow::Result<()> {
    let root = a.place.state_dir(store)?;
    for c in &a.containers {
        let record = a.place.find(store, c)?;
        let code = image_runtime::monitor::wait(&root, &record.id, None)?;
        println!("{}", code.unwrap_or(-1));
    }
    Ok(())
}

/// Arguments of `imagectl stop` and `imagectl restart`.
#[derive(Debug, clap::Args)]
#[command(after_help = DETACHED)]
pub struct StopArgs {
    #[command(flatten)]
    pub place: PlaceArgs,
    /// Seconds between SIGTERM and SIGKILL (restart: when stopping).
    #[arg(short = 't', long = "time", alias = "timeout", default_value_t = 10)]
    pub time: u64,
    /// The signal sent first, in place of SIGTERM: a number or a name as
    /// docker takes it (TERM, SIGINT, RTMIN+3).
    #[arg(short, long, default_value = "TERM")]
    pub signal: String,
    /// The containers (IDs or unique prefixes).
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// Stops each container (SIGTERM or `--signal`, SIGKILL after the
/// grace); prints its ID.
pub fn stop(store: &StoreArgs, a: StopArgs) -> anyhow::Result<()> {
    let signal: Signal = a.signal.parse()?;
    for c in &a.containers {
        let (rt, record) = a.place.runtime_of(store, c)?;
        rt.stop_with(&record.id, signal, Duration::from_secs(a.time))?;
        println!("{}", record.id);
    }
    Ok(())
}

/// Arguments of `imagectl restart` (as `stop`'s).
pub type RestartArgs = StopArgs;

/// Stops each container (with `--signal` first) and starts it detached
/// again; prints its ID.
pub fn restart(store: &StoreArgs, a: RestartArgs) -> anyhow::Result<()> {
    let signal: Signal = a.signal.parse()?;
    for c in &a.containers {
        let (rt, record) = a.place.runtime_of(store, c)?;
        let grace = Duration::from_secs(a.time);
        // Stopped with `signal` first; restart's own stop then finds it
        // stopped.
        if record.observed_status() == ContainerStatus::Running {
            rt.stop_with(&record.id, signal, grace)?;
        }
        rt.restart(&record.id, grace, None)?;
        println!("{}", record.id);
    }
    Ok(())
}

/// Arguments of `imagectl attach`.
#[derive(Debug, clap::Args)]
#[command(after_help = DETACHED)]
pub struct AttachArgs {
    #[command(flatten)]
    pub place: PlaceArgs,
    /// Do not attach standard input (output only).
    #[arg(long)]
    pub no_stdin: bool,
    /// The keys that detach and leave the container running, Docker's
    /// syntax: comma-separated, each a character or ctrl-X (default
    /// ctrl-p,ctrl-q).
    #[arg(long, value_name = "KEYS")]
    pub detach_keys: Option<String>,
    #[command(flatten)]
    pub sig_proxy: SigProxyArg,
    /// The container (ID or unique prefix).
    pub container: String,
}

/// Attaches to a running detached container as `docker attach` does: its
/// output from now on, this process's standard input to its stdin (when it
/// was made with -i; the end of this input closes it), the terminal raw
/// with window sizes forwarded when it has one (-t); the detach keys leave
/// it running; without a terminal, the signals this process receives go to
/// its process (`--sig-proxy`). Exits with its exit code when its run ends.
pub fn attach(store: &StoreArgs, a: AttachArgs) -> anyhow::Result<()> {
    let (rt, record) = a.place.runtime_of(store, &a.container)?;
    let keys = match &a.detach_keys {
        Some(k) => k.parse::<DetachKeys>()?,
        None => DetachKeys::default(),
    };
    let terminal = has_terminal(&rt.load(&record.id)?)?;
    let attachment = rt.attach_stream(&record.id)?;
    let stdin: Option<Box<dyn std::io::Read + Send>> =
        (!a.no_stdin).then(|| Box::new(std::io::stdin()) as _);
    let _link = if terminal && stdin.is_some() {
        attachment.input()?.link_terminal(std::io::stdin())?
    } else {
        None
    };
    // Under a terminal its keys reach the container through it, as
    // `docker attach` proxies only without one.
    let proxy = SigProxyArg {
        on: a.sig_proxy.on && !terminal,
    };
    let proxy = SignalProxy::start(proxy, &rt, &record.id)?;
    let end = attachment.run(stdin, &mut std::io::stdout(), &mut std::io::stderr(), keys)?;
    drop(proxy);
    drop(_link);
    let _ = std::io::stdout().flush();
    match end {
        AttachEnd::Detached => Ok(()),
        AttachEnd::Exited(code) => {
            let code = code.unwrap_or(255);
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
    }
}
