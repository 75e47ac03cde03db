//! `--chown` and `--chmod` of `COPY` and `ADD`.
//!
//! `--chown=user[:group]` follows BuildKit: a name is looked up in the
//! destination's `/etc/passwd` (and a group name in its `/etc/group`), read
//! inside the destination root; a user name alone takes that user's
//! primary group, a number alone is both uid and gid. `--chmod` takes an
//! octal mode or a symbolic one (`u+x`, `go-w,a+r`, `a=rX`), applied to the
//! source's mode as chmod(1) does.

use std::os::fd::BorrowedFd;

use image_overlay::resolve::{open_in_root, PathResolution};
use rustix::fs::{Mode, OFlags};

use super::CopyError;

/// The largest `/etc/passwd` or `/etc/group` read.
const MAX_DB_BYTES: u64 = 16 << 20;
/// The highest ID accepted (runc's range, as image-runtime's user lookup).
const MAX_ID: u64 = i32::MAX as u64;

/// Resolves a `--chown` value in the destination root `root`.
pub(crate) fn resolve_chown(root: BorrowedFd<'_>, spec: &str) -> Result<(u32, u32), CopyError> {
    let bad = |reason: &'static str| CopyError::Chown {
        spec: spec.to_owned(),
        reason,
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() || group.is_some_and(str::is_empty) {
        return Err(bad("an empty user or group"));
    }
    let (uid, primary) = match number(user) {
        Some(n) => {
            let id = checked(n).ok_or_else(|| bad("an ID above 2147483647"))?;
            (id, id)
        }
        None => {
            let db = read_db(root, "etc/passwd")?;
            lookup(&db, user, 2, Some(3)).ok_or_else(|| bad("no such user in /etc/passwd"))?
        }
    };
    let gid = match group {
        None => primary,
        Some(g) => match number(g) {
            Some(n) => checked(n).ok_or_else(|| bad("an ID above 2147483647"))?,
            None => {
                let db = read_db(root, "etc/group")?;
                lookup(&db, g, 2, None)
                    .ok_or_else(|| bad("no such group in /etc/group"))?
                    .0
            }
        },
    };
    Ok((uid, gid))
}

fn number(s: &str) -> Option<u64> {
    if s.bytes().all(|b| b.is_ascii_digit()) {
        Some(s.parse().unwrap_or(u64::MAX))
    } else {
        None
    }
}

fn checked(n: u64) -> Option<u32> {
    (n <= MAX_ID).then_some(n as u32)
}

/// The IDs in fields `a` (and `b`) of the first line whose first field is
/// `name`; malformed lines are skipped, as libc does.
fn lookup(db: &str, name: &str, a: usize, b: Option<usize>) -> Option<(u32, u32)> {
    db.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.first() != Some(&name) {
            return None;
        }
        let id = |i: usize| {
            f.get(i)
                .and_then(|s| s.trim().parse::<u64>().ok())
                .and_then(checked)
        };
        Some((id(a)?, b.map_or(Some(0), id)?))
    })
}

/// A database file of the destination, read inside its root; missing is
/// empty.
fn read_db(root: BorrowedFd<'_>, path: &str) -> Result<String, CopyError> {
    let err = |source: std::io::Error| CopyError::Write {
        path: format!("/{path}"),
        source,
    };
    // Looked at before it is opened: only a regular file is (a FIFO or
    // a device node of the base image never is).
    let pinned = match open_in_root(
        root,
        path.as_bytes(),
        OFlags::PATH,
        Mode::empty(),
        PathResolution::Auto,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(String::new()),
        Err(e) => return Err(err(e.into())),
    };
    let fd = crate::dockerignore::open_if_regular(&pinned).map_err(err)?;
    match crate::dockerignore::read_regular(fd, MAX_DB_BYTES).map_err(err)? {
        Some(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        None => Err(CopyError::TooLarge {
            what: "the destination's user or group database in bytes",
            limit: MAX_DB_BYTES,
        }),
    }
}

/// A parsed `--chmod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Chmod {
    /// An octal mode, set as is.
    Octal(u32),
    /// Symbolic clauses, applied in order.
    Symbolic(Vec<Clause>),
}

/// One `[ugoa]*[+-=][rwxXst]*` clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Clause {
    who: u32,
    op: u8,
    perms: Vec<u8>,
}

impl Chmod {
    /// Parses an octal (at most `7777`) or symbolic mode.
    pub(crate) fn parse(spec: &str) -> Result<Chmod, CopyError> {
        let bad = |reason: &'static str| CopyError::Chmod {
            spec: spec.to_owned(),
            reason,
        };
        if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
            return match u32::from_str_radix(spec, 8) {
                Ok(m) if m <= 0o7777 => Ok(Chmod::Octal(m)),
                _ => Err(bad("an octal mode above 7777 or with digits 8 or 9")),
            };
        }
        let mut clauses = Vec::new();
        for part in spec.split(',') {
            let b = part.as_bytes();
            let mut i = 0;
            let mut who = 0;
            while let Some(c) = b.get(i) {
                who |= match c {
                    b'u' => 0o4700,
                    b'g' => 0o2070,
                    b'o' => 0o1007,
                    b'a' => 0o7777,
                    _ => break,
                };
                i += 1;
            }
            let op = match b.get(i) {
                Some(&o @ (b'+' | b'-' | b'=')) => o,
                _ => return Err(bad("expected an octal mode or [ugoa]*[+-=][rwxXst]*")),
            };
            let perms = b[i + 1..].to_vec();
            if perms.iter().any(|p| !b"rwxXst".contains(p)) {
                return Err(bad("a permission other than r, w, x, X, s or t"));
            }
            clauses.push(Clause {
                who: if who == 0 { 0o7777 } else { who },
                op,
                perms,
            });
        }
        Ok(Chmod::Symbolic(clauses))
    }

    /// The mode (permission bits, with setuid, setgid and sticky) that a
    /// file of mode `mode` gets; `dir` for `X`.
    pub(crate) fn apply(&self, mode: u32, dir: bool) -> u32 {
        let clauses = match self {
            Chmod::Octal(m) => return *m,
            Chmod::Symbolic(c) => c,
        };
        let mut mode = mode & 0o7777;
        for c in clauses {
            let mut bits = 0;
            for p in &c.perms {
                bits |= match p {
                    b'r' => 0o444,
                    b'w' => 0o222,
                    b'x' => 0o111,
                    b'X' if dir || mode & 0o111 != 0 => 0o111,
                    b's' => 0o6000,
                    b't' => 0o1000,
                    _ => 0,
                };
            }
            let bits = bits & c.who;
            mode = match c.op {
                b'+' => mode | bits,
                b'-' => mode & !bits,
                _ => (mode & !c.who) | bits,
            };
        }
        mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolic_modes_follow_chmod() {
        let m = |s: &str, mode, dir| Chmod::parse(s).unwrap().apply(mode, dir);
        assert_eq!(m("755", 0o600, false), 0o755);
        assert_eq!(m("u+x", 0o644, false), 0o744);
        assert_eq!(m("go-w", 0o666, false), 0o644);
        assert_eq!(m("a=r", 0o755, false), 0o444);
        assert_eq!(m("+x", 0o600, false), 0o711);
        assert_eq!(m("a=rX", 0o600, true), 0o555);
        assert_eq!(m("a=rX", 0o600, false), 0o444);
        assert_eq!(m("u=rwx,g=rx,o=", 0o777, false), 0o750);
        assert_eq!(m("u+s", 0o755, false), 0o4755);
        assert!(Chmod::parse("u*x").is_err());
        assert!(Chmod::parse("8").is_err());
        assert!(Chmod::parse("17777").is_err());
    }

    #[test]
    fn names_resolve_from_fields() {
        let db = "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\nbad:x:y:1\n";
        assert_eq!(lookup(db, "app", 2, Some(3)), Some((1000, 1001)));
        assert_eq!(lookup(db, "bad", 2, Some(3)), None);
        assert_eq!(lookup(db, "nobody", 2, Some(3)), None);
    }
}
