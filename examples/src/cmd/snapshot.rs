//! Snapshot commands: `mount`, `umount`, `snapshots`, and the snapshot
//! form of `unpack` (`--driver`, see [`unpack_into_snapshots`]).
//!
//! `imagectl mount REF DIR` unpacks the image into snapshots (one committed
//! snapshot per layer, named by its chain ID, shared between images), makes
//! a read-only view of its top layer (or, with `--rw`, a writable snapshot
//! on it) and mounts it on DIR. The snapshot's key is derived from DIR's
//! canonical path, so `imagectl umount DIR` finds it, unmounts DIR and
//! removes the snapshot (a writable layer's changes go with it).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use image_core::{Digest, Platform};
use image_overlay::image_unpack::{unpack_image, ImageUnpackOptions};
use image_overlay::mount::{Mounter, SysMounter};
use image_overlay::snapshot::{Kind, Labels, SnapshotError};
use image_runtime::snapshots::{Driver, Snapshots};
use image_store::image::resolve_image;

use super::store::StoreArgs;

/// The label naming the directory a `mount` snapshot is mounted on.
const LABEL_MOUNT: &str = "imagectl/mount";
/// The prefix of the key of a `mount` snapshot; the rest is the canonical
/// mount point.
const KEY_PREFIX: &str = "mount:";

/// Where the snapshots are (the same defaults as `run`).
#[derive(Debug, Clone, clap::Args)]
pub struct SnapshotsArgs {
    /// Snapshot directory. Default: $IMAGECTL_SNAPSHOTS, else <store>/../snapshots.
    #[arg(long, env = "IMAGECTL_SNAPSHOTS")]
    pub snapshots: Option<PathBuf>,
    /// Snapshot driver of a new snapshot directory (an existing one keeps
    /// its own). Default: overlay where overlay mounts work, else copy.
    #[arg(long, value_enum)]
    pub snapshotter: Option<DriverArg>,
}

impl SnapshotsArgs {
    /// Opens the snapshot directory these arguments name.
    pub(crate) fn open(&self, store: &StoreArgs) -> anyhow::Result<Snapshots> {
        let dir = match &self.snapshots {
            Some(p) => p.clone(),
            None => {
                let s = std::path::absolute(store.path())?;
                s.parent().unwrap_or(Path::new("/")).join("snapshots")
            }
        };
        open_snapshots(&dir, self.snapshotter)
    }
}

/// A snapshot driver on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DriverArg {
    /// overlayfs.
    Overlay,
    /// Full copies.
    Copy,
}

/// Opens the snapshots at `dir` with `driver`, or without one with the
/// driver `dir` holds, else overlay where it works; where overlay is
/// unavailable the copy driver is chosen, and the reason is said on stderr.
pub(crate) fn open_snapshots(
    dir: &Path,
    driver_arg: Option<DriverArg>,
) -> anyhow::Result<Snapshots> {
    let s = match driver_arg {
        Some(d) => Snapshots::open(dir, driver(d)),
        None => match Snapshots::open_default(dir) {
            Err(e @ SnapshotError::OverlayUnavailable { .. }) => {
                eprintln!(
                    "imagectl: {}; using the copy driver (--snapshotter copy chooses it)",
                    super::describe(&anyhow::Error::new(e))
                );
                Snapshots::open(dir, Driver::Copy)
            }
            other => other,
        },
    };
    s.with_context(|| format!("opening snapshots {}", dir.display()))
}

fn driver(d: DriverArg) -> Driver {
    match d {
        DriverArg::Overlay => Driver::Overlay,
        DriverArg::Copy => Driver::Copy,
    }
}

/// The snapshot key of a mount point (which must exist).
fn mount_key(dir: &Path) -> anyhow::Result<(PathBuf, String)> {
    let canon = std::fs::canonicalize(dir)
        .with_context(|| format!("resolving mount point {}", dir.display()))?;
    let key = format!("{KEY_PREFIX}{}", canon.display());
    Ok((canon, key))
}

/// Arguments of `imagectl mount`.
#[derive(Debug, clap::Args)]
pub struct MountArgs {
    /// The image.
    pub reference: String,
    /// The mount point (created when missing).
    pub dir: PathBuf,
    /// Mount a writable layer on the image instead of a read-only view.
    #[arg(long)]
    pub rw: bool,
    /// The platform to choose from an index (default: the host's).
    #[arg(long)]
    pub platform: Option<String>,
    #[command(flatten)]
    pub place: SnapshotsArgs,
}

/// Unpacks an image into snapshots and mounts its root on a directory.
pub fn mount(store: &StoreArgs, args: MountArgs) -> anyhow::Result<()> {
    let s = store.open()?;
    let platform = args
        .platform
        .as_deref()
        .map(str::parse::<Platform>)
        .transpose()?;
    let image = resolve_image(&s, &args.reference, platform.as_ref())?;
    let snaps = args.place.open(store)?;
    let sn = snaps.snapshotter();
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let (canon, key) = mount_key(&args.dir)?;
    if sn.try_stat(&key)?.is_some() {
        bail!(
            "{} is mounted already (snapshot {key}); `imagectl umount` it first",
            canon.display()
        );
    }
    let report = unpack_image(&s, &image, sn, &ImageUnpackOptions::default())
        .with_context(|| format!("unpacking {}", args.reference))?;
    let top = report.top();
    let mut labels = Labels::new();
    labels.insert(LABEL_MOUNT.to_owned(), canon.display().to_string());
    let mounts = if args.rw {
        sn.prepare_with(&key, top.as_deref(), labels)?
    } else {
        sn.view_with(&key, top.as_deref(), labels)?
    };
    // A failed mount leaves nothing mounted (the mounter undoes a partial
    // one); then the snapshot goes too.
    if let Err(e) = SysMounter.mount(&mounts, &canon) {
        let _ = sn.remove(&key);
        return Err(anyhow::Error::new(e).context(format!("mounting {}", canon.display())));
    }
    println!(
        "mounted {} ({} layers, {}) on {} [{} snapshot, key {key}]",
        args.reference,
        report.chain_ids.len(),
        if args.rw { "read-write" } else { "read-only" },
        canon.display(),
        snaps.driver().as_str(),
    );
    Ok(())
}

/// Arguments of `imagectl umount`.
#[derive(Debug, clap::Args)]
pub struct UmountArgs {
    /// The mount point given to `imagectl mount`.
    pub dir: PathBuf,
    #[command(flatten)]
    pub place: SnapshotsArgs,
}

/// Unmounts a directory mounted by `imagectl mount` and removes its snapshot.
pub fn umount(store: &StoreArgs, args: UmountArgs) -> anyhow::Result<()> {
    let snaps = args.place.open(store)?;
    let sn = snaps.snapshotter();
    let (canon, key) = mount_key(&args.dir)?;
    if sn.try_stat(&key)?.is_none() {
        bail!("{} was not mounted by imagectl mount", canon.display());
    }
    if is_mount_point(&canon)? {
        SysMounter
            .unmount(&canon, false)
            .with_context(|| format!("unmounting {} (busy?)", canon.display()))?;
    }
    sn.remove(&key)?;
    println!("unmounted {}", canon.display());
    Ok(())
}

/// Whether `dir` is a mount point, from `/proc/self/mountinfo`.
fn is_mount_point(dir: &Path) -> anyhow::Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    // Field 5 is the mount point, with spaces and friends octal-escaped.
    let want = dir
        .to_string_lossy()
        .replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012");
    Ok(info
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str())))
}

/// Arguments of `imagectl snapshots`.
#[derive(Debug, clap::Args)]
pub struct SnapshotsListArgs {
    /// Print JSON (one array of objects) instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub place: SnapshotsArgs,
}

/// Lists snapshots: kind, name or key, parent, disk usage.
pub fn snapshots(store: &StoreArgs, args: SnapshotsListArgs) -> anyhow::Result<()> {
    let snaps = args.place.open(store)?;
    let sn = snaps.snapshotter();
    let mut rows = Vec::new();
    for info in sn.list()? {
        // A snapshot removed meanwhile has no usage: report none.
        let usage = sn.usage(&info.name).ok();
        rows.push((info, usage));
    }
    if args.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(i, u)| {
                serde_json::json!({
                    "kind": i.kind.as_str(),
                    "name": i.name,
                    "parent": i.parent,
                    "size": u.map(|u| u.size),
                    "inodes": u.map(|u| u.inodes),
                    "labels": i.labels,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{:<10} {:>10} {:<73} PARENT", "KIND", "SIZE", "NAME");
    for (i, u) in &rows {
        let size = u.map_or_else(|| "-".to_owned(), |u| human(u.size));
        let kind = match i.kind {
            Kind::Active => "active",
            Kind::View => "view",
            Kind::Committed => "committed",
        };
        println!(
            "{kind:<10} {size:>10} {:<73} {}",
            i.name,
            i.parent.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `imagectl unpack REF DIR --driver D`: unpacks an image into snapshots
/// rooted at `dir` and prints the chain IDs, bottom first.
pub fn unpack_into_snapshots(
    store: &StoreArgs,
    reference: &str,
    platform: Option<&Platform>,
    dir: &Path,
    driver_arg: DriverArg,
    ui: &super::progress::UiArgs,
) -> anyhow::Result<()> {
    let s = store.open()?;
    let image = resolve_image(&s, reference, platform)?;
    let snaps = Snapshots::open(dir, driver(driver_arg))
        .with_context(|| format!("opening snapshots {}", dir.display()))?;
    let report = unpack_image(
        &s,
        &image,
        snaps.snapshotter(),
        &ImageUnpackOptions::default().with_tracker(ui.tracker()),
    )
    .with_context(|| format!("unpacking {reference}"))?;
    let reused: std::collections::HashSet<&Digest> = report.reused.iter().collect();
    for c in &report.chain_ids {
        let how = if reused.contains(c) {
            "reused"
        } else {
            "unpacked"
        };
        println!("{c} {how}");
    }
    Ok(())
}
