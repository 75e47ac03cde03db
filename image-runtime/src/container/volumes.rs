//! Volumes of a container being made and deleted: named volumes and the
//! image's `VOLUME` paths resolved to directories of the runtime's
//! [`VolumeStore`] (filled from the image when new), and `rm -v`. The
//! store itself, its names and the copy from the image are in
//! [`crate::volume`].

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::ContainerError;
use crate::rootfs::RootDir;
use crate::runtime::Runtime;
use crate::spec::{clean_absolute, RunOptions, Volume};
use crate::volume::{
    copy_up, is_volume_name, read_uses, validate_name, write_uses, Use, VolumeError, VolumeStore,
    CONTAINER_VOLUMES_FILE,
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
    let mut anonymous = Vec::new();
    for path in image_volumes {
        let destination = clean_absolute(path);
        let covered = out.volumes.iter().any(|v| v.destination == destination)
            || anonymous
                .iter()
                .any(|v: &Volume| v.destination == destination);
        if covered || destination == Path::new("/") {
            continue;
        }
        let name = crate::model::random_id().map_err(ContainerError::state("/dev/urandom"))?;
        uses.push(Use {
            name: name.clone(),
            destination: destination.clone(),
            anonymous: true,
        });
        anonymous.push(Volume {
            source: PathBuf::from(name),
            destination,
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
    let record = dir.join(CONTAINER_VOLUMES_FILE);
    write_uses(dir, &uses).map_err(ContainerError::state(&record))?;
    out.volumes.extend(anonymous);
    for v in out.volumes.iter_mut() {
        let Some(u) = uses
            .iter()
            .find(|u| v.source.as_os_str() == OsStr::new(&u.name) && is_volume_name(&v.source))
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
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::volume::tests::{store_with_volume, wait_for_a_waiter};

    /// A container being made records and makes its volumes under the
    /// store's lock: while a removal holds it, nothing is recorded; once
    /// it is released, the record and the volume are made.
    #[test]
    fn a_new_container_waits_for_the_lock_to_take_its_volumes() {
        let (tmp, store, dir) = store_with_volume("c1");
        let backend = crate::oci_runtime::OciRuntime::with_binary(
            crate::oci_runtime::RuntimeKind::Runc,
            Path::new("/bin/sh"),
            &tmp.path().join("runc"),
        )
        .unwrap();
        let runtime = Runtime::from_parts(
            tmp.path().to_owned(),
            crate::state::StateDir::open(tmp.path()).unwrap(),
            Arc::new(backend),
            None,
        );
        let rootfs = tmp.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
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
}
