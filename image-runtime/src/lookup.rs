//! Finding the program to run inside the root, before starting anything:
//! `PATH` searched the way the runtime's `execve` will, every lookup done
//! inside the root (see [`RootDir`]).

use std::path::{Path, PathBuf};

use image_core::{Classify, ErrorKind};

use crate::rootfs::{RootDir, RootfsError};

/// Errors of finding the program in the root.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// No file of that name in the root (or in any `PATH` directory).
    #[error("{program}: executable file not found in the root filesystem (searched {searched})")]
    NotFound {
        /// The program as given.
        program: String,
        /// The directories searched, or the path tried.
        searched: String,
    },
    /// The file exists but is not an executable regular file.
    #[error("{path}: not an executable file in the root filesystem")]
    NotExecutable {
        /// The path inside the root.
        path: PathBuf,
    },
    /// Reading the root failed.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
}

impl Classify for LookupError {
    fn kind(&self) -> ErrorKind {
        match self {
            LookupError::NotFound { .. } => ErrorKind::NotFound,
            LookupError::NotExecutable { .. } => ErrorKind::PermissionDenied,
            LookupError::Rootfs(e) => e.kind(),
        }
    }
}

enum Probe {
    Executable,
    NotExecutable,
    Missing,
}

fn probe(root: &RootDir, path: &Path) -> Result<Probe, LookupError> {
    match root.stat(path) {
        Ok(info) if info.is_file() && info.is_executable() => Ok(Probe::Executable),
        Ok(_) => Ok(Probe::NotExecutable),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound) => Ok(Probe::Missing),
        // ENOTDIR: a PATH component is a file; the program is not there.
        Err(RootfsError::Access { source, .. }) if source.raw_os_error() == Some(20) => {
            Ok(Probe::Missing)
        }
        Err(e) => Err(e.into()),
    }
}

/// Finds `program` in the root: a name with a `/` is taken as a path
/// (relative to `cwd`), otherwise each directory of `path_env` is tried
/// in order. Returns the path inside the root.
///
/// # Errors
/// [`LookupError::NotFound`], [`LookupError::NotExecutable`] (a match that
/// is a directory or has no execute bit, when nothing better is found).
pub fn find_executable(
    root: &RootDir,
    program: &str,
    path_env: &str,
    cwd: &Path,
) -> Result<PathBuf, LookupError> {
    if program.contains('/') {
        let path = cwd.join(program);
        return match probe(root, &path)? {
            Probe::Executable => Ok(path),
            Probe::NotExecutable => Err(LookupError::NotExecutable { path }),
            Probe::Missing => Err(LookupError::NotFound {
                program: program.to_owned(),
                searched: path.display().to_string(),
            }),
        };
    }
    let mut not_exec = None;
    for dir in path_env.split(':') {
        let dir = if dir.is_empty() { cwd } else { Path::new(dir) };
        let path = if dir.is_absolute() {
            dir.join(program)
        } else {
            cwd.join(dir).join(program)
        };
        match probe(root, &path)? {
            Probe::Executable => return Ok(path),
            Probe::NotExecutable => {
                not_exec.get_or_insert(path);
            }
            Probe::Missing => {}
        }
    }
    match not_exec {
        Some(path) => Err(LookupError::NotExecutable { path }),
        None => Err(LookupError::NotFound {
            program: program.to_owned(),
            searched: path_env.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn finds_in_path_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::create_dir_all(r.join("sbin")).unwrap();
        std::fs::write(r.join("bin/busybox"), "x").unwrap();
        std::fs::set_permissions(
            r.join("bin/busybox"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("/bin/busybox", r.join("bin/sh")).unwrap();
        std::fs::write(r.join("sbin/data"), "x").unwrap();
        std::fs::create_dir_all(r.join("bin/adir")).unwrap();
        let root = RootDir::open(r).unwrap();
        let cwd = Path::new("/");
        assert_eq!(
            find_executable(&root, "sh", "/sbin:/bin", cwd).unwrap(),
            PathBuf::from("/bin/sh")
        );
        assert_eq!(
            find_executable(&root, "/bin/sh", "", cwd).unwrap(),
            PathBuf::from("/bin/sh")
        );
        assert_eq!(
            find_executable(&root, "./sh", "", Path::new("/bin")).unwrap(),
            PathBuf::from("/bin/./sh")
        );
        assert!(matches!(
            find_executable(&root, "nope", "/bin", cwd),
            Err(LookupError::NotFound { .. })
        ));
        assert!(matches!(
            find_executable(&root, "data", "/sbin:/bin", cwd),
            Err(LookupError::NotExecutable { .. })
        ));
        assert!(matches!(
            find_executable(&root, "adir", "/bin", cwd),
            Err(LookupError::NotExecutable { .. })
        ));
        assert!(matches!(
            find_executable(&root, "/bin/busybox/x", "", cwd),
            Err(LookupError::NotFound { .. })
        ));
    }
}
