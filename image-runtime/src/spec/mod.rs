//! Spec generation: an image config and [`RunOptions`] become an OCI
//! runtime [`Spec`], the way Docker builds one.
//!
//! [`generate`] is pure: everything it needs from the filesystem (the
//! resolved user, the paths of the `/etc` files) is in [`SpecContext`],
//! which [`crate::ContainerBuilder`] fills by reading inside the root.

pub mod defaults;
pub mod mounts;
pub mod process;
pub mod resources;
pub mod seccomp;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use image_core::config::{ConfigLimitError, RunConfig};
use image_core::oci_spec::runtime::{
    Box as ConsoleSize, BoxBuilder, Capabilities, Linux, LinuxCapabilities, LinuxDeviceCgroup,
    LinuxDeviceType, LinuxNamespace, LinuxNamespaceType, LinuxResources, LinuxSeccomp, PosixRlimit,
    PosixRlimitBuilder, PosixRlimitType, Process, Root, Spec, User,
};
use image_core::{Classify, ErrorKind};
use serde::{Deserialize, Serialize};

pub use crate::user::ResolvedUser;
use crate::user::MAX_ID;

pub use mounts::default_mounts;
pub use resources::{NetworkMode, Resources};
pub use seccomp::SeccompMode;

/// Annotation recording the image's and the caller's exposed ports,
/// comma-separated (`80/tcp,53/udp`).
pub const ANNOTATION_EXPOSED_PORTS: &str = "io.image-crates.runtime.exposed-ports";
/// Annotation recording the image's declared volumes, comma-separated.
pub const ANNOTATION_IMAGE_VOLUMES: &str = "io.image-crates.runtime.image-volumes";
/// Annotation asking the backend for an init process as pid 1 (`true`),
/// as `docker run --init`: the native backend runs one; runc and crun
/// refuse it with [`crate::BackendError::Unsupported`].
pub const ANNOTATION_INIT: &str = "io.image-crates.runtime.init";
/// Annotation recording that the container was made to read its standard
/// input (`true`, `docker run -i`): what `start` attaches by default. The
/// OCI spec has no field for it.
pub const ANNOTATION_STDIN: &str = "io.image-crates.runtime.stdin";

/// A bind mount from the host or a named volume: `src:dst[:ro|rw]`,
/// read-write unless `ro`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Absolute host path, or the name of a volume (not absolute:
    /// Docker's rule; see [`crate::volume`]), created on first use in the
    /// runtime's state directory.
    pub source: PathBuf,
    /// Absolute path in the container.
    pub destination: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
}

impl FromStr for Volume {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Volume, SpecError> {
        let bad = |why: &str| SpecError::InvalidOption {
            option: "volume",
            value: s.to_owned(),
            reason: why.to_owned(),
        };
        let parts: Vec<&str> = s.split(':').collect();
        let (src, dst, ro) = match parts.as_slice() {
            [src, dst] => (*src, *dst, false),
            [src, dst, "ro"] => (*src, *dst, true),
            [src, dst, "rw"] => (*src, *dst, false),
            [_, _, _] => return Err(bad("mode must be ro or rw")),
            _ => return Err(bad("expected SRC:DST[:ro|rw]")),
        };
        if !dst.starts_with('/') {
            return Err(bad("the path in the container must be absolute"));
        }
        // Docker's rule: a source that is not absolute names a volume.
        if !src.starts_with('/') && crate::volume::validate_name(src).is_err() {
            return Err(bad(
                "the source is neither an absolute host path nor a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)",
            ));
        }
        Ok(Volume {
            source: PathBuf::from(src),
            destination: clean_absolute(dst),
            read_only: ro,
        })
    }
}

/// A resource limit for the container process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// Which limit.
    pub resource: PosixRlimitType,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// Caller's choices for one container (`docker run`'s flags); the image
/// config supplies the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunOptions {
    /// `--entrypoint`: replaces the image's; `Some(vec![])` or `[""]`
    /// clears it. Overriding it drops the image's Cmd unless `cmd` is set.
    pub entrypoint: Option<Vec<String>>,
    /// The command after the image name; replaces the image's Cmd.
    pub cmd: Option<Vec<String>>,
    /// `-e KEY=value`, replacing the image's entries by key.
    pub env: Vec<String>,
    /// `-w`: the working directory (absolute).
    pub working_dir: Option<String>,
    /// `-u`: `name`, `uid`, `name:group`, `uid:gid`.
    pub user: Option<String>,
    /// `--group-add` (numeric).
    pub additional_gids: Vec<u32>,
    /// `-h`: defaults to the first 12 characters of the container ID.
    pub hostname: Option<String>,
    /// `-t`: allocate a terminal (`process.terminal`; sets `TERM=xterm`).
    pub tty: bool,
    /// `-i`: the process reads the caller's standard input (recorded as
    /// [`ANNOTATION_STDIN`]; the caller passes the matching
    /// [`crate::Stdio`] when starting).
    pub stdin: bool,
    /// `--init`: a reaper runs as pid 1, forwards signals to the program
    /// (pid 2) and reaps orphans ([`ANNOTATION_INIT`]). Native backend only.
    pub init: bool,
    /// `--memory`, `--pids-limit`, `--cpus`: written to `linux.resources`.
    pub resources: Resources,
    /// `--read-only`: the root filesystem is mounted read-only.
    pub read_only: bool,
    /// `-v SRC:DST[:ro]`.
    pub volumes: Vec<Volume>,
    /// `--ulimit`; each is lowered to the host's hard limit.
    pub rlimits: Vec<Rlimit>,
    /// `-p`/`--expose`: ports recorded with the image's ExposedPorts.
    pub exposed_ports: Vec<String>,
    /// `--net none` (the default: a network namespace with loopback only)
    /// or `--net host` (no network namespace; the host's `/etc/hosts` and
    /// `/etc/resolv.conf`).
    pub network: NetworkMode,
    /// Extra annotations.
    pub annotations: BTreeMap<String, String>,
    /// `--security-opt seccomp=`: Docker's default profile unless the
    /// caller says `unconfined` or gives a profile.
    pub seccomp: SeccompMode,
    /// `--privileged` (Docker's): every capability the host kernel has, no
    /// seccomp filter (whatever [`seccomp`](Self::seccomp) says), no
    /// masked or read-only paths, `/sys` and `/sys/fs/cgroup` writable,
    /// and a device cgroup that allows every device. Unlike Docker, the
    /// host's device nodes are not added to `/dev` (the native backend
    /// refuses `linux.devices`); the container may make the nodes it
    /// needs (`CAP_MKNOD`, every device allowed).
    pub privileged: bool,
}

impl RunOptions {
    /// Options that change nothing: the image's own settings apply.
    pub fn new() -> RunOptions {
        RunOptions::default()
    }
}

/// The files Docker provides in `/etc`, kept in the container's state
/// directory and bind-mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcFiles {
    /// Host path of the container's `/etc/hosts`.
    pub hosts: PathBuf,
    /// Host path of the container's `/etc/hostname`.
    pub hostname: PathBuf,
    /// Host path of the container's `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
}

/// What [`generate`] needs from outside the config and the options.
#[derive(Debug, Clone)]
pub struct SpecContext {
    /// Container ID (64 hex characters).
    pub id: String,
    /// `root.path` of the spec (absolute, or relative to the bundle).
    pub root_path: PathBuf,
    /// The resolved user (the image's `/etc/passwd` and `/etc/group`
    /// read in the root, or [`ResolvedUser::root`]).
    pub user: ResolvedUser,
    /// The `/etc` files to bind-mount, if any.
    pub etc_files: Option<EtcFiles>,
    /// The host's hard limits, by resource (`None` = unlimited).
    pub host_hard_limits: Vec<(PosixRlimitType, Option<u64>)>,
    /// `linux.cgroupsPath` (relative: under the runtime's own cgroup).
    pub cgroups_path: Option<String>,
    /// The host can limit memory + swap (v1 `memory.memsw.*`, v2
    /// `memory.swap.max`; see `cgroup::swap_limit_supported`):
    /// a memory limit then also limits swap to the same (no swap use).
    pub swap_limit: bool,
}

/// Errors of turning a config and options into a spec.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// Neither the image nor the options give a command.
    #[error("no command specified: the image has no Entrypoint or Cmd and none was given")]
    NoCommand,
    /// An option's value is malformed.
    #[error("invalid {option} {value:?}: {reason}")]
    InvalidOption {
        /// Which option.
        option: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// The image config holds more than the limits allow (see
    /// [`image_core::config::MAX_CONFIG_ENTRIES`]).
    #[error(transparent)]
    ConfigLimit(#[from] ConfigLimitError),
    /// The user's uid or gid, or a supplementary gid, is above
    /// `i32::MAX` (`4294967295` is `-1`, which `setresuid` reads as
    /// "unchanged": the process would stay root).
    #[error("{what} {id} is out of range 0-{max}", max = MAX_ID)]
    IdOutOfRange {
        /// `uid`, `gid` or `supplementary gid`.
        what: &'static str,
        /// The ID.
        id: u64,
    },
    /// More supplementary groups than [`NGROUPS_MAX`] (the image's
    /// `/etc/group` and `--group-add` together).
    #[error("{found} supplementary groups, above the kernel's limit of {max}", max = NGROUPS_MAX)]
    TooManyGroups {
        /// How many distinct groups.
        found: usize,
    },
    /// `--cpus` above the CPUs of the host (see
    /// [`Resources::validate_for_host`]).
    #[error(
        "invalid cpus {:.2}: range of CPUs is from 0.01 to {host_cpus}.00, as there are only {host_cpus} CPUs available",
        *nano_cpus as f64 / 1e9
    )]
    CpusAboveHost {
        /// The limit asked for, in billionths of a CPU.
        nano_cpus: u64,
        /// The CPUs the host has for this process.
        host_cpus: u32,
    },
}

impl Classify for SpecError {
    fn kind(&self) -> ErrorKind {
        match self {
            SpecError::NoCommand
            | SpecError::InvalidOption { .. }
            | SpecError::IdOutOfRange { .. }
            | SpecError::TooManyGroups { .. }
            | SpecError::CpusAboveHost { .. } => ErrorKind::InvalidInput,
            SpecError::ConfigLimit(e) => e.kind(),
        }
    }
}

/// Cleans an absolute path lexically (`/a/./b/../c` -> `/a/c`), with the
/// family's one cleaner, [`image_core::path::clean_absolute`].
pub fn clean_absolute(p: &str) -> PathBuf {
    PathBuf::from(image_core::path::clean_absolute(p))
}

/// The working directory: the option's, else the image's, else `/`.
///
/// # Errors
/// [`SpecError::InvalidOption`] when it is not absolute.
pub fn working_dir(config: &RunConfig, opts: &RunOptions) -> Result<PathBuf, SpecError> {
    let wd = opts
        .working_dir
        .as_deref()
        .or(config.working_dir.as_deref())
        .filter(|w| !w.is_empty())
        .unwrap_or("/");
    if !wd.starts_with('/') {
        return Err(SpecError::InvalidOption {
            option: "working directory",
            value: wd.to_owned(),
            reason: "it must be an absolute path".into(),
        });
    }
    let cleaned = clean_absolute(wd);
    // The kernel takes no path argument of PATH_MAX bytes or more, so the
    // process could never start there: refuse it before any directory of
    // it is made in the root (a hostile image's 3,000-component WORKDIR
    // took seconds to fail otherwise).
    if cleaned.as_os_str().len() >= MAX_WORKING_DIR {
        return Err(SpecError::InvalidOption {
            option: "working directory",
            value: wd.chars().take(80).collect::<String>() + "...",
            reason: format!(
                "it is {} bytes long, the kernel takes at most {}",
                cleaned.as_os_str().len(),
                MAX_WORKING_DIR - 1
            ),
        });
    }
    Ok(cleaned)
}

/// The longest working directory, in bytes, plus one (Linux's PATH_MAX).
pub const MAX_WORKING_DIR: usize = 4096;

/// The argv of the process (Docker's Entrypoint/Cmd rules).
///
/// # Errors
/// [`SpecError::NoCommand`] when it is empty.
pub fn args(config: &RunConfig, opts: &RunOptions) -> Result<Vec<String>, SpecError> {
    let args = process::command(
        config.entrypoint.as_deref(),
        config.cmd.as_deref(),
        opts.entrypoint.as_deref(),
        opts.cmd.as_deref(),
    );
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

/// The hostname: the option's, else the first 12 characters of the ID.
pub fn hostname(id: &str, opts: &RunOptions) -> String {
    opts.hostname
        .clone()
        .unwrap_or_else(|| id.chars().take(12).collect())
}

/// The final environment (see [`process::container_env`]).
pub fn env(config: &RunConfig, opts: &RunOptions, hostname: &str, home: &str) -> Vec<String> {
    let merged = process::merge_env(config.env.as_deref().unwrap_or(&[]), &opts.env);
    process::container_env(&merged, hostname, opts.tty, home)
}

/// The rlimits: Docker's default `RLIMIT_NOFILE` and the caller's, each
/// soft and hard lowered to the host's hard limit (a process without
/// `CAP_SYS_RESOURCE` cannot raise it, and the runtime would fail).
pub fn rlimits(opts: &RunOptions, host_hard: &[(PosixRlimitType, Option<u64>)]) -> Vec<Rlimit> {
    let mut out: Vec<Rlimit> = vec![Rlimit {
        resource: PosixRlimitType::RlimitNofile,
        soft: defaults::DEFAULT_NOFILE,
        hard: defaults::DEFAULT_NOFILE,
    }];
    for r in &opts.rlimits {
        match out.iter_mut().find(|o| o.resource == r.resource) {
            Some(o) => *o = *r,
            None => out.push(*r),
        }
    }
    for r in &mut out {
        let cap = host_hard
            .iter()
            .find(|(t, _)| *t == r.resource)
            .and_then(|(_, h)| *h);
        if let Some(cap) = cap {
            r.hard = r.hard.min(cap);
        }
        r.soft = r.soft.min(r.hard);
    }
    out
}

/// The host's hard limits for every resource the spec can name.
pub fn host_hard_limits() -> Vec<(PosixRlimitType, Option<u64>)> {
    use rustix::process::{getrlimit, Resource};
    [
        (PosixRlimitType::RlimitCpu, Resource::Cpu),
        (PosixRlimitType::RlimitFsize, Resource::Fsize),
        (PosixRlimitType::RlimitData, Resource::Data),
        (PosixRlimitType::RlimitStack, Resource::Stack),
        (PosixRlimitType::RlimitCore, Resource::Core),
        (PosixRlimitType::RlimitRss, Resource::Rss),
        (PosixRlimitType::RlimitNproc, Resource::Nproc),
        (PosixRlimitType::RlimitNofile, Resource::Nofile),
        (PosixRlimitType::RlimitMemlock, Resource::Memlock),
        (PosixRlimitType::RlimitAs, Resource::As),
        (PosixRlimitType::RlimitLocks, Resource::Locks),
        (PosixRlimitType::RlimitSigpending, Resource::Sigpending),
        (PosixRlimitType::RlimitMsgqueue, Resource::Msgqueue),
        (PosixRlimitType::RlimitNice, Resource::Nice),
        (PosixRlimitType::RlimitRtprio, Resource::Rtprio),
        (PosixRlimitType::RlimitRttime, Resource::Rttime),
    ]
    .into_iter()
    .map(|(t, r)| (t, getrlimit(r).maximum))
    .collect()
}

fn joined_keys<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    let mut v: Vec<&str> = keys.map(String::as_str).collect();
    v.sort_unstable();
    v.dedup();
    v.join(",")
}

/// The most supplementary groups a process can have (`NGROUPS_MAX`,
/// setgroups(2)).
pub const NGROUPS_MAX: usize = 65_536;

/// The process's supplementary groups: the primary group first, then the
/// user's (`/etc/group`), then `--group-add`'s, each once; every ID, the
/// uid and gid too, at most `i32::MAX`.
///
/// The primary group is always in the list, as Docker, containerd,
/// BuildKit and buildah put it since CVE-2022-36109 / CVE-2023-25173: a
/// process whose primary group is missing from its supplementary groups
/// escapes a file's group-deny mode (`0705`) once it drops that group
/// with `setgid`, and a RUN step's `id` would differ from theirs.
///
/// # Errors
/// [`SpecError::IdOutOfRange`], [`SpecError::TooManyGroups`].
pub fn groups(user: &ResolvedUser, opts: &RunOptions) -> Result<Vec<u32>, SpecError> {
    supplementary(user, &opts.additional_gids)
}

/// [`groups`] with the extra groups given as a list.
fn supplementary(user: &ResolvedUser, extra: &[u32]) -> Result<Vec<u32>, SpecError> {
    let mut seen = std::collections::HashSet::new();
    let gids: Vec<u32> = std::iter::once(&user.gid)
        .chain(&user.additional_gids)
        .chain(extra)
        .copied()
        .filter(|g| seen.insert(*g))
        .collect();
    if gids.len() > NGROUPS_MAX {
        return Err(SpecError::TooManyGroups { found: gids.len() });
    }
    let ids = [("uid", user.uid), ("gid", user.gid)]
        .into_iter()
        .chain(gids.iter().map(|g| ("supplementary gid", *g)));
    for (what, id) in ids {
        if id > MAX_ID {
            return Err(SpecError::IdOutOfRange {
                what,
                id: id.into(),
            });
        }
    }
    Ok(gids)
}

/// The spec's `process.user` of `user`, with the `extra` groups
/// (`--group-add`) after the user's own (see [`groups`]).
///
/// # Errors
/// As [`groups`].
pub(crate) fn process_user(user: &ResolvedUser, extra: &[u32]) -> Result<User, SpecError> {
    let gids = supplementary(user, extra)?;
    let mut u = User::default();
    u.set_uid(user.uid)
        .set_gid(user.gid)
        .set_additional_gids(Some(gids));
    Ok(u)
}

/// Generates the runtime spec for a container of an image.
///
/// # Errors
/// [`SpecError::NoCommand`], [`SpecError::InvalidOption`] (working
/// directory not absolute, a resource limit out of range),
/// [`SpecError::ConfigLimit`] (the config holds too much),
/// [`SpecError::IdOutOfRange`].
pub fn generate(
    config: &RunConfig,
    opts: &RunOptions,
    ctx: &SpecContext,
) -> Result<Spec, SpecError> {
    config.check_limits()?;
    opts.resources.validate()?;
    let args = args(config, opts)?;
    let cwd = working_dir(config, opts)?;
    let hostname = hostname(&ctx.id, opts);
    let env = env(config, opts, &hostname, &ctx.user.home);

    let caps: Capabilities = if opts.privileged {
        host_capabilities()
    } else {
        defaults::DEFAULT_CAPABILITIES.into_iter().collect()
    };
    let seccomp = match opts.privileged {
        true => None,
        false => seccomp_for(&opts.seccomp, &caps),
    };
    let mut capabilities = LinuxCapabilities::default();
    capabilities
        .set_bounding(Some(caps.clone()))
        .set_effective(Some(caps.clone()))
        .set_permitted(Some(caps))
        .set_inheritable(None)
        .set_ambient(None);
    let rlimits: Vec<PosixRlimit> = rlimits(opts, &ctx.host_hard_limits)
        .iter()
        .map(|r| posix_rlimit(r.resource, r.soft, r.hard))
        .collect();
    let user = process_user(&ctx.user, &opts.additional_gids)?;

    let mut mounts = mounts::default_mounts();
    if opts.privileged {
        mounts::make_writable(&mut mounts, &["/sys", "/sys/fs/cgroup"]);
    }
    if let Some(f) = &ctx.etc_files {
        for (dest, src) in [
            ("/etc/resolv.conf", &f.resolv_conf),
            ("/etc/hostname", &f.hostname),
            ("/etc/hosts", &f.hosts),
        ] {
            mounts.push(mounts::bind(Path::new(dest), src, opts.read_only));
        }
    }
    for v in &opts.volumes {
        // A name is resolved to its directory by the runtime that keeps
        // the volumes (`ContainerBuilder::create`); unresolved, it would
        // be a path relative to wherever the spec is run.
        if crate::volume::is_volume_name(&v.source) {
            return Err(SpecError::InvalidOption {
                option: "volume",
                value: v.source.display().to_string(),
                reason: "a named volume is only known to a runtime's state directory (create the container with a Runtime)".into(),
            });
        }
        mounts.push(mounts::bind(&v.destination, &v.source, v.read_only));
    }

    let mut kinds = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    if opts.network == NetworkMode::None {
        kinds.push(LinuxNamespaceType::Network);
    }
    let namespaces: Vec<LinuxNamespace> = kinds
        .into_iter()
        .map(|k| {
            let mut ns = LinuxNamespace::default();
            ns.set_typ(k).set_path(None);
            ns
        })
        .collect();

    let mut deny_all = LinuxDeviceCgroup::default();
    deny_all
        .set_allow(false)
        .set_typ(None)
        .set_access(Some("rwm".to_owned()));
    let mut devices = vec![deny_all];
    let allowed = match opts.privileged {
        true => &[(LinuxDeviceType::A, None, None, "rwm")][..],
        false => &defaults::ALLOWED_DEVICES[..],
    };
    for &(typ, major, minor, access) in allowed {
        let mut d = LinuxDeviceCgroup::default();
        d.set_allow(true)
            .set_typ(Some(typ))
            .set_major(major)
            .set_minor(minor)
            .set_access(Some(access.to_owned()));
        devices.push(d);
    }

    let mut annotations: BTreeMap<String, String> = opts.annotations.clone();
    let ports = config
        .exposed_ports
        .iter()
        .flat_map(|m| m.keys())
        .chain(opts.exposed_ports.iter());
    let ports = joined_keys(ports);
    if !ports.is_empty() {
        annotations.insert(ANNOTATION_EXPOSED_PORTS.into(), ports);
    }
    let vols = joined_keys(config.volumes.iter().flat_map(|m| m.keys()));
    if !vols.is_empty() {
        annotations.insert(ANNOTATION_IMAGE_VOLUMES.into(), vols);
    }
    if opts.init {
        annotations.insert(ANNOTATION_INIT.into(), "true".into());
    }
    if opts.stdin {
        annotations.insert(ANNOTATION_STDIN.into(), "true".into());
    }
    let mut resources = LinuxResources::default();
    resources.set_devices(Some(devices));
    opts.resources.apply_to(&mut resources, ctx.swap_limit);

    let mut linux = Linux::default();
    linux
        .set_namespaces(Some(namespaces))
        .set_masked_paths((!opts.privileged).then(|| strings(&defaults::MASKED_PATHS)))
        .set_readonly_paths((!opts.privileged).then(|| strings(&defaults::READONLY_PATHS)))
        .set_resources(Some(resources))
        .set_cgroups_path(ctx.cgroups_path.as_ref().map(PathBuf::from))
        .set_seccomp(seccomp);

    let console_size = opts.tty.then(|| console_size(24, 80));
    let mut process = Process::default();
    process
        .set_terminal(Some(opts.tty))
        .set_console_size(console_size)
        .set_user(user)
        .set_args(Some(args))
        .set_env(Some(env))
        .set_cwd(cwd)
        .set_capabilities(Some(capabilities))
        .set_rlimits(Some(rlimits))
        .set_no_new_privileges(Some(false));

    let mut root = Root::default();
    root.set_path(ctx.root_path.clone())
        .set_readonly(Some(opts.read_only));

    let mut spec = Spec::default();
    spec.set_version("1.0.2".to_owned())
        .set_root(Some(root))
        .set_process(Some(process))
        .set_hostname(Some(hostname))
        .set_mounts(Some(mounts))
        .set_linux(Some(linux))
        .set_annotations((!annotations.is_empty()).then(|| annotations.into_iter().collect()));
    Ok(spec)
}

/// Every capability this process may give (a privileged container's set,
/// as Docker's daemon counts them): those of its bounding set
/// (`CapBnd` of `/proc/self/status`, which holds only what the kernel
/// knows); all that [`defaults::ALL_CAPABILITIES`] knows when it cannot
/// be read.
fn host_capabilities() -> Capabilities {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    defaults::ALL_CAPABILITIES
        .into_iter()
        .enumerate()
        .filter(|(n, _)| bounding >> n & 1 == 1)
        .map(|(_, c)| c)
        .collect()
}

/// The spec's `linux.seccomp` for `mode`, resolved against the bounding
/// set `caps` and the host (Docker's rule: the default profile unless the
/// caller says `unconfined` or gives one).
fn seccomp_for(mode: &SeccompMode, caps: &Capabilities) -> Option<LinuxSeccomp> {
    let profile = match mode {
        SeccompMode::Unconfined => return None,
        SeccompMode::Default => &seccomp::default_profile(),
        SeccompMode::Profile(p) => &**p,
    };
    let names = caps.iter().map(|c| format!("CAP_{c}"));
    Some(profile.resolve(&seccomp::Target::host(names)))
}

// `PosixRlimit` and `Box` are the two oci-spec types used here without
// setters, so they come from their builders. Every field of those has a
// default (struct-level `#[builder(default)]`) and neither has a
// validation function: derive_builder's `build` has no error to return.

#[allow(clippy::expect_used)]
fn posix_rlimit(typ: PosixRlimitType, soft: u64, hard: u64) -> PosixRlimit {
    PosixRlimitBuilder::default()
        .typ(typ)
        .soft(soft)
        .hard(hard)
        .build()
        .expect("PosixRlimitBuilder: every field has a default")
}

#[allow(clippy::expect_used)]
fn console_size(height: u64, width: u64) -> ConsoleSize {
    BoxBuilder::default()
        .height(height)
        .width(width)
        .build()
        .expect("BoxBuilder: every field has a default")
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| (*s).to_owned()).collect()
}

/// The generated tests' numbers: xorshift64 from a fixed `seed`, so a
/// failure reproduces; each call gives one below `n`.
#[cfg(test)]
pub(crate) fn test_rng(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image_core::oci_spec::runtime::{Capability, LinuxNamespaceType};
    use serde_json::json;
    use std::path::Path;

    fn ctx() -> SpecContext {
        SpecContext {
            id: "0123456789abcdef0123".into(),
            root_path: "/r".into(),
            user: ResolvedUser {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![10],
                home: "/home/app".into(),
                name: Some("app".into()),
            },
            etc_files: Some(EtcFiles {
                hosts: "/s/hosts".into(),
                hostname: "/s/hostname".into(),
                resolv_conf: "/s/resolv.conf".into(),
            }),
            host_hard_limits: vec![(PosixRlimitType::RlimitNofile, Some(20000))],
            cgroups_path: Some("image-runtime-x".into()),
            swap_limit: true,
        }
    }

    fn config() -> RunConfig {
        serde_json::from_value(json!({
            "Env": ["PATH=/bin", "A=1"],
            "Cmd": ["sh"],
            "WorkingDir": "/work/./x/..",
            "ExposedPorts": {"80/tcp": {}},
            "Volumes": {"/data": {}},
        }))
        .unwrap()
    }

    #[test]
    fn generates_docker_like_spec() {
        let mut opts = RunOptions::new();
        opts.env = vec!["A=2".into()];
        opts.additional_gids = vec![7, 10];
        opts.volumes = vec!["/host:/mnt/v:ro".parse().unwrap()];
        opts.exposed_ports = vec!["53/udp".into()];
        opts.rlimits = vec![Rlimit {
            resource: PosixRlimitType::RlimitNproc,
            soft: 100,
            hard: 200,
        }];
        let spec = generate(&config(), &opts, &ctx()).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &vec!["sh".to_owned()]);
        assert_eq!(p.cwd(), Path::new("/work"));
        let env = p.env().as_ref().unwrap();
        assert_eq!(
            env,
            &vec![
                "HOSTNAME=0123456789ab",
                "PATH=/bin",
                "A=2",
                "HOME=/home/app"
            ]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
        );
        assert_eq!(p.user().uid(), 1000);
        assert_eq!(
            p.user().additional_gids().as_ref().unwrap(),
            &vec![1000, 10, 7]
        );
        let caps = p
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .as_ref()
            .unwrap();
        assert_eq!(caps.len(), 14);
        assert!(caps.contains(&Capability::NetBindService));
        assert!(!caps.contains(&Capability::SysAdmin));
        let rl = p.rlimits().as_ref().unwrap();
        let nofile = rl
            .iter()
            .find(|r| r.typ() == PosixRlimitType::RlimitNofile)
            .unwrap();
        assert_eq!((nofile.soft(), nofile.hard()), (20000, 20000));
        assert_eq!(spec.hostname().as_deref(), Some("0123456789ab"));
        let mounts = spec.mounts().as_ref().unwrap();
        let dests: Vec<_> = mounts.iter().map(|m| m.destination().clone()).collect();
        for d in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
        ] {
            assert!(dests.contains(&PathBuf::from(d)), "{d}");
        }
        let v = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/mnt/v"))
            .unwrap();
        assert!(v.options().as_ref().unwrap().contains(&"ro".to_owned()));
        let hosts = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/etc/hosts"))
            .unwrap();
        assert_eq!(hosts.source().as_deref(), Some(Path::new("/s/hosts")));
        let linux = spec.linux().as_ref().unwrap();
        let ns: Vec<_> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert!(ns.contains(&LinuxNamespaceType::Network));
        assert_eq!(ns.len(), 5);
        assert_eq!(linux.masked_paths().as_ref().unwrap().len(), 11);
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("image-runtime-x"))
        );
        let ann = spec.annotations().as_ref().unwrap();
        assert_eq!(ann[ANNOTATION_EXPOSED_PORTS], "53/udp,80/tcp");
        assert_eq!(ann[ANNOTATION_IMAGE_VOLUMES], "/data");
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));
    }

    #[test]
    fn limits_network_init_tty_and_stdin_in_the_spec() {
        let mut opts = RunOptions::new();
        opts.resources.memory = Some(64 << 20);
        opts.resources.pids = Some(10);
        opts.resources.nano_cpus = Some(1_500_000_000);
        opts.init = true;
        opts.tty = true;
        opts.stdin = true;
        let v = serde_json::to_value(generate(&config(), &opts, &ctx()).unwrap()).unwrap();
        let r = &v["linux"]["resources"];
        assert_eq!(r["memory"], json!({"limit": 64 << 20, "swap": 64 << 20}));
        assert_eq!(r["pids"], json!({"limit": 10}));
        assert_eq!(r["cpu"], json!({"quota": 150_000, "period": 100_000}));
        // Docker's device rules are still there.
        assert_eq!(r["devices"].as_array().unwrap().len(), 13);
        assert_eq!(v["process"]["terminal"], json!(true));
        assert_eq!(v["annotations"][ANNOTATION_INIT], "true");
        assert_eq!(v["annotations"][ANNOTATION_STDIN], "true");
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["type"].as_str())
            .collect();
        assert!(ns.contains(&"network"), "{ns:?}");
        // The native backend reads the same limits back.
        let l =
            crate::cgroup::manager::Limits::from_spec(&generate(&config(), &opts, &ctx()).unwrap());
        assert_eq!(
            (l.memory, l.memory_swap, l.pids, l.cpu_quota, l.cpu_period),
            (
                Some(64 << 20),
                Some(64 << 20),
                Some(10),
                Some(150_000),
                Some(100_000)
            )
        );

        // Without swap accounting only the limit; no limits, no entries;
        // host network, no network namespace; no init, no annotation.
        let mut c = ctx();
        c.swap_limit = false;
        let mut o = RunOptions::new();
        o.resources.memory = Some(64 << 20);
        o.network = NetworkMode::Host;
        let v = serde_json::to_value(generate(&config(), &o, &c).unwrap()).unwrap();
        assert_eq!(
            v["linux"]["resources"]["memory"],
            json!({"limit": 64 << 20})
        );
        assert!(v["linux"]["resources"]["pids"].is_null());
        assert!(v["linux"]["resources"]["cpu"].is_null());
        assert_eq!(v["process"]["terminal"], json!(false));
        assert!(v["annotations"][ANNOTATION_INIT].is_null());
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.iter().all(|n| n["type"] != "network"), "{ns:?}");

        // Out-of-range limits are refused before anything is made.
        let mut o = RunOptions::new();
        o.resources.memory = Some(1 << 20);
        assert!(matches!(
            generate(&config(), &o, &ctx()),
            Err(SpecError::InvalidOption { .. })
        ));
    }

    #[test]
    fn supplementary_groups_start_with_the_primary_group_each_once() {
        let user = |gid: u32, image: &[u32]| ResolvedUser {
            gid,
            additional_gids: image.to_vec(),
            ..ctx().user
        };
        let with = |extra: &[u32]| {
            let mut o = RunOptions::new();
            o.additional_gids = extra.to_vec();
            o
        };
        /// The primary group, the image's /etc/group, --group-add, the list.
        type Case = (u32, &'static [u32], &'static [u32], &'static [u32]);
        let cases: [Case; 6] = [
            (1000, &[], &[], &[1000]),
            (1000, &[10, 50], &[], &[1000, 10, 50]),
            (1000, &[10, 1000, 50], &[50, 7, 1000], &[1000, 10, 50, 7]),
            (50, &[], &[7], &[50, 7]),
            (0, &[0, 1, 2], &[], &[0, 1, 2]),
            (0, &[], &[], &[0]),
        ];
        for (gid, image, extra, want) in cases {
            let u = user(gid, image);
            assert_eq!(
                groups(&u, &with(extra)).unwrap(),
                want,
                "{gid} {image:?} {extra:?}"
            );
            let p = process_user(&u, extra).unwrap();
            assert_eq!(p.additional_gids().as_deref(), Some(want));
            assert_eq!((p.uid(), p.gid()), (1000, gid));
        }
    }

    #[test]
    fn ids_above_2_pow_31_minus_1_are_refused_for_every_backend() {
        // 4294967295 is (uid_t)-1: setresuid/setgroups would keep root.
        /// uid, gid, the image's groups, `--group-add`, what is refused.
        type Case = (u32, u32, Vec<u32>, Vec<u32>, &'static str);
        let cases: [Case; 5] = [
            (u32::MAX, 0, vec![], vec![], "uid"),
            (0, u32::MAX, vec![], vec![], "gid"),
            (1000, 1000, vec![1 << 31], vec![], "supplementary gid"),
            (1000, 1000, vec![], vec![u32::MAX], "supplementary gid"),
            (1 << 31, 0, vec![], vec![], "uid"),
        ];
        for (uid, gid, image_gids, extra, what) in cases {
            let mut c = ctx();
            c.user.uid = uid;
            c.user.gid = gid;
            c.user.additional_gids = image_gids;
            let mut o = RunOptions::new();
            o.additional_gids = extra;
            match generate(&config(), &o, &c) {
                Err(e @ SpecError::IdOutOfRange { .. }) => {
                    assert_eq!(e.kind(), ErrorKind::InvalidInput);
                    assert!(e.to_string().starts_with(what), "{e}");
                }
                other => panic!("{uid}:{gid}: {other:?}"),
            }
        }
        let mut c = ctx();
        c.user.uid = MAX_ID;
        c.user.gid = MAX_ID;
        assert!(generate(&config(), &RunOptions::new(), &c).is_ok());
        // The kernel's group limit, counted after removing duplicates.
        let mut o = RunOptions::new();
        o.additional_gids = (0..=NGROUPS_MAX as u32).collect();
        assert!(matches!(
            generate(&config(), &o, &c),
            Err(SpecError::TooManyGroups { .. })
        ));
        o.additional_gids = (0..NGROUPS_MAX as u32 - 1)
            .chain(std::iter::repeat_n(7, 10))
            .collect();
        assert!(generate(&config(), &o, &c).is_ok());
    }

    #[test]
    fn an_oversized_config_is_refused_naming_the_field() {
        let mut c = config();
        c.env = Some(
            (0..=image_core::config::MAX_CONFIG_ENTRIES)
                .map(|i| format!("E{i}=1"))
                .collect(),
        );
        match generate(&c, &RunOptions::new(), &ctx()) {
            Err(e @ SpecError::ConfigLimit(_)) => {
                assert_eq!(e.kind(), ErrorKind::InvalidInput);
                assert!(e.to_string().contains("Env"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        let mut c = config();
        c.labels = Some([("k".to_owned(), "v".repeat(5 << 20))].into());
        assert!(matches!(
            generate(&c, &RunOptions::new(), &ctx()),
            Err(SpecError::ConfigLimit(e)) if e.field == "Labels"
        ));
    }

    #[test]
    fn options_and_errors() {
        let mut opts = RunOptions::new();
        opts.entrypoint = Some(vec!["/bin/echo".into()]);
        opts.read_only = true;
        opts.tty = true;
        opts.network = NetworkMode::Host;
        opts.hostname = Some("box".into());
        let spec = generate(&config(), &opts, &ctx()).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &vec!["/bin/echo".to_owned()]);
        assert!(p.env().as_ref().unwrap().contains(&"TERM=xterm".to_owned()));
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        assert_eq!(
            spec.linux()
                .as_ref()
                .unwrap()
                .namespaces()
                .as_ref()
                .unwrap()
                .len(),
            4
        );
        assert_eq!(spec.hostname().as_deref(), Some("box"));

        let empty = RunConfig::default();
        assert!(matches!(
            generate(&empty, &RunOptions::new(), &ctx()),
            Err(SpecError::NoCommand)
        ));
        let mut o = RunOptions::new();
        o.cmd = Some(vec!["x".into()]);
        o.working_dir = Some("rel".into());
        assert!(matches!(
            generate(&empty, &o, &ctx()),
            Err(SpecError::InvalidOption { .. })
        ));
        assert!("a:/b".parse::<Volume>().is_err());
        // A named volume parses, but a spec cannot bind it unresolved.
        let mut opts = RunOptions::new();
        opts.cmd = Some(vec!["/bin/sh".into()]);
        opts.volumes = vec!["vol1:/data".parse::<Volume>().unwrap()];
        assert!(matches!(
            generate(&RunConfig::default(), &opts, &ctx()),
            Err(SpecError::InvalidOption {
                option: "volume",
                ..
            })
        ));
        assert!("/a:/b:xx".parse::<Volume>().is_err());
        assert_eq!(
            "/a:/b/../c".parse::<Volume>().unwrap().destination,
            PathBuf::from("/c")
        );
    }

    #[test]
    fn a_working_dir_of_path_max_or_more_is_refused() {
        let c = RunConfig::default();
        let mut o = RunOptions {
            working_dir: Some("/a".repeat(2047)),
            ..RunOptions::default()
        };
        assert_eq!(working_dir(&c, &o).unwrap().as_os_str().len(), 4094);
        o.working_dir = Some("/a".repeat(3000));
        let e = working_dir(&c, &o).unwrap_err();
        assert!(matches!(e, SpecError::InvalidOption { .. }), "{e:?}");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().len() < 400, "{e}");
    }

    /// `privileged`: every capability of the kernel in every set, no
    /// seccomp even when a profile was asked, no masked or read-only
    /// paths, `/sys` and cgroups writable, every device allowed; the
    /// default spec keeps all of those.
    #[test]
    fn privileged_drops_every_confinement_docker_drops() {
        let look = |privileged: bool| {
            let mut opts = RunOptions::new();
            opts.privileged = privileged;
            opts.seccomp = SeccompMode::Default;
            generate(&config(), &opts, &ctx()).unwrap()
        };
        let ro = |spec: &Spec, dest: &str| {
            let m = spec
                .mounts()
                .as_ref()
                .unwrap()
                .iter()
                .find(|m| m.destination() == Path::new(dest));
            m.unwrap()
                .options()
                .as_ref()
                .unwrap()
                .iter()
                .any(|o| o == "ro")
        };
        let bounding = std::fs::read_to_string("/proc/self/status").unwrap();
        let bounding = bounding
            .lines()
            .find_map(|l| l.strip_prefix("CapBnd:"))
            .unwrap();
        let held = u64::from_str_radix(bounding.trim(), 16)
            .unwrap()
            .count_ones() as usize;
        for privileged in [false, true] {
            let spec = look(privileged);
            let caps = spec
                .process()
                .as_ref()
                .unwrap()
                .capabilities()
                .clone()
                .unwrap();
            for set in [caps.bounding(), caps.effective(), caps.permitted()] {
                let set = set.as_ref().unwrap();
                let want = if privileged { held } else { 14 };
                assert_eq!(set.len(), want, "{privileged}: {set:?}");
                assert_eq!(set.contains(&Capability::SysAdmin), privileged);
            }
            let linux = spec.linux().as_ref().unwrap();
            assert_eq!(linux.seccomp().is_none(), privileged);
            assert_eq!(linux.masked_paths().is_none(), privileged);
            assert_eq!(linux.readonly_paths().is_none(), privileged);
            assert_eq!(ro(&spec, "/sys"), !privileged);
            assert_eq!(ro(&spec, "/sys/fs/cgroup"), !privileged);
            let devices = linux
                .resources()
                .as_ref()
                .unwrap()
                .devices()
                .as_ref()
                .unwrap();
            let all = devices
                .iter()
                .any(|d| d.allow() && d.typ() == Some(LinuxDeviceType::A) && d.major().is_none());
            assert_eq!(all, privileged, "{devices:?}");
            // The same mounts, only writable.
            assert_eq!(
                spec.mounts().as_ref().unwrap().len(),
                look(!privileged).mounts().as_ref().unwrap().len()
            );
        }
    }
}
