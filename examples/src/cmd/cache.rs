//! `imagectl build --cache-to/--cache-from`: the build cache exported to
//! and imported from an OCI layout directory (`type=local`), an OCI
//! archive (`type=oci-archive`: the tar of such a layout, a form of our
//! own) or a registry repository (`type=registry`), in BuildKit's forms.
//!
//! image-build writes and reads the cache as an OCI index in any store
//! ([`image_build::cache::export`]); the registry form composes it with
//! image-registry here (image-build does not depend on image-registry):
//! an export is written into a temporary layout and pushed from it, an
//! import is pulled into a temporary layout and read from it. An archive
//! is packed from a temporary layout by image-overlay's pack, and
//! unpacked into one by its unpack (in-root, bounded: the archive is
//! input).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use image_build::build::BuildResult;
use image_build::cache::export::{export, import, CacheMode, ImportReport, DEFAULT_NAME};
use image_core::Reference;
use image_registry::{PullOptions, PushOptions};
use image_runtime::Runtime;
use image_store::OciDir;

use super::registry::ReachArgs;

/// Where a cache goes to or comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// An OCI layout directory (`type=local,dest=DIR` / `src=DIR`).
    Local(PathBuf),
    /// An OCI archive (`type=oci-archive,dest=FILE` / `src=FILE`).
    Archive(PathBuf),
    /// A registry repository (`type=registry,ref=REF`).
    Registry(String),
}

/// A `--cache-to` or `--cache-from` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSpec {
    /// Where.
    pub place: Place,
    /// Which records (`mode=`; `--cache-to` only).
    pub mode: CacheMode,
    /// Whether the cache mount directories go with the records
    /// (`mounts=true|false`, true by default).
    pub mounts: bool,
}

/// Parses `type=local,dest=DIR[,mode=min|max]` (`src=DIR` for an import:
/// `to` says which) or `type=registry,ref=REF[,mode=...]`.
pub fn parse(spec: &str, to: bool) -> anyhow::Result<CacheSpec> {
    let flag = if to { "--cache-to" } else { "--cache-from" };
    let dir_key = if to { "dest" } else { "src" };
    let mut kind = None;
    let mut dir = None;
    let mut reference = None;
    let mut mode = CacheMode::Min;
    let mut mounts = true;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("type", t)) => kind = Some(t),
            Some((k, d)) if k == dir_key => dir = Some(PathBuf::from(d)),
            Some(("ref", r)) => reference = Some(r.to_owned()),
            Some(("mounts", "true")) => mounts = true,
            Some(("mounts", "false")) => mounts = false,
            Some(("mode", m)) if to => {
                mode = m
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!("{flag} {spec:?}: {e}"))?;
            }
            _ => bail!(
                "{flag} {spec:?}: expected type=local,{dir_key}=DIR or type=registry,ref=REF{}",
                if to {
                    " (and mode=min|max, mounts=true|false)"
                } else {
                    " (and mounts=true|false)"
                }
            ),
        }
    }
    let place = match (kind, dir, reference) {
        (Some("local"), Some(d), None) => Place::Local(d),
        (Some("oci-archive"), Some(f), None) => Place::Archive(f),
        (Some("registry"), None, Some(r)) => Place::Registry(r),
        (Some("local"), _, _) => bail!("{flag} {spec:?}: type=local takes {dir_key}=DIR"),
        (Some("oci-archive"), _, _) => {
            bail!("{flag} {spec:?}: type=oci-archive takes {dir_key}=FILE")
        }
        (Some("registry"), _, _) => bail!("{flag} {spec:?}: type=registry takes ref=REF"),
        _ => bail!("{flag} {spec:?}: expected type=local, type=oci-archive or type=registry"),
    };
    Ok(CacheSpec {
        place,
        mode,
        mounts,
    })
}

/// A temporary layout for the registry forms, removed when dropped.
struct TempLayout {
    dir: PathBuf,
    layout: OciDir,
}

impl TempLayout {
    fn new() -> anyhow::Result<TempLayout> {
        let dir = tempfile::Builder::new()
            .prefix("imagectl-cache-")
            .tempdir()
            .context("making a temporary directory for the cache")?
            .keep();
        let layout = OciDir::open_or_create(dir.join("layout"))
            .with_context(|| format!("making a layout in {}", dir.display()))?;
        Ok(TempLayout { dir, layout })
    }
}

impl Drop for TempLayout {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Imports each cache into the store's cache, in order. A cache that
/// cannot be imported is a warning, not a failure (as BuildKit: the first
/// build of a CI runner has none).
pub fn import_all(store: &OciDir, specs: &[CacheSpec], reach: &ReachArgs, mount_root: &Path) {
    for spec in specs {
        let mounts = spec.mounts.then_some(mount_root);
        match import_one(store, spec, reach, mounts) {
            Ok(r) => eprintln!(
                "imported {} build cache records and {} cache mounts ({} kept) from {}",
                r.records,
                r.mounts.imported,
                r.mounts.kept,
                spec.name()
            ),
            Err(e) => eprintln!(
                "WARNING: importing the build cache from {}: {}",
                spec.name(),
                super::describe(&e)
            ),
        }
    }
}

/// Imports each cache (as [`import_all`]) while `open` opens the build's
/// runtime on another thread, and returns the runtime. The two share
/// nothing (the store's blobs and tags; the runtime's state and
/// snapshots) and both mostly wait: the import on its one durability
/// pass, the runtime, on a fresh machine, on the overlay probe's unmount
/// (an RCU grace period of the kernel). The cache mounts go under the
/// runtime's state directory, whose path is known before it is opened.
pub fn import_beside(
    store: &OciDir,
    specs: &[CacheSpec],
    reach: &ReachArgs,
    open: impl FnOnce() -> anyhow::Result<Runtime> + Send,
    state: &Path,
) -> anyhow::Result<Runtime> {
    if specs.is_empty() {
        return open();
    }
    let mount_root = image_build::mounts::cache_dir_root(
        &std::path::absolute(state).with_context(|| format!("resolving {}", state.display()))?,
    );
    std::thread::scope(|scope| {
        let opening = scope.spawn(open);
        import_all(store, specs, reach, &mount_root);
        opening
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

impl CacheSpec {
    fn name(&self) -> String {
        match &self.place {
            Place::Local(d) | Place::Archive(d) => d.display().to_string(),
            Place::Registry(r) => r.clone(),
        }
    }
}

fn import_one(
    store: &OciDir,
    spec: &CacheSpec,
    reach: &ReachArgs,
    mounts: Option<&Path>,
) -> anyhow::Result<ImportReport> {
    // The import's blobs are synced in one pass before its records are
    // tagged, not two syncs each (see image_store::durability).
    let store = &store.deferring_sync();
    let report = match &spec.place {
        Place::Local(dir) => {
            let layout = OciDir::open(dir)
                .with_context(|| format!("opening the layout {}", dir.display()))?;
            import(&layout, DEFAULT_NAME, store, mounts)?
        }
        Place::Archive(file) => {
            let tmp = TempLayout::new()?;
            let f =
                std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
            image_overlay::unpack::unpack(
                f,
                &tmp.dir.join("layout"),
                &image_overlay::unpack::UnpackOptions::default(),
            )
            .with_context(|| format!("unpacking {}", file.display()))?;
            import(&tmp.layout, DEFAULT_NAME, store, mounts)?
        }
        Place::Registry(r) => {
            let reference = Reference::parse_name(r)?;
            let client = reach.client(reference.domain())?;
            let tmp = TempLayout::new()?;
            let options = PullOptions::default().with_all_platforms(true);
            let pulled = reach.hint(
                reference.domain(),
                client.pull(&reference, &tmp.layout, &options),
            )?;
            let tag = pulled.tag.unwrap_or_else(|| reference.to_string());
            import(&tmp.layout, &tag, store, mounts)?
        }
    };
    Ok(report)
}

/// Exports the records of `result` that `spec`'s mode selects (every
/// platform's, of a multi-platform build).
pub fn export_to(
    store: &OciDir,
    result: &BuildResult,
    spec: &CacheSpec,
    reach: &ReachArgs,
    mount_root: &Path,
) -> anyhow::Result<()> {
    let records = result.exported_records(spec.mode);
    let mounts = spec.mounts.then_some(mount_root);
    match &spec.place {
        Place::Local(dir) => {
            let layout = OciDir::open_or_create(dir)
                .with_context(|| format!("opening the layout {}", dir.display()))?;
            let report = export(store, &records, mounts, &layout, DEFAULT_NAME)?;
            eprintln!(
                "exported {} build cache records and {} cache mounts to {}",
                report.records,
                report.mounts,
                dir.display()
            );
        }
        Place::Archive(file) => {
            let tmp = TempLayout::new()?;
            let report = export(store, &records, mounts, &tmp.layout, DEFAULT_NAME)?;
            let options = image_overlay::PackOptions::new(image_core::Compression::None);
            super::archive::write_file(file, |out| {
                image_overlay::pack::pack_dir(&tmp.dir.join("layout"), out, &options)?;
                Ok(())
            })?;
            eprintln!(
                "exported {} build cache records and {} cache mounts to {}",
                report.records,
                report.mounts,
                file.display()
            );
        }
        Place::Registry(r) => {
            let dest = Reference::parse_name(r)?;
            let client = reach.client(dest.domain())?;
            let tmp = TempLayout::new()?;
            let report = export(store, &records, mounts, &tmp.layout, DEFAULT_NAME)?;
            reach.hint(
                dest.domain(),
                client.push(
                    &tmp.layout,
                    &report.descriptor,
                    &dest,
                    &PushOptions::default(),
                ),
            )?;
            eprintln!(
                "exported {} build cache records and {} cache mounts to {dest}",
                report.records, report.mounts
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_specs() {
        assert_eq!(
            parse("type=local,dest=/tmp/c,mode=max", true).unwrap(),
            CacheSpec {
                place: Place::Local("/tmp/c".into()),
                mode: CacheMode::Max,
                mounts: true,
            }
        );
        assert_eq!(
            parse("type=registry,ref=127.0.0.1:5000/app:cache", false)
                .unwrap()
                .place,
            Place::Registry("127.0.0.1:5000/app:cache".into())
        );
        assert_eq!(
            parse("src=/c,type=local", false).unwrap().mode,
            CacheMode::Min
        );
        assert_eq!(
            parse("type=oci-archive,src=/c.tar", false).unwrap().place,
            Place::Archive("/c.tar".into())
        );
        for (bad, to) in [
            ("type=local,src=/c", true),
            ("type=local,dest=/c", false),
            ("type=local,src=/c,mode=max", false),
            ("type=local,dest=/c,mode=all", true),
            ("type=local,dest=/c,mounts=yes", true),
            ("type=gha", true),
            ("type=oci-archive,src=/c.tar", true),
            ("type=registry", true),
            ("type=local,dest=/c,ref=x", true),
        ] {
            assert!(parse(bad, to).is_err(), "{bad}");
        }
    }
}
