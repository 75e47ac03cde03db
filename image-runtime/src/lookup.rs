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
    #[error(
        "{program:?}: executable file not found in the root filesystem (searched {searched:?})"
    )]
    NotFound {
        /// The program as given (cut as `searched` is).
        program: String,
        /// The directories searched, or the path tried (at most
        /// [`MAX_SEARCHED`] bytes of them, then `…`).
        searched: String,
    },
    /// The file exists but is not an executable regular file.
    #[error("{path:?}: not an executable file in the root filesystem")]
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

/// The most bytes of the program and of the `PATH` searched that
/// [`LookupError::NotFound`] keeps (an image's may hold megabytes).
pub const MAX_SEARCHED: usize = 1024;

/// `s` cut to at most [`MAX_SEARCHED`] bytes (on a character boundary),
/// with `…` when cut.
fn cut(s: &str) -> String {
    if s.len() <= MAX_SEARCHED {
        return s.to_owned();
    }
    let mut end = MAX_SEARCHED;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
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
                program: cut(program),
                searched: cut(&path.display().to_string()),
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
            program: cut(program),
            searched: cut(path_env),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// An image's program name and `PATH` reach the error quoted, none of
    /// their control characters printed, and the `PATH` searched cut.
    #[test]
    fn a_hostile_program_and_path_are_quoted_and_cut_in_the_error() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("\u{1b}[2Jd")).unwrap();
        let root = RootDir::open(tmp.path()).unwrap();
        let path = format!("/\u{1b}[2J:{}", "/x:".repeat(100_000));
        let cwd = Path::new("/");
        for (program, e) in [
            (
                "\u{1b}]0;pwned\u{7}",
                find_executable(&root, "\u{1b}]0;pwned\u{7}", &path, cwd),
            ),
            (
                "/\u{1b}[2Jd",
                find_executable(&root, "/\u{1b}[2Jd", &path, cwd),
            ),
        ] {
            let msg = e.unwrap_err().to_string();
            assert!(
                !msg.contains(char::is_control),
                "{program:?}: raw control characters"
            );
            assert!(msg.len() < 4096, "{program:?}: {} bytes", msg.len());
        }
    }

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
