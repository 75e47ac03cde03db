//! OCI bundles: a `config.json` generated from the image config and the
//! options, next to (or pointing at) a root filesystem, that runc and crun
//! run unchanged.
//!
//! Writing a bundle does the I/O spec generation needs, inside the root:
//! resolves the user from the image's own passwd and group files, creates
//! the working directory (0755, root-owned, as Docker does), checks that
//! the program exists and is executable, and writes Docker's `/etc` files.
//!
//! # Security
//! The bundle directory may be one an operator named, holding whatever was
//! there before: `config.json` and the `/etc` files are written under
//! temporary names and renamed over theirs (a symlink there is replaced,
//! never written through), `etc` and the `rootfs` of [`export`] are opened
//! with `O_NOFOLLOW`, and [`export_image`] flattens only into a `rootfs` it
//! has just created. Inside the root filesystem every access resolves
//! inside it (the crate's `RootDir`, which resolves every path in the
//! root with `openat2(RESOLVE_IN_ROOT)`).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use image_core::config::RunConfig;
use image_core::oci_spec::runtime::Spec;
use rustix::fs::{Mode, OFlags};

use crate::error::ContainerError;
use crate::rootfs::RootDir;
use crate::spec::{self, defaults::DEFAULT_PATH, process, RunOptions, SpecContext};
use crate::{cgroup, etc_files, lookup, user};

/// Where the bundle's pieces are.
#[derive(Debug, Clone)]
pub struct BundleLayout<'a> {
    /// The bundle directory (`config.json` goes here).
    pub dir: &'a Path,
    /// The root filesystem on the host, ready (mounted) to be read.
    pub rootfs: &'a Path,
    /// `root.path` as written in the spec: absolute, or relative to `dir`.
    pub root_path: PathBuf,
    /// The container ID (hostname default, cgroup name).
    pub id: &'a str,
}

/// Writes `config.json` (and the `/etc` files, in `<dir>/etc`) for a
/// container of `config` with `opts`, after checking the root filesystem.
///
/// # Errors
/// [`ContainerError::Spec`] (no command, bad working directory),
/// [`ContainerError::User`], [`ContainerError::Lookup`] (program missing or
/// not executable), [`ContainerError::Rootfs`], [`ContainerError::Bundle`] (`etc` a symlink).
pub fn write(
    layout: &BundleLayout<'_>,
    config: &RunConfig,
    opts: &RunOptions,
) -> Result<Spec, ContainerError> {
    let root = RootDir::open(layout.rootfs)?;
    write_with_root(layout, &root, config, opts)
}

/// The directory `dir`, opened as named (the operator's choice).
fn open_bundle_dir(dir: &Path) -> Result<OwnedFd, ContainerError> {
    rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ContainerError::State {
        path: dir.to_owned(),
        source: e.into(),
    })
}

fn write_with_root(
    layout: &BundleLayout<'_>,
    root: &RootDir,
    config: &RunConfig,
    opts: &RunOptions,
) -> Result<Spec, ContainerError> {
    opts.resources
        .validate_for_host(spec::resources::host_cpus())?;
    let user_spec = opts
        .user
        .as_deref()
        .or(config.user.as_deref())
        .unwrap_or("");
    let user = user::resolve(root, user_spec)?;
    let args = spec::args(config, opts)?;
    let cwd = spec::working_dir(config, opts)?;
    root.create_dir_all(&cwd, 0, 0)?;
    let hostname = spec::hostname(layout.id, opts);
    let env = spec::env(config, opts, &hostname, &user.home);
    let path = process::lookup(&env, "PATH").unwrap_or(DEFAULT_PATH);
    lookup::find_executable(root, &args[0], path, &cwd)?;
    let etc_dir = layout.dir.join("etc");
    let etc = etc_files::write(&etc_dir, &hostname, opts.network == spec::NetworkMode::Host)
        .map_err(|source| ContainerError::Bundle {
            path: etc_dir.clone(),
            source,
        })?;
    let ctx = SpecContext {
        id: layout.id.to_owned(),
        root_path: layout.root_path.clone(),
        user,
        etc_files: Some(etc),
        host_hard_limits: spec::host_hard_limits(),
        // Where the cgroups are not ours to write (a rootless command), no
        // path: runc and crun then run the container in their own cgroup,
        // as they do rootless (runc ignores a cgroup it may not make only
        // when no path was asked for).
        cgroups_path: cgroup::delegated().then(|| cgroup::cgroups_path(layout.id)),
        swap_limit: opts.resources.memory.is_some() && cgroup::swap_limit_supported(),
    };
    let spec = spec::generate(config, opts, &ctx)?;
    let config_path = layout.dir.join("config.json");
    let json = serde_json::to_vec_pretty(&spec).map_err(|source| ContainerError::Json {
        what: format!("serialising the runtime spec {}", config_path.display()),
        source,
    })?;
    let dir = open_bundle_dir(layout.dir)?;
    etc_files::replace_file_at(&dir, "config.json", &json).map_err(|source| {
        ContainerError::Bundle {
            path: config_path.clone(),
            source,
        }
    })?;
    Ok(spec)
}

/// Exports a standalone bundle: `<dir>/rootfs` must hold the root
/// filesystem (unpacked layers); writes `<dir>/config.json` with
/// `root.path` = `rootfs`, so `runc run -b <dir>` and `crun run -b <dir>`
/// run it as they are.
///
/// # Errors
/// As [`write()`].
pub fn export(dir: &Path, config: &RunConfig, opts: &RunOptions) -> Result<Spec, ContainerError> {
    let id = ContainerError::random_id()?;
    let dir = std::path::absolute(dir).map_err(ContainerError::state(dir))?;
    let rootfs = dir.join("rootfs");
    let root = RootDir::open_nofollow_at(open_bundle_dir(&dir)?, "rootfs", rootfs.clone())?;
    write_with_root(
        &BundleLayout {
            dir: &dir,
            rootfs: &rootfs,
            root_path: PathBuf::from("rootfs"),
            id: &id,
        },
        &root,
        config,
        opts,
    )
}

/// Exports the image `name` of `store` (for the host's platform) as a
/// standalone bundle in `dir`: its layers flattened into `<dir>/rootfs`
/// (which must not exist yet), `config.json` generated from its config and
/// `opts` (see [`export`]).
///
/// # Errors
/// [`ContainerError::NoSuchImage`], [`ContainerError::Image`],
/// [`ContainerError::State`] (`rootfs` exists, or flattening failed), and
/// as [`write()`] (a symlink as `etc`); on any failure the `rootfs` this
/// call made is removed.
pub fn export_image<P: image_store::Provider + image_store::TagStore + ?Sized>(
    store: &P,
    name: &str,
    dir: &Path,
    opts: &RunOptions,
) -> Result<Spec, ContainerError> {
    let image = crate::image::find_image(store, name, None)?;
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(dir).map_err(ContainerError::state(dir))?;
    std::fs::create_dir(&rootfs).map_err(ContainerError::state(&rootfs))?;
    let flattened = image_overlay::flatten_image(
        store,
        &image,
        &rootfs,
        &image_overlay::UnpackOptions::default(),
    );
    if let Err(e) = flattened {
        let _ = std::fs::remove_dir_all(&rootfs);
        return Err(ContainerError::Flatten {
            path: rootfs,
            source: Box::new(e),
        });
    }
    let config = image.config.file().config.clone().unwrap_or_default();
    let exported = export(dir, &config, opts);
    if exported.is_err() {
        // No half-made bundle: the rootfs this call made goes too.
        let _ = std::fs::remove_dir_all(&rootfs);
    }
    exported
}
