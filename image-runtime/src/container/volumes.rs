//! Volumes of a container being made and deleted: named volumes and the
//! image's `VOLUME` paths resolved to directories of the runtime's
//! [`VolumeStore`] (filled from the image when new), and `rm -v`. The
//! store itself, its names and the copy from the image are in
//! [`crate::volume`].

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::ContainerError;
use crate::rootfs::RootDir;
use crate::runtime::Runtime;
use crate::spec::{clean_absolute, RunOptions, Volume};
use crate::volume::{
    copy_up, is_volume_name, read_uses, validate_name, write_uses, Use, VolumeError, VolumeStore,
    MAX_CONTAINER_VOLUMES,
};

/// Replaces the options' named volumes with their data directories and
/// adds an anonymous volume for each of the image's `VOLUME` paths that
/// no `-v` covers; each volume new or empty is filled from the image at
/// its path in `root`. Records the volumes in `<dir>/volumes.json` before
/// making any, so that a failure leaves nothing `delete_with_volumes`
/// cannot find, and holds the volume store's lock from the record to the
/// last volume made, so a removal never takes a volume being taken.
pub(crate) fn resolve(
    runtime: &Runtime,
    dir: &Path,
    root: &RootDir,
    image_volumes: &[String],
    options: &RunOptions,
) -> Result<RunOptions, ContainerError> {
    let store = VolumeStore::new(runtime.root());
    let mut out = options.clone();
    let mut uses = Vec::new();
    for v in &out.volumes {
        if is_volume_name(&v.source) {
            let name = v.source.to_str().unwrap_or_default();
            validate_name(name).map_err(|_| VolumeError::InvalidName {
                name: v.source.to_string_lossy().into_owned(),
            })?;
            uses.push(Use {
                name: name.to_owned(),
                destination: v.destination.clone(),
                anonymous: false,
            });
        }
    }
    // Each destination once, the caller's first: linear in the image's
    // paths, and their number bounded before anything is named or made.
    let mut taken: HashSet<&Path> = out
        .volumes
        .iter()
        .map(|v| v.destination.as_path())
        .collect();
    let cleaned: Vec<PathBuf> = image_volumes.iter().map(|p| clean_absolute(p)).collect();
    let new: Vec<&PathBuf> = cleaned
        .iter()
        .filter(|d| d.as_path() != Path::new("/") && taken.insert(d.as_path()))
        .collect();
    let count = out.volumes.len() + new.len();
    if count > MAX_CONTAINER_VOLUMES {
        return Err(VolumeError::TooMany {
            what: "volumes",
            found: count,
            limit: MAX_CONTAINER_VOLUMES,
        }
        .into());
    }
    let mut anonymous = Vec::with_capacity(new.len());
    for destination in new {
        let name = crate::model::random_id().map_err(ContainerError::state("/dev/urandom"))?;
        uses.push(Use {
            name: name.clone(),
            destination: destination.clone(),
            anonymous: true,
        });
        anonymous.push(Volume {
            source: PathBuf::from(name),
            destination: destination.clone(),
            read_only: false,
        });
    }
    if uses.is_empty() {
        return Ok(out);
    }
    // Held until every volume is made and filled: a removal checks its
    // users and removes under the same lock, so it sees this record or
    // finishes before the volume is made anew.
    let _lock = store.lock()?;
    write_uses(dir, &uses)?;
    out.volumes.extend(anonymous);
    let by_name: HashMap<&str, &Use> = uses.iter().map(|u| (u.name.as_str(), u)).collect();
    for v in out.volumes.iter_mut() {
        let Some(u) = v
            .source
            .to_str()
            .filter(|_| is_volume_name(&v.source))
            .and_then(|name| by_name.get(name))
        else {
            continue;
        };
        let data = store.create_as(&u.name, u.anonymous)?;
        if dir_is_empty(&data).map_err(VolumeStore::io(&data))? {
            copy_up(root, &v.destination, &data, &u.name)?;
        }
        v.source = data;
    }
    Ok(out)
}

fn dir_is_empty(dir: &Path) -> io::Result<bool> {
    Ok(std::fs::read_dir(dir)?.next().is_none())
}

/// Deletes container `id` (see [`crate::container::delete`]), then the
/// anonymous volumes its `volumes.json` names, except one that another
/// container uses (mounted by its generated name), as `docker rm -v`
/// leaves it.
pub(crate) fn delete_with_volumes(runtime: &Runtime, id: &str) -> Result<(), ContainerError> {
    // Read before the directory goes.
    let uses = read_uses(&runtime.state().dir(id)).unwrap_or_default();
    crate::container::delete::delete(runtime, id)?;
    let store = runtime.volumes();
    for u in uses.iter().filter(|u| u.anonymous) {
        match store.remove(&u.name, false) {
            Ok(()) | Err(VolumeError::NotFound { .. } | VolumeError::InUse { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl crate::Container {
    /// Deletes the container and its anonymous volumes (`docker rm -v`,
    /// and what `docker run --rm` does); named volumes stay, and so does
    /// an anonymous one another container uses.
    ///
    /// # Errors
    /// As [`crate::Container::delete`]; then [`ContainerError::Volume`].
    pub fn delete_with_volumes(self) -> Result<(), ContainerError> {
        delete_with_volumes(&self.runtime, &self.record.id)
    }
}

impl Runtime {
    /// The volumes of this runtime's state directory.
    pub fn volumes(&self) -> VolumeStore {
        VolumeStore::new(self.root())
    }

    /// Deletes a container as [`Runtime::delete`] does, then its anonymous
    /// volumes (`rm -v`); named volumes stay, and so does an anonymous one
    /// another container uses.
    ///
    /// # Errors
    /// As [`Runtime::delete`]; then [`ContainerError::Volume`].
    pub fn delete_with_volumes(&self, id: &str) -> Result<(), ContainerError> {
        crate::state::validate_id(id)?;
        delete_with_volumes(self, id)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::volume::tests::{store_with_volume, wait_for_a_waiter};
    use crate::volume::CONTAINER_VOLUMES_FILE;

    /// A runtime over the state directory `state` (its backend never
    /// run) and an empty root filesystem in it.
    pub(crate) fn runtime_and_rootfs(state: &Path) -> (Runtime, PathBuf) {
        let backend = crate::oci_runtime::OciRuntime::with_binary(
            crate::oci_runtime::RuntimeKind::Runc,
            Path::new("/bin/sh"),
            &state.join("runc"),
        )
        .unwrap();
        let runtime = Runtime::from_parts(
            state.to_owned(),
            crate::state::StateDir::open(state).unwrap(),
            Arc::new(backend),
            None,
        );
        let rootfs = state.join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        (runtime, rootfs)
    }

    /// A container being made records and makes its volumes under the
    /// store's lock: while a removal holds it, nothing is recorded; once
    /// it is released, the record and the volume are made.
    #[test]
    fn a_new_container_waits_for_the_lock_to_take_its_volumes() {
        let (tmp, store, dir) = store_with_volume("c1");
        let (runtime, rootfs) = runtime_and_rootfs(tmp.path());
        let mut options = RunOptions::default();
        options.volumes.push(Volume {
            source: "fresh".into(),
            destination: "/data".into(),
            read_only: false,
        });
        let lock = store.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let making = dir.clone();
        let t = std::thread::spawn(move || {
            let root = RootDir::open(&rootfs).unwrap();
            let made = resolve(&runtime, &making, &root, &[], &options).map(|o| o.volumes);
            tx.send(made).unwrap();
        });
        wait_for_a_waiter(&store, &rx, "container");
        assert!(!dir.join(CONTAINER_VOLUMES_FILE).exists());
        assert!(matches!(
            store.inspect("fresh"),
            Err(VolumeError::NotFound { .. })
        ));
        drop(lock);
        t.join().unwrap();
        let volumes = rx.recv().unwrap().unwrap();
        assert_eq!(volumes[0].source, store.mountpoint("fresh").unwrap());
        assert_eq!(store.inspect("fresh").unwrap().containers, ["c1"]);
    }

    /// Every volume a container is made with is found again in its
    /// record (what `rm -v` removes and a volume's removal checks), or
    /// none is made: an image with 10,000 `VOLUME`s (within the config's
    /// limits) is refused before any volume is recorded or made.
    #[test]
    fn a_container_is_made_only_with_volumes_its_record_gives_back() {
        let (tmp, store, dir) = store_with_volume("c1");
        let (runtime, rootfs) = runtime_and_rootfs(tmp.path());
        let root = RootDir::open(&rootfs).unwrap();
        let image_volumes: Vec<String> = (0..10_000).map(|i| format!("/v{i}")).collect();
        let made = resolve(
            &runtime,
            &dir,
            &root,
            &image_volumes,
            &RunOptions::default(),
        );
        let names = |store: &VolumeStore| -> Vec<String> {
            store.list().unwrap().into_iter().map(|v| v.name).collect()
        };
        match made {
            Ok(o) => {
                let recorded = read_uses(&dir).map(|u| u.len());
                assert_eq!(
                    recorded.ok(),
                    Some(o.volumes.len()),
                    "the record reads back"
                );
            }
            Err(e) => {
                assert!(
                    matches!(e, ContainerError::Volume(VolumeError::TooMany { .. })),
                    "{e:?}"
                );
                assert_eq!(
                    image_core::Classify::kind(&e),
                    image_core::ErrorKind::InvalidInput
                );
                assert!(!dir.join(CONTAINER_VOLUMES_FILE).exists());
                assert_eq!(names(&store), ["data"], "no volume is made");
            }
        }
    }
}
