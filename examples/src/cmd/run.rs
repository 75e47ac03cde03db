//! Container commands: `run`, `create`, `start`, `exec`, `ps`, `kill`,
//! `rm`, `commit`, `bundle`, over image-runtime's native backend (the
//! default) or runc or crun (`--runtime`).
//!
//! Containers are made from images of the store (`--store`): their layers
//! are unpacked into snapshots (once, shared by every container) and each
//! container gets a writable snapshot of its own.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use image_runtime::snapshots::Snapshots;
use image_runtime::spec::resources::{parse_bytes, parse_cpus};
use image_runtime::spec::seccomp::Profile;
use image_runtime::spec::ANNOTATION_STDIN;
use image_runtime::state::{self, ContainerStatus};
use image_runtime::CommitOptions;
use image_runtime::{
    ContainerRecord, ExecOptions, NativeOptions, NetworkMode, RunOptions, Runtime, RuntimeKind,
    SeccompMode, Signal, Stdio, Volume,
};
use image_runtime::{DetachOptions, LogOptions, RestartPolicy};

use super::snapshot::{open_snapshots, DriverArg};
use super::store::StoreArgs;

const PLACES: &str = "Container state (records, bundles, the runtime's own state) lives in \
--state DIR, default <store>/../containers; image layers and containers' writable layers \
live in --snapshots DIR, default <store>/../snapshots, as overlay snapshots where overlay \
mounts work (root, a filesystem overlayfs accepts), else as full copies. \
Containers run in process by the native backend unless --runtime runc|crun \
was given when they were made; the native backend's state is in \
<state>/native, runc's and crun's in <state>/runc and <state>/crun.";

const LIMITS: &str = "Limits (--memory, --pids, --cpus) are enforced through cgroups: each \
container gets a cgroup under this process's own one, in the v1 hierarchies \
where there are any, else in the unified (v2) one. A limit whose controller \
is missing fails with \"limit cannot be enforced\" before anything runs; \
--cpus above the CPUs this process may use is refused. \
--init and -t need the native backend. \
Network: --net none (the default: loopback only) or --net host. Port \
publishing (docker run -p) is out of scope: there is no bridge or NAT, \
so there is no -p; the image's EXPOSE is only recorded. \
As an unprivileged user (each command runs in a user namespace with the \
user's /etc/subuid and /etc/subgid ranges, as podman's) limits need \
cgroups delegated to the user: where they are not, they are refused.";

/// Where containers and snapshots live, and which OCI runtime runs them.
#[derive(Debug, Clone, clap::Args)]
pub struct PlaceArgs {
    /// Container state directory. Default: $IMAGECTL_STATE, else <store>/../containers.
    #[arg(long, env = "IMAGECTL_STATE")]
    pub state: Option<PathBuf>,
    /// Snapshot directory. Default: $IMAGECTL_SNAPSHOTS, else <store>/../snapshots.
    #[arg(long, env = "IMAGECTL_SNAPSHOTS")]
    pub snapshots: Option<PathBuf>,
    /// Snapshot driver of a new snapshot directory (an existing one keeps
    /// its own). Default: overlay where overlay mounts work, else copy.
    #[arg(long, value_enum)]
    pub snapshotter: Option<DriverArg>,
}

/// A container backend on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeArg {
    /// The in-process native backend (namespaces, pivot_root, cgroups).
    Native,
    /// runc.
    Runc,
    /// crun (run in a private mount namespace on hybrid-cgroup hosts).
    Crun,
}

impl RuntimeArg {
    /// The backend that made a container, from its record.
    fn of_record(backend: &str) -> RuntimeArg {
        match backend {
            "native" => RuntimeArg::Native,
            "crun" => RuntimeArg::Crun,
            _ => RuntimeArg::Runc,
        }
    }
}

impl PlaceArgs {
    fn beside_store(store: &StoreArgs, name: &str) -> anyhow::Result<PathBuf> {
        let s = std::path::absolute(store.path())?;
        Ok(s.parent().unwrap_or(Path::new("/")).join(name))
    }

    pub(crate) fn state_dir(&self, store: &StoreArgs) -> anyhow::Result<PathBuf> {
        match &self.state {
            Some(p) => Ok(p.clone()),
            None => PlaceArgs::beside_store(store, "containers"),
        }
    }

    fn snapshots(&self, store: &StoreArgs) -> anyhow::Result<Snapshots> {
        let dir = match &self.snapshots {
            Some(p) => p.clone(),
            None => PlaceArgs::beside_store(store, "snapshots")?,
        };
        open_snapshots(&dir, self.snapshotter)
    }

    /// The runtime with backend `kind`, its snapshots set.
    pub(crate) fn runtime(&self, store: &StoreArgs, kind: RuntimeArg) -> anyhow::Result<Runtime> {
        let state = self.state_dir(store)?;
        let rt = match kind {
            RuntimeArg::Native => Runtime::native(&state, NativeOptions::default()),
            RuntimeArg::Runc => Runtime::oci(&state, RuntimeKind::Runc),
            RuntimeArg::Crun => Runtime::oci(&state, RuntimeKind::Crun),
        }
        .with_context(|| format!("opening container state {}", state.display()))?;
        Ok(rt.with_snapshots(self.snapshots(store)?)?)
    }

    /// The record of the container `id` (a full ID or a unique prefix).
    pub(crate) fn find(&self, store: &StoreArgs, id: &str) -> anyhow::Result<ContainerRecord> {
        let root = self.state_dir(store)?;
        if let Ok(r) = state::load(&root, id) {
            return Ok(r);
        }
        let matches: Vec<ContainerRecord> = state::list(&root)?
            .into_iter()
            .filter(|r| r.id.starts_with(id))
            .collect();
        match matches.len() {
            1 => Ok(matches.into_iter().next().context("one match")?),
            0 => Err(image_runtime::ContainerError::NotFound { id: id.to_owned() }.into()),
            n => bail!("{n} containers have IDs starting with {id:?}"),
        }
    }

    /// The runtime that made the container `id`, and its record.
    pub(crate) fn runtime_of(
        &self,
        store: &StoreArgs,
        id: &str,
    ) -> anyhow::Result<(Runtime, ContainerRecord)> {
        let record = self.find(store, id)?;
        let kind = RuntimeArg::of_record(&record.backend);
        Ok((self.runtime(store, kind)?, record))
    }
}

/// The options of a container (`create`, `run`, `bundle`).
#[derive(Debug, Clone, clap::Args)]
pub struct ContainerFlags {
    /// Set an environment variable (KEY=VALUE), repeatable.
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// The working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// The user: name, uid, name:group or uid:gid (from the image's /etc/passwd).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Replace the image's entrypoint ("" clears it).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Bind-mount a host directory or a named volume: SRC:DST[:ro|rw]
    /// (read-write unless ro). A SRC that is not an absolute path names a
    /// volume ([a-zA-Z0-9][a-zA-Z0-9_.-]+), made in the state directory on
    /// first use and filled from the image's content at DST when empty.
    /// The image's VOLUME paths get anonymous volumes the same way
    /// (removed by `rm -v` and by `run --rm`).
    #[arg(short, long = "volume")]
    pub volume: Vec<String>,
    /// The hostname (default: the first 12 characters of the ID).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Keep standard input attached (recorded: `start` attaches it too).
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal for the process (runc and crun: through their
    /// console socket).
    #[arg(short, long)]
    pub tty: bool,
    /// Memory limit: bytes or a number with b, k, m, g (64m, 1g). Swap is
    /// limited to the same where the host accounts swap. Minimum 6m.
    #[arg(short, long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// The most processes and threads the container may have at once.
    #[arg(long, alias = "pids-limit", value_name = "N")]
    pub pids: Option<u64>,
    /// CPU limit as a number of CPUs (0.5, 1.5): a CFS quota per 100 ms.
    #[arg(long, value_name = "F")]
    pub cpus: Option<String>,
    /// The network: none (a network namespace with loopback only, the
    /// default) or host (the host's network, /etc/hosts, /etc/resolv.conf).
    /// No port publishing: there is no bridge or NAT.
    #[arg(long, alias = "network", value_name = "MODE", default_value = "none")]
    pub net: String,
    /// Run a tiny init as pid 1 that forwards signals and reaps zombies
    /// (the command runs as pid 2; native backend only).
    #[arg(long)]
    pub init: bool,
    /// A security option, repeatable: seccomp=unconfined (no seccomp
    /// filter) or seccomp=PROFILE.json (a profile in Docker's format).
    /// Docker's default seccomp profile applies otherwise.
    #[arg(long = "security-opt", value_name = "OPT")]
    pub security_opt: Vec<String>,
    /// Give the container every capability, no seccomp filter, no masked
    /// or read-only paths, writable /sys and cgroups, every device allowed
    /// (host device nodes are not added to /dev).
    #[arg(long)]
    pub privileged: bool,
}

/// The seccomp mode of a `--security-opt` (`seccomp=unconfined`,
/// `seccomp=FILE`; Docker also accepts `seccomp:`).
fn seccomp_option(opt: &str) -> anyhow::Result<SeccompMode> {
    match opt.split_once(['=', ':']) {
        Some(("seccomp", "unconfined")) => Ok(SeccompMode::Unconfined),
        Some(("seccomp", path)) if !path.is_empty() => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("opening seccomp profile {path}"))?;
            let profile = Profile::from_reader(file)
                .with_context(|| format!("seccomp profile {path}"))?;
            Ok(SeccompMode::Profile(Box::new(profile)))
        }
        _ => bail!(
            "unsupported --security-opt {opt:?}: expected seccomp=unconfined or seccomp=PROFILE.json"
        ),
    }
}

impl ContainerFlags {
    fn options(&self, cmd: &[String]) -> anyhow::Result<RunOptions> {
        let mut o = RunOptions::new();
        o.env.clone_from(&self.env);
        o.working_dir.clone_from(&self.workdir);
        o.user.clone_from(&self.user);
        o.entrypoint = self.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                Vec::new()
            } else {
                vec![e.clone()]
            }
        });
        o.read_only = self.read_only;
        o.hostname.clone_from(&self.hostname);
        o.cmd = (!cmd.is_empty()).then(|| cmd.to_vec());
        for v in &self.volume {
            o.volumes.push(v.parse::<Volume>()?);
        }
        o.stdin = self.interactive;
        o.tty = self.tty;
        o.init = self.init;
        o.privileged = self.privileged;
        o.network = self.net.parse::<NetworkMode>()?;
        if let Some(m) = &self.memory {
            o.resources.memory = Some(parse_bytes("memory", m)?);
        }
        o.resources.pids = self.pids;
        if let Some(c) = &self.cpus {
            o.resources.nano_cpus = Some(parse_cpus(c)?);
        }
        for opt in &self.security_opt {
            o.seccomp = seccomp_option(opt)?;
        }
        Ok(o)
    }
}

/// The detached-run flag of `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct DetachArgs {
    /// Run in the background under a monitor; print the container's ID and return.
    #[arg(short = 'd', long)]
    pub detach: bool,
}

/// The policies of a detached run, given to `run -d` or recorded by
/// `create` for a later `start -d`.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    /// When to restart it (with run -d, or recorded by create for start -d):
    /// no, on-failure[:N], always, unless-stopped.
    #[arg(long, value_name = "POLICY", default_value = "no")]
    pub restart: String,
    /// A log option (with run -d, or recorded by create for start -d),
    /// repeatable: max-size=SIZE (at least 64k), max-file=N.
    #[arg(long = "log-opt", value_name = "OPT")]
    pub log_opt: Vec<String>,
}

impl PolicyArgs {
    /// True when neither flag was given.
    fn is_default(&self) -> bool {
        self.restart == "no" && self.log_opt.is_empty()
    }

    /// The restart policy and log options; `rm`: `--rm` was given.
    fn parse(&self, rm: bool) -> anyhow::Result<(RestartPolicy, LogOptions)> {
        let restart: RestartPolicy = self.restart.parse()?;
        if rm && restart != RestartPolicy::No {
            bail!("conflicting options: --restart and --rm");
        }
        let mut log = LogOptions::default();
        for o in &self.log_opt {
            log.set(o)?;
        }
        Ok((restart, log))
    }

    /// The options of a detached run; `rm`: `--rm` was given.
    pub fn options(&self, rm: bool) -> anyhow::Result<DetachOptions> {
        let (restart, log) = self.parse(rm)?;
        Ok(DetachOptions {
            restart,
            log,
            monitor_command: None,
        })
    }

    /// Refuses the detached-only flags on an attached run.
    pub fn check_attached(&self) -> anyhow::Result<()> {
        if !self.is_default() {
            bail!("--restart and --log-opt need -d (a monitor applies them)");
        }
        Ok(())
    }
}

/// Starts `c` detached and prints its ID.
pub fn start_detached(c: image_runtime::Container, options: &DetachOptions) -> anyhow::Result<()> {
    let r = c.start_detached(options)?;
    println!("{}", r.id);
    Ok(())
}

/// Arguments of `imagectl create`.
#[derive(Debug, clap::Args)]
#[command(after_help = format!("{PLACES}\n\n{LIMITS}"))]
pub struct CreateArgs {
    #[command(flatten)]
    pub place: PlaceArgs,
    /// The backend that runs the container: native (in process), runc or crun.
    #[arg(long, value_enum, default_value = "native")]
    pub runtime: RuntimeArg,
    /// The container's ID (default: 64 random hex digits).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub flags: ContainerFlags,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// The image.
    pub image: String,
    /// The command (replaces the image's Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

/// Arguments of `imagectl run`.
#[derive(Debug, clap::Args)]
#[command(after_help = format!("{PLACES}\n\n{LIMITS}"))]
pub struct RunArgs {
    /// Delete the container when it exits.
    #[arg(long)]
    pub rm: bool,
    #[command(flatten)]
    pub sig_proxy: SigProxyArg,
    #[command(flatten)]
    pub detach: DetachArgs,
    #[command(flatten)]
    pub create: CreateArgs,
}

/// `--sig-proxy` of `run`, `start` and `attach`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct SigProxyArg {
    /// Send the signals this process receives to the container's process
    /// (HUP, INT, QUIT, USR1, USR2, TERM, CONT, TSTP, XCPU, XFSZ and the
    /// real-time ones, RTMIN to RTMAX), as docker does; one that comes
    /// before the container runs is sent as soon as it does. As with docker, ctrl-C then goes to the container:
    /// a pid 1 without a handler for SIGINT ignores it, so `run IMAGE
    /// sleep 1000` goes on (use --init, -t, `imagectl stop`, or
    /// --sig-proxy=false). `--sig-proxy=false`: they act on this process
    /// (SIGINT ends it and its container). Not for `run -d`, nor for a
    /// container with a terminal (`run -t`, `start` or `attach` of one made
    /// with -t), whose keys reach it through the terminal.
    #[arg(
        long = "sig-proxy",
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub on: bool,
}

/// The standard signals `--sig-proxy` forwards: those a program is sent
/// rather than raises itself, except the ones about this process's own
/// children, pipes, sockets and terminal, and the timer ticks (SIGALRM,
/// SIGVTALRM, SIGPROF: a profiler's would each cost a runtime `kill`).
/// SIGSTKFLT and SIGPWR are left out: not every Linux architecture has
/// them. Every real-time signal is forwarded too ([`proxied`]).
const PROXIED: [Signal; 10] = [
    Signal::HUP,
    Signal::INT,
    Signal::QUIT,
    Signal::USR1,
    Signal::USR2,
    Signal::TERM,
    Signal::CONT,
    Signal::TSTP,
    Signal::XCPU,
    Signal::XFSZ,
];

/// Every signal `--sig-proxy` forwards: [`PROXIED`] and the real-time
/// signals, as docker forwards them. The real-time ones are those this
/// process's libc leaves to programs (glibc's `SIGRTMIN` is 34, musl's
/// 35: below it the libc's own, which cannot be caught), each sent to the
/// container as the same number (the kernel's).
fn proxied() -> impl Iterator<Item = Signal> {
    PROXIED
        .into_iter()
        .chain(realtime(libc::SIGRTMIN(), libc::SIGRTMAX()))
}

/// The real-time signals from `min` to `max` (a libc's range) that a
/// container's process can be sent ([`Signal`]'s range, 34 to 64).
fn realtime(min: i32, max: i32) -> impl Iterator<Item = Signal> {
    (min..=max).filter_map(|n| Signal::from_raw(n).ok().filter(|s| s.is_realtime()))
}

/// Where a caught signal goes: held until [`Relay::open`] (the container
/// does not run yet), then sent at once.
enum Gate {
    /// Each signal at most once (the kernel merges repeats of a pending
    /// standard signal too), in the order they first came.
    Held(Vec<Signal>),
    Open,
}

/// The signals caught for a container, held until it runs and then sent
/// with `send`, in order.
struct Relay<F> {
    gate: std::sync::Mutex<Gate>,
    send: F,
}

impl<F: Fn(Signal)> Relay<F> {
    /// Holds what it receives until [`Relay::open`].
    fn held(send: F) -> Self {
        Relay {
            gate: std::sync::Mutex::new(Gate::Held(Vec::new())),
            send,
        }
    }

    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends `signal`, or holds it while the gate is closed.
    fn receive(&self, signal: Signal) {
        match &mut *self.gate() {
            Gate::Held(held) if !held.contains(&signal) => held.push(signal),
            Gate::Held(_) => {}
            Gate::Open => (self.send)(signal),
        }
    }

    /// Sends what was held and from now on each signal as it comes (under
    /// the lock: none overtakes the held ones).
    fn open(&self) {
        let mut gate = self.gate();
        if let Gate::Held(held) = std::mem::replace(&mut *gate, Gate::Open) {
            held.into_iter().for_each(&self.send);
        }
    }
}

/// How a [`SignalProxy`] sends a signal on.
type Sender = Box<dyn Fn(Signal) + Send + Sync>;

/// While it lives, the signals of [`PROXIED`] that this process receives
/// go to a container's process (`rt.kill`; one that fails, the container
/// not running any more, is dropped), as `docker run` and `docker attach`
/// forward them; those that come before [`SignalProxy::release`] (the
/// container not started yet) are held and sent then. Dropping it stops
/// forwarding and gives the signals their default action back (SIGINT and
/// SIGTERM end this process again).
pub(crate) struct SignalProxy {
    handle: signal_hook::iterator::Handle,
    relay: std::sync::Arc<Relay<Sender>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SignalProxy {
    /// Forwards to the running container `id` of `rt` when `arg` is on;
    /// `None` when off.
    pub(crate) fn start(
        arg: SigProxyArg,
        rt: &Runtime,
        id: &str,
    ) -> anyhow::Result<Option<SignalProxy>> {
        let proxy = SignalProxy::held(arg, rt, id)?;
        if let Some(p) = &proxy {
            p.release();
        }
        Ok(proxy)
    }

    /// As [`SignalProxy::start`] for a container not started yet: holds
    /// the signals until [`SignalProxy::release`].
    pub(crate) fn held(
        arg: SigProxyArg,
        rt: &Runtime,
        id: &str,
    ) -> anyhow::Result<Option<SignalProxy>> {
        if !arg.on {
            return Ok(None);
        }
        let (rt, id) = (rt.clone(), id.to_owned());
        SignalProxy::catch(Box::new(move |signal| {
            let _ = rt.kill(&id, signal);
        }))
        .map(Some)
    }

    /// Catches [`PROXIED`] into a held relay to `send`.
    fn catch(send: Sender) -> anyhow::Result<SignalProxy> {
        let mut signals = signal_hook::iterator::Signals::new(proxied().map(Signal::as_raw))
            .context("catching the signals to forward")?;
        let handle = signals.handle();
        let relay = std::sync::Arc::new(Relay::held(send));
        let thread = std::thread::spawn({
            let relay = relay.clone();
            move || {
                for s in signals.forever() {
                    if let Ok(signal) = Signal::from_raw(s) {
                        relay.receive(signal);
                    }
                }
            }
        });
        Ok(SignalProxy {
            handle,
            relay,
            thread: Some(thread),
        })
    }

    /// The container runs: sends the signals held so far, then each as it
    /// comes.
    pub(crate) fn release(&self) {
        self.relay.open();
    }
}

impl Drop for SignalProxy {
    fn drop(&mut self) {
        // The default actions first, so that no signal falls between the
        // two (signal-hook keeps its handler installed: this emulates the
        // default from it).
        let default = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        for s in proxied() {
            // signal-hook emulates the default of the standard signals
            // only; a real-time one's is to end the process, here with
            // 128 + its number, as a shell reports it.
            let _ = if s.is_realtime() {
                signal_hook::flag::register_conditional_shutdown(
                    s.as_raw(),
                    128 + s.as_raw(),
                    default.clone(),
                )
            } else {
                signal_hook::flag::register_conditional_default(s.as_raw(), default.clone())
            };
        }
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Creates the container of `a`; `rm`: removed when its run ends (also
/// when it fails to start, or by a later gc if this process is killed).
/// With the runtime it was made in.
fn create_container(
    store: &StoreArgs,
    a: &CreateArgs,
    rm: bool,
) -> anyhow::Result<(Runtime, image_runtime::Container)> {
    let s = store.open()?;
    let rt = a.place.runtime(store, a.runtime)?;
    let mut b = rt
        .container_from_image(&s, &a.image)?
        .options(a.flags.options(&a.cmd)?)
        .auto_remove(rm);
    if let Some(n) = &a.name {
        b = b.id(n.clone());
    }
    if !a.policy.is_default() {
        let (restart, log) = a.policy.parse(rm)?;
        b = b.detach_policies(restart, log);
    }
    Ok((rt, b.create()?))
}

/// Creates a container from an image; prints its ID.
pub fn create(store: &StoreArgs, a: CreateArgs) -> anyhow::Result<()> {
    let (_, c) = create_container(store, &a, false)?;
    println!("{}", c.id());
    Ok(())
}

/// The caller's stdout and stderr; its stdin when `stdin`, else `/dev/null`.
fn stdio(stdin: bool) -> Stdio {
    Stdio {
        stdin: if stdin {
            image_runtime::Input::Inherit
        } else {
            image_runtime::Input::Null
        },
        stdout: image_runtime::Output::Inherit,
        stderr: image_runtime::Output::Inherit,
    }
}

/// Runs `c` of `rt` attached, the signals this process receives
/// forwarded to it under `sig_proxy`; returns its exit code. With `rm` it
/// is deleted afterwards, whatever happened (a failed start deletes an
/// auto-removed container itself).
fn attached(
    rt: &Runtime,
    c: image_runtime::Container,
    stdin: bool,
    rm: bool,
    sig_proxy: SigProxyArg,
) -> anyhow::Result<i32> {
    // Under a terminal its keys reach the container through it: docker
    // proxies only without one (`run -t`, `start -a` of a `create -t`).
    let sig_proxy = SigProxyArg {
        on: sig_proxy.on && !has_terminal(&c)?,
    };
    // Before the start, as docker: no signal between the two ends this
    // process instead; those held until the container runs go to it then.
    let proxy = SignalProxy::held(sig_proxy, rt, c.id())?;
    let mut running = c.start(stdio(stdin))?;
    if let Some(p) = &proxy {
        p.release();
    }
    let exit = running.wait();
    drop(proxy);
    let c = running.into_container();
    // As `docker run --rm`: the anonymous volumes go too.
    let deleted = if rm { c.delete_with_volumes() } else { Ok(()) };
    let code = exit?.status.code();
    deleted?;
    Ok(code)
}

/// Whether the process of `c` has a terminal (`create -t`, `run -t`).
pub(crate) fn has_terminal(c: &image_runtime::Container) -> anyhow::Result<bool> {
    Ok(c.spec()?
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false))
}

fn exit_with(code: i32) -> anyhow::Result<()> {
    let _ = std::io::stdout().flush();
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

/// Creates and runs a container attached, printing its output; exits with
/// its exit code.
pub fn run(store: &StoreArgs, a: RunArgs) -> anyhow::Result<()> {
    if a.detach.detach {
        let options = a.create.policy.options(a.rm)?;
        let (_, c) = create_container(store, &a.create, a.rm)?;
        return start_detached(c, &options);
    }
    a.create.policy.check_attached()?;
    let (rt, c) = create_container(store, &a.create, a.rm)?;
    let code = attached(&rt, c, a.create.flags.interactive, a.rm, a.sig_proxy)?;
    exit_with(code)
}

/// Arguments of `imagectl start`.
#[derive(Debug, clap::Args)]
#[command(after_help = PLACES)]
pub struct StartArgs {
    #[command(flatten)]
    pub place: PlaceArgs,
    /// Attach standard input (the default for a container made with -i).
    #[arg(short, long)]
    pub interactive: bool,
    /// Start it in the background under a monitor and print its ID (as
    /// `docker start` without -a); its --restart and --log-opt are those
    /// of its last detached run, else those given to create, else the
    /// defaults.
    #[arg(short, long, conflicts_with = "interactive")]
    pub detach: bool,
    /// Attached (the default without -d; accepted as `docker start -a`).
    #[arg(short, long, conflicts_with = "detach")]
    pub attach: bool,
    #[command(flatten)]
    pub sig_proxy: SigProxyArg,
    /// The container (ID or unique prefix).
    pub container: String,
}

/// Starts a created or stopped container attached (the runtime runs in the
/// foreground: this process waits for it), the signals this process
/// receives forwarded to it when it has no terminal (`--sig-proxy`, as
/// `docker start -a` forwards them); exits with its exit code.
pub fn start(store: &StoreArgs, a: StartArgs) -> anyhow::Result<()> {
    let (rt, record) = a.place.runtime_of(store, &a.container)?;
    let c = rt.load(&record.id)?;
    if a.detach {
        let d = record.detached.clone().unwrap_or_default();
        let options = image_runtime::DetachOptions {
            restart: d.restart,
            log: d.log,
            monitor_command: None,
        };
        return start_detached(c, &options);
    }
    let made_with_stdin = c.spec().ok().is_some_and(|s| {
        s.annotations()
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_STDIN))
            .is_some_and(|v| v == "true")
    });
    let stdin = a.interactive || made_with_stdin;
    let code = attached(&rt, c, stdin, false, a.sig_proxy)?;
    exit_with(code)
}

/// Arguments of `imagectl exec`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "The container must be running (its `run` or `start` still \
attached in another process). The command gets the container's user, environment, \
working directory, capabilities and limits unless overridden. With the native \
backend it joins the container's namespaces and cgroups with setns; with runc \
and crun it is `runc exec` / `crun exec` (no -t there)."
)]
pub struct ExecArgs {
    #[command(flatten)]
    pub place: PlaceArgs,
    /// Keep standard input attached.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal (native backend only).
    #[arg(short, long)]
    pub tty: bool,
    /// Set an environment variable (KEY=VALUE), repeatable.
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// The working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// The user: name, uid, name:group or uid:gid (from the container's /etc/passwd).
    #[arg(short, long)]
    pub user: Option<String>,
    /// The container (ID or unique prefix).
    pub container: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

/// Runs a command in a running container, attached; exits with its code.
pub fn exec(store: &StoreArgs, a: ExecArgs) -> anyhow::Result<()> {
    let (rt, record) = a.place.runtime_of(store, &a.container)?;
    let mut o = ExecOptions::new(a.cmd.iter().cloned());
    o.env.clone_from(&a.env);
    o.working_dir.clone_from(&a.workdir);
    o.user.clone_from(&a.user);
    o.tty = a.tty;
    let mut p = rt.exec(&record.id, &o, stdio(a.interactive))?;
    let exit = p.wait()?;
    exit_with(exit.status.code())
}

/// Arguments of `imagectl ps`.
#[derive(Debug, clap::Args)]
#[command(after_help = PLACES)]
pub struct PsArgs {
    #[command(flatten)]
    pub place: PlaceArgs,
    /// Print JSON records.
    #[arg(long)]
    pub json: bool,
    /// Accepted for Docker's sake: every container is listed anyway.
    #[arg(short, long)]
    pub all: bool,
    /// Show each command whole (cut to 20 characters otherwise, as
    /// `docker ps` does).
    #[arg(long)]
    pub no_trunc: bool,
}

/// A container's command as `docker ps` shows it: cut to 20 characters
/// (19 and `…`) unless `whole`, then quoted with its control characters
/// (and every other character a terminal could act on) escaped, so an
/// image's command never writes escape sequences to the terminal.
fn shown_command(command: &str, whole: bool) -> String {
    const WIDTH: usize = 20;
    if !whole && command.chars().nth(WIDTH).is_some() {
        let cut: String = command.chars().take(WIDTH - 1).chain(['…']).collect();
        format!("{cut:?}")
    } else {
        format!("{command:?}")
    }
}

/// Lists the containers (every status).
/// With the global `--quiet`/`-q`, only the IDs are printed.
pub fn ps(store: &StoreArgs, ui: &super::progress::UiArgs, a: PsArgs) -> anyhow::Result<()> {
    // As they are now: one whose owner was killed while it ran has stopped.
    let records: Vec<ContainerRecord> = state::list(&a.place.state_dir(store)?)?
        .iter()
        .map(|r| r.observed())
        .collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(());
    }
    if ui.quiet {
        for r in &records {
            println!("{}", r.id);
        }
        return Ok(());
    }
    println!(
        "{:<12}  {:<30}  {:<14}  {:<6}  COMMAND",
        "CONTAINER ID", "IMAGE", "STATUS", "BY"
    );
    for r in &records {
        let status = match (r.status, r.exit_code) {
            (ContainerStatus::Stopped, Some(c)) => format!("exited ({c})"),
            (s, _) => format!("{s:?}").to_lowercase(),
        };
        let command = std::fs::read(r.bundle.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                let args = v.pointer("/process/args")?.as_array()?.clone();
                Some(
                    args.iter()
                        .filter_map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                )
            })
            .unwrap_or_default();
        println!(
            "{:<12}  {:<30}  {:<14}  {:<6}  {}",
            r.id.chars().take(12).collect::<String>(),
            r.image.as_deref().unwrap_or("-"),
            status,
            r.backend,
            shown_command(&command, a.no_trunc)
        );
    }
    Ok(())
}

/// Arguments of `imagectl kill`.
#[derive(Debug, clap::Args)]
#[command(after_help = PLACES)]
pub struct KillArgs {
    #[command(flatten)]
    pub place: PlaceArgs,
    /// The signal: a number or a name as docker takes it (KILL, SIGTERM,
    /// usr1, RTMIN+3, SIGRTMAX-1).
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    /// The container (ID or unique prefix).
    pub container: String,
}

/// Sends a signal to a running container.
pub fn kill(store: &StoreArgs, a: KillArgs) -> anyhow::Result<()> {
    let signal: Signal = a.signal.parse()?;
    let (rt, record) = a.place.runtime_of(store, &a.container)?;
    rt.kill(&record.id, signal)?;
    Ok(())
}

/// Arguments of `imagectl rm`.
#[derive(Debug, clap::Args)]
#[command(after_help = PLACES)]
pub struct RmArgs {
    #[command(flatten)]
    pub place: PlaceArgs,
    /// Remove running containers too (killed first).
    #[arg(short, long)]
    pub force: bool,
    /// Remove the containers' anonymous volumes too (named ones stay).
    #[arg(short, long)]
    pub volumes: bool,
    /// The containers (IDs or unique prefixes).
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// Deletes containers: process, mounts, cgroups, writable snapshot, state.
pub fn rm(store: &StoreArgs, a: RmArgs) -> anyhow::Result<()> {
    let mut failed = 0;
    for id in &a.containers {
        let result = a.place.find(store, id).and_then(|r| {
            // An unknown one (its monitor killed) may run: --force too.
            // Checked before the runtime is opened: its gc would collect it.
            let status = r.observed_status();
            let running = matches!(status, ContainerStatus::Running | ContainerStatus::Unknown);
            if running && !a.force {
                bail!(
                    "container {} is {}: stop it or use --force",
                    r.id,
                    format!("{status:?}").to_lowercase()
                );
            }
            let rt = a.place.runtime(store, RuntimeArg::of_record(&r.backend))?;
            let deleted = if a.volumes {
                rt.delete_with_volumes(&r.id)
            } else {
                rt.delete(&r.id)
            };
            match deleted {
                // Collected by the runtime's gc when it was opened (its
                // monitor or owner died): removed all the same.
                Err(image_runtime::ContainerError::NotFound { .. }) => {}
                other => other?,
            }
            println!("{}", r.id);
            Ok(())
        });
        if let Err(e) = result {
            eprintln!("imagectl: {}", super::describe(&e));
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} of {} containers not removed", a.containers.len());
    }
    Ok(())
}

/// Arguments of `imagectl commit`.
#[derive(Debug, clap::Args)]
#[command(after_help = PLACES)]
pub struct CommitArgs {
    #[command(flatten)]
    pub place: PlaceArgs,
    /// The author of the new layer and image.
    #[arg(short, long)]
    pub author: Option<String>,
    /// A comment for the history entry.
    #[arg(short, long)]
    pub message: Option<String>,
    /// The container (ID or unique prefix); it must not be running.
    pub container: String,
    /// The name of the new image.
    pub reference: String,
}

/// Commits a container's changes as a new image; prints its ID.
pub fn commit(store: &StoreArgs, a: CommitArgs) -> anyhow::Result<()> {
    let s = store.open()?;
    let (rt, record) = a.place.runtime_of(store, &a.container)?;
    let c = rt.load(&record.id)?;
    let mut o = CommitOptions::new().tag(a.reference.clone());
    if let Some(x) = &a.author {
        o = o.author(x.clone());
    }
    if let Some(x) = &a.message {
        o = o.comment(x.clone());
    }
    let committed = c.commit(&s, &o)?;
    println!("{}", committed.config.image_id());
    Ok(())
}

/// Arguments of `imagectl bundle`.
#[derive(Debug, clap::Args)]
pub struct BundleArgs {
    #[command(flatten)]
    pub flags: ContainerFlags,
    /// The image.
    pub image: String,
    /// The bundle directory to write: config.json and rootfs/ (which must not exist).
    pub dir: PathBuf,
    /// The command (replaces the image's Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

/// Writes an OCI bundle of an image: its layers flattened into `rootfs/`
/// and a `config.json` that `runc run` and `crun run` accept.
pub fn bundle(store: &StoreArgs, a: BundleArgs) -> anyhow::Result<()> {
    let s = store.open()?;
    let opts = a.flags.options(&a.cmd)?;
    image_runtime::bundle::export_image(&s, &a.image, &a.dir, &opts)?;
    println!("{}", a.dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// What a test relay sent.
    type Sent = Arc<Mutex<Vec<Signal>>>;

    /// A relay that records what it sends.
    fn recording() -> (Relay<impl Fn(Signal)>, Sent) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let record = sent.clone();
        let relay = Relay::held(move |s| record.lock().unwrap().push(s));
        (relay, sent)
    }

    #[test]
    fn the_real_time_signals_caught_are_those_of_the_libc() {
        // musl's range starts at 35: 34 is its own, and is not caught.
        let musl: Vec<i32> = realtime(35, 64).map(Signal::as_raw).collect();
        assert_eq!(musl, (35..=64).collect::<Vec<_>>());
        // A wider range than a container can be sent keeps to Signal's.
        assert_eq!(realtime(32, 70).count(), 31);
        let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        let caught: Vec<i32> = proxied()
            .filter(|s| s.is_realtime())
            .map(Signal::as_raw)
            .collect();
        assert_eq!(caught, (min..=max).collect::<Vec<_>>());
    }

    #[test]
    fn signals_before_the_start_are_held_then_sent_once_each_in_order() {
        let (relay, sent) = recording();
        for s in [Signal::INT, Signal::TERM, Signal::INT, Signal::HUP] {
            relay.receive(s);
        }
        assert_eq!(*sent.lock().unwrap(), [], "sent before the container runs");
        relay.open();
        assert_eq!(
            *sent.lock().unwrap(),
            [Signal::INT, Signal::TERM, Signal::HUP]
        );
        relay.receive(Signal::INT);
        relay.receive(Signal::INT);
        assert_eq!(
            *sent.lock().unwrap(),
            [
                Signal::INT,
                Signal::TERM,
                Signal::HUP,
                Signal::INT,
                Signal::INT
            ]
        );
    }

    #[test]
    fn a_relay_holds_at_most_one_of_each_signal() {
        let (relay, sent) = recording();
        for _ in 0..10_000 {
            PROXIED.into_iter().for_each(|s| relay.receive(s));
        }
        relay.open();
        let sent = sent.lock().unwrap();
        assert_eq!(sent.len(), PROXIED.len(), "held more than one of each");
        assert_eq!(*sent, PROXIED);
    }

    /// Set in the child of the test below, which runs the test again.
    const CHILD: &str = "IMAGECTL_TEST_SIGNAL_AFTER_PROXY";

    /// After a proxy is dropped, SIGINT, SIGTERM and a real-time signal
    /// end the process again (they did nothing, signal-hook's handler
    /// staying installed). Each
    /// in a child process of its own: the signal ends it.
    #[test]
    fn a_dropped_proxy_gives_the_signals_their_default_action_back() {
        use std::os::unix::process::ExitStatusExt;
        if let Ok(raw) = std::env::var(CHILD) {
            drop(SignalProxy::catch(Box::new(|_| {})).unwrap());
            signal_hook::low_level::raise(raw.parse().unwrap()).unwrap();
            // Still here: the signal was caught and dropped.
            std::process::exit(0);
        }
        let rt = "RTMIN+3".parse::<Signal>().unwrap();
        for signal in [Signal::INT, Signal::TERM, rt] {
            let status = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "cmd::run::tests::a_dropped_proxy_gives_the_signals_their_default_action_back",
                    "--test-threads=1",
                ])
                .env(CHILD, signal.as_raw().to_string())
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            // A real-time signal's default is emulated as an exit with
            // 128 + its number (signal-hook knows only the standard ones).
            let ended = match signal.is_realtime() {
                false => status.signal(),
                true => status.code().map(|c| c - 128),
            };
            assert_eq!(ended, Some(signal.as_raw()), "{signal}: {status}");
        }
    }
}
