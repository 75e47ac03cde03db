//! Scratch directories that cannot grow past a size: a test that would
//! write without end (a hostile source read on and on) stops at ENOSPC
//! instead of filling the machine's disk.

use std::path::Path;

/// A temporary directory with a size-limited tmpfs (`nosuid,nodev`)
/// mounted on it, unmounted and removed on drop. Where mounting is not
/// permitted it says so and is a plain temporary directory, except under
/// `CI=true`, where it fails.
pub struct Scratch {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl Scratch {
    /// A scratch directory of at most `size_mib` MiB.
    ///
    /// # Panics
    /// When the directory cannot be made, or the tmpfs not mounted under CI.
    pub fn new(size_mib: u64) -> Scratch {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = std::ffi::CString::new(format!("size={size_mib}m,mode=0700")).expect("no NUL");
        let mounted = match rustix::mount::mount(
            "tmpfs",
            dir.path(),
            "tmpfs",
            rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
            data.as_c_str(),
        ) {
            Ok(()) => true,
            Err(e) => {
                assert!(
                    !crate::tools::ci(),
                    "cannot mount a size-limited tmpfs for scratch data: {e}"
                );
                eprintln!("SKIP size limit: cannot mount a tmpfs ({e}); scratch data is unbounded");
                false
            }
        };
        Scratch { dir, mounted }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.mounted {
            let _ = rustix::mount::unmount(self.dir.path(), rustix::mount::UnmountFlags::DETACH);
        }
    }
}

/// [`Scratch::new`].
pub fn scratch(size_mib: u64) -> Scratch {
    Scratch::new(size_mib)
}
