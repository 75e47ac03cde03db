//! The `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` Docker gives a
//! container: files in the container's state directory, bind-mounted over
//! the image's own (which stay untouched in the image).
//!
//! # Security
//! The directory they go into may be one an operator named
//! (`imagectl bundle IMAGE DIR`), holding whatever was there before:
//! nothing inside it is followed. `etc` is created or opened with
//! `O_NOFOLLOW`, and each file is written under a fresh temporary name
//! (`O_EXCL | O_NOFOLLOW`) and renamed over its name, which replaces a
//! symlink there instead of writing through it. Only the directory
//! itself, as named, is resolved normally.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use crate::spec::EtcFiles;

/// Docker's `/etc/hosts` for a container with its own network namespace.
pub fn hosts() -> String {
    "127.0.0.1\tlocalhost\n\
     ::1\tlocalhost ip6-localhost ip6-loopback\n\
     fe00::0\tip6-localnet\n\
     ff00::0\tip6-mcastprefix\n\
     ff02::1\tip6-allnodes\n\
     ff02::2\tip6-allrouters\n"
        .to_owned()
}

/// The host's `resolv.conf` as Docker adapts it: nameservers on the
/// loopback are unreachable from the container's network namespace and are
/// dropped; when none is left, Google's public resolvers are used.
pub fn resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let addr = words.next().unwrap_or("");
            if addr.starts_with("127.") || addr == "::1" {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

/// Opens the directory `name` in `parent` (creating it, mode 0755, when
/// missing) without following a symlink: a symlink there is refused with
/// `ELOOP`, anything else that is not a directory with `ENOTDIR`.
pub(crate) fn open_dir_nofollow(parent: impl AsFd, name: &str) -> std::io::Result<OwnedFd> {
    match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    rustix::fs::openat(
        &parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        // O_DIRECTORY makes a symlink ENOTDIR: say what it is.
        let link = rustix::fs::statat(&parent, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| {
                rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink
            });
        if link {
            std::io::Error::from_raw_os_error(libc::ELOOP)
        } else {
            e.into()
        }
    })
}

/// Replaces the file `name` in `dir` with `data` (mode 0644) without
/// following anything: written under a temporary name created with
/// `O_EXCL | O_NOFOLLOW`, then renamed over `name` (a symlink there is
/// replaced, its target untouched; a reader sees the old or the new file,
/// never half of one).
///
/// Not the family's atomic write (`image_store::fs::write_file_atomic`),
/// deliberately: it writes relative to a directory descriptor the caller
/// already opened without following (the bundle and its `etc`), which a
/// `Root` (opened by path) cannot take without reopening by name; the
/// files get mode 0644 so a container's non-root user can read them; and
/// they are derived, rewritten on every create, so they need no fsync.
pub(crate) fn replace_file_at(dir: impl AsFd, name: &str, data: &[u8]) -> std::io::Result<()> {
    let tmp = format!(".{name}.tmp-{}", std::process::id());
    let fd = rustix::fs::openat(
        &dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .or_else(|e| {
        // A temporary file a crashed writer of this pid left: remove, retry once.
        if e != rustix::io::Errno::EXIST {
            return Err(e);
        }
        rustix::fs::unlinkat(&dir, tmp.as_str(), rustix::fs::AtFlags::empty())?;
        rustix::fs::openat(
            &dir,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
    })?;
    let written = (|| {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o644))?;
        std::fs::File::from(fd).write_all(data)?;
        rustix::fs::renameat(&dir, tmp.as_str(), &dir, name)?;
        Ok(())
    })();
    if written.is_err() {
        let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), rustix::fs::AtFlags::empty());
    }
    written
}

/// Writes the three files into `dir` (created if missing) and returns their paths.
/// With `host_network`, the host's `/etc/hosts` and `/etc/resolv.conf`
/// are copied as they are. `dir`'s parent is resolved as named; `dir`
/// itself and the files in it are never followed (see the module docs).
///
/// # Errors
/// Any I/O error writing them; `ELOOP` or `ENOTDIR` when `dir` is a
/// symlink.
pub fn write(dir: &Path, hostname: &str, host_network: bool) -> std::io::Result<EtcFiles> {
    let (parent, name) = match (dir.parent(), dir.file_name().and_then(|n| n.to_str())) {
        (Some(p), Some(n)) => (
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            },
            n,
        ),
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the /etc files' directory needs a parent and a UTF-8 name",
            ))
        }
    };
    std::fs::create_dir_all(parent)?;
    let parent_fd = rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let etc = open_dir_nofollow(&parent_fd, name)?;
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let (hosts_text, resolv) = if host_network {
        (
            std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| hosts()),
            host_resolv,
        )
    } else {
        (hosts(), resolv_conf(&host_resolv))
    };
    let files = EtcFiles {
        hosts: dir.join("hosts"),
        hostname: dir.join("hostname"),
        resolv_conf: dir.join("resolv.conf"),
    };
    replace_file_at(&etc, "hosts", hosts_text.as_bytes())?;
    replace_file_at(&etc, "hostname", format!("{hostname}\n").as_bytes())?;
    replace_file_at(&etc, "resolv.conf", resolv.as_bytes())?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_drops_loopback_servers() {
        let r = resolv_conf("search x\nnameserver 127.0.0.53\noptions edns0\n");
        assert_eq!(
            r,
            "search x\noptions edns0\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        let r = resolv_conf("nameserver 10.0.0.1\nnameserver ::1\n");
        assert_eq!(r, "nameserver 10.0.0.1\n");
    }

    #[test]
    fn never_writes_through_symlinks_in_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("victim"), "precious").unwrap();
        // The files themselves are links to a file outside.
        let etc = tmp.path().join("b1/etc");
        std::fs::create_dir_all(&etc).unwrap();
        for name in ["hosts", "hostname", "resolv.conf"] {
            std::os::unix::fs::symlink(outside.join("victim"), etc.join(name)).unwrap();
        }
        let f = write(&etc, "abc", false).unwrap();
        assert_eq!(
            std::fs::read_to_string(outside.join("victim")).unwrap(),
            "precious"
        );
        assert_eq!(std::fs::read_to_string(&f.hostname).unwrap(), "abc\n");
        assert!(!std::fs::symlink_metadata(&f.hosts).unwrap().is_symlink());
        // `etc` itself a link to a directory outside: refused, nothing there.
        let b2 = tmp.path().join("b2");
        std::fs::create_dir(&b2).unwrap();
        std::os::unix::fs::symlink(&outside, b2.join("etc")).unwrap();
        let e = write(&b2.join("etc"), "abc", false).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
        let names: Vec<_> = std::fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("victim")]);
    }

    #[test]
    fn writes_files() {
        let tmp = tempfile::tempdir().unwrap();
        let f = write(&tmp.path().join("etc"), "abc", false).unwrap();
        assert_eq!(std::fs::read_to_string(f.hostname).unwrap(), "abc\n");
        assert!(std::fs::read_to_string(f.hosts)
            .unwrap()
            .starts_with("127.0.0.1\tlocalhost"));
    }
}
