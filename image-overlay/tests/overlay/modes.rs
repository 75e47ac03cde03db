//! A regular file gets exactly its layer's mode, whether unpack sets it at
//! creation (no setuid, setgid or sticky bit, nothing the umask removes,
//! no default ACL on the parent: no `fchmod`) or with an `fchmod` after
//! the data; and a file created with its mode is not chmodded again.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use image_overlay::unpack::{unpack, UnpackOptions};

use crate::common::{have, is_root, Raw, TarBuf};

/// Modes covering each case: left whole by a 022 umask, cut by it,
/// special bits, none at all.
const MODES: [u32; 12] = [
    0o644, 0o755, 0o600, 0o400, 0o000, 0o444, 0o666, 0o777, 0o4755, 0o2755, 0o1644, 0o6711,
];

/// A layer of one file per mode and owner under `dir/` (no entry for
/// `dir` itself, so a directory made beforehand is the parent).
fn layer(dir: &str) -> Vec<u8> {
    let mut t = TarBuf::new();
    for (owner, id) in [("root", 0), ("user", 1000)] {
        for mode in MODES {
            let mut f = Raw::new(&format!("{dir}/{owner}-{mode:o}"), b'0').size(5);
            f.mode = mode;
            f.uid = id;
            f.gid = id;
            t.raw(&f, b"hello");
        }
    }
    t.end()
}

fn check(target: &Path, dir: &str) {
    for (owner, _) in [("root", 0), ("user", 1000)] {
        for mode in MODES {
            let p = target.join(format!("{dir}/{owner}-{mode:o}"));
            let meta = std::fs::symlink_metadata(&p).expect("unpacked");
            assert_eq!(
                meta.permissions().mode() & 0o7777,
                mode,
                "{} has mode {:o}",
                p.display(),
                meta.permissions().mode() & 0o7777
            );
            assert_eq!(std::fs::read(&p).expect("read"), b"hello");
        }
    }
}

/// The bytes of a POSIX ACL xattr (version 2) granting the owner rwx, the
/// group r-x and others nothing: a default ACL that, unlike a 022 umask,
/// takes the others' bits away from a created file.
fn default_acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm) in [(0x01u16, 7u16), (0x04, 5), (0x20, 0)] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&u32::MAX.to_le_bytes());
    }
    v
}

#[test]
fn every_regular_file_gets_exactly_its_mode() {
    if !is_root() {
        // Owners other than the caller's need root.
        crate::common::skip_or_fail("root privileges (files of other owners)");
        return;
    }
    let target = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(target.path().join("acl")).expect("mkdir");
    let acl = rustix::fs::setxattr(
        target.path().join("acl"),
        "system.posix_acl_default",
        &default_acl(),
        rustix::fs::XattrFlags::empty(),
    );
    let mut tar = layer("plain");
    let with_acl = match acl {
        Ok(()) => {
            tar.truncate(tar.len() - 1024);
            tar.extend_from_slice(&layer("acl"));
            true
        }
        Err(e) => {
            crate::common::skip_or_fail(&format!("default ACLs on the test's filesystem ({e})"));
            false
        }
    };
    unpack(&tar[..], target.path(), &UnpackOptions::default()).expect("unpack");
    check(target.path(), "plain");
    if with_acl {
        check(target.path(), "acl");
    }
}

const CHILD_ENV: &str = "MODES_CHILD_TARGET";

/// The child of [`a_file_created_with_its_mode_is_not_chmodded`]: unpacks
/// 100 files of mode 0644 under `files/` into the directory it is given,
/// with the umask 022.
#[test]
fn modes_child() {
    let Ok(target) = std::env::var(CHILD_ENV) else {
        return;
    };
    // The case of this test: a umask that leaves 0644 whole (set in this
    // child process, where this is the only test running).
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let mut t = TarBuf::new();
    t.dir("files/");
    for i in 0..100 {
        t.file(&format!("files/f{i:03}"), b"data");
    }
    unpack(&t.end()[..], Path::new(&target), &UnpackOptions::default()).expect("unpack");
    println!("unpacked");
}

#[test]
fn a_file_created_with_its_mode_is_not_chmodded() {
    if std::env::var(CHILD_ENV).is_ok() || !have("strace") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("target");
    std::fs::create_dir(&target).expect("mkdir");
    let log = dir.path().join("strace.log");
    let out = std::process::Command::new("strace")
        .args(["-f", "-qq", "-y", "-e", "trace=fchmod,fchmodat,chmod"])
        .arg("-o")
        .arg(&log)
        .arg(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            "modes::modes_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &target)
        .output()
        .expect("run strace");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("unpacked"),
        "the child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = std::fs::read_to_string(&log).expect("strace log");
    let on_files: Vec<&str> = calls.lines().filter(|l| l.contains("/files/f")).collect();
    assert!(
        on_files.is_empty(),
        "{} chmods of files created with their mode: {:#?}",
        on_files.len(),
        &on_files[..on_files.len().min(5)]
    );
    for i in 0..100 {
        let p = target.join(format!("files/f{i:03}"));
        let mode = std::fs::metadata(&p)
            .expect("unpacked")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o644, "{}", p.display());
    }
}
