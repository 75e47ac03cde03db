//! Resolving the image's `User` (`name`, `uid`, `name:group`, `uid:gid`)
//! against the image's own `/etc/passwd` and `/etc/group`, read inside the
//! root (see [`RootDir`]), with libcontainer's rules as Docker applies them.

use std::path::Path;

use image_core::{Classify, ErrorKind};

use crate::rootfs::{RootDir, RootfsError};

/// The highest user or group ID a container may run as: 2^31 - 1, as
/// runc enforces ("uids and gids must be in range 0-2147483647"). Above
/// it, `4294967295` is `(uid_t)-1`, which `setresuid` and `setgroups`
/// read as "leave unchanged": the process would stay root.
pub const MAX_ID: u32 = i32::MAX as u32;

/// The user a container process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Supplementary groups: those of `/etc/group` listing the user by name
    /// (only when no group was given explicitly), plus any extra groups.
    pub additional_gids: Vec<u32>,
    /// Home directory from the passwd entry, `/` when there is none.
    pub home: String,
    /// The user name from the passwd entry, when there is one.
    pub name: Option<String>,
}

impl ResolvedUser {
    /// root (0:0, home `/root`), for a config without a `User`.
    pub fn root() -> ResolvedUser {
        ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            home: "/root".into(),
            name: Some("root".into()),
        }
    }
}

/// Errors of resolving a user.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
    /// No passwd entry has this name.
    #[error("unable to find user {user:?}: no matching entries in passwd file")]
    UserNotFound {
        /// The user name.
        user: String,
    },
    /// No group entry has this name.
    #[error("unable to find group {group:?}: no matching entries in group file")]
    GroupNotFound {
        /// The group name.
        group: String,
    },
    /// The user string is malformed (empty part, id out of range).
    #[error("invalid user specification {spec:?}")]
    Invalid {
        /// The string as given.
        spec: String,
    },
    /// A user or group ID (given, or found in `/etc/passwd` or
    /// `/etc/group`) is above `i32::MAX`.
    #[error("invalid user specification {spec:?}: {what} {id} is out of range 0-{max}", max = MAX_ID)]
    IdOutOfRange {
        /// The string as given.
        spec: String,
        /// `uid`, `gid` or `supplementary gid`.
        what: &'static str,
        /// The ID.
        id: u64,
    },
    /// Reading `/etc/passwd` or `/etc/group` failed other than by absence.
    #[error("reading the image's user database")]
    Read(#[from] RootfsError),
}

impl Classify for UserError {
    fn kind(&self) -> ErrorKind {
        match self {
            UserError::UserNotFound { .. } | UserError::GroupNotFound { .. } => ErrorKind::NotFound,
            UserError::Invalid { .. } | UserError::IdOutOfRange { .. } => ErrorKind::InvalidInput,
            UserError::Read(e) => e.kind(),
        }
    }
}

/// One `/etc/passwd` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Home directory.
    pub home: String,
}

/// One `/etc/group` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Group ID.
    pub gid: u32,
    /// Member user names.
    pub members: Vec<String>,
}

/// Parses `/etc/passwd` text; malformed lines are skipped (as libc does).
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_owned(),
                uid: f[2].trim().parse().ok()?,
                gid: f[3].trim().parse().ok()?,
                home: f.get(5).map(|s| (*s).to_owned()).unwrap_or_default(),
            })
        })
        .collect()
}

/// Parses `/etc/group` text; malformed lines are skipped.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_owned(),
                gid: f[2].trim().parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn read_db(root: &RootDir, path: &str) -> Result<Option<String>, UserError> {
    match root.read(Path::new(path)) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Resolves `spec` (empty means root) against the image's `/etc/passwd`
/// and `/etc/group`, read inside `root`.
///
/// # Errors
/// [`UserError::UserNotFound`] / [`UserError::GroupNotFound`] for names
/// that have no entry, [`UserError::Invalid`], [`UserError::Read`].
pub(crate) fn resolve(root: &RootDir, spec: &str) -> Result<ResolvedUser, UserError> {
    let passwd = read_db(root, "/etc/passwd")?.unwrap_or_default();
    let group = read_db(root, "/etc/group")?.unwrap_or_default();
    resolve_in(&parse_passwd(&passwd), &parse_group(&group), spec)
}

/// A numeric ID: `None` when `s` is not all digits (a name), else the
/// number saturated to `u64` (range checked by [`check_ids`]).
fn parse_id(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse().unwrap_or(u64::MAX))
}

/// Refuses a user whose uid, gid or a supplementary gid is above [`MAX_ID`].
///
/// # Errors
/// [`UserError::IdOutOfRange`], naming `spec`.
pub fn check_ids(user: &ResolvedUser, spec: &str) -> Result<(), UserError> {
    let ids = [("uid", user.uid), ("gid", user.gid)].into_iter().chain(
        user.additional_gids
            .iter()
            .map(|g| ("supplementary gid", *g)),
    );
    for (what, id) in ids {
        if id > MAX_ID {
            return Err(UserError::IdOutOfRange {
                spec: spec.to_owned(),
                what,
                id: id.into(),
            });
        }
    }
    Ok(())
}

/// [`resolve`] on already parsed databases (pure).
///
/// # Errors
/// As [`resolve`].
pub fn resolve_in(
    passwd: &[PasswdEntry],
    groups: &[GroupEntry],
    spec: &str,
) -> Result<ResolvedUser, UserError> {
    let invalid = || UserError::Invalid {
        spec: spec.to_owned(),
    };
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => {
            if g.is_empty() {
                return Err(invalid());
            }
            (u, Some(g))
        }
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let out_of_range = |what: &'static str, id: u64| UserError::IdOutOfRange {
        spec: spec.to_owned(),
        what,
        id,
    };
    let to_id = |what: &'static str, id: u64| {
        u32::try_from(id)
            .ok()
            .filter(|id| *id <= MAX_ID)
            .ok_or_else(|| out_of_range(what, id))
    };

    // The user: by name, or by number (an entry is optional then).
    let (mut resolved, matched_name) = match parse_id(user_part) {
        Some(uid) => match passwd.iter().find(|p| u64::from(p.uid) == uid) {
            Some(p) => (from_entry(p), true),
            None => (
                ResolvedUser {
                    uid: to_id("uid", uid)?,
                    gid: 0,
                    additional_gids: Vec::new(),
                    home: "/".into(),
                    name: None,
                },
                false,
            ),
        },
        None => {
            if user_part.contains(|c: char| c.is_whitespace() || c == ',') {
                return Err(invalid());
            }
            let p = passwd.iter().find(|p| p.name == user_part).ok_or_else(|| {
                UserError::UserNotFound {
                    user: user_part.to_owned(),
                }
            })?;
            (from_entry(p), true)
        }
    };

    match group_part {
        Some(g) => {
            resolved.gid = match parse_id(g) {
                Some(gid) => to_id("gid", gid)?,
                None => {
                    groups
                        .iter()
                        .find(|e| e.name == g)
                        .ok_or_else(|| UserError::GroupNotFound {
                            group: g.to_owned(),
                        })?
                        .gid
                }
            };
        }
        None if matched_name => {
            if let Some(name) = &resolved.name {
                let mut seen = std::collections::HashSet::new();
                resolved.additional_gids = groups
                    .iter()
                    .filter(|e| e.members.iter().any(|m| m == name))
                    .map(|e| e.gid)
                    .filter(|g| seen.insert(*g))
                    .collect();
            }
        }
        None => {}
    }
    // IDs from the image's passwd and group files are checked too.
    check_ids(&resolved, spec)?;
    Ok(resolved)
}

fn from_entry(p: &PasswdEntry) -> ResolvedUser {
    ResolvedUser {
        uid: p.uid,
        gid: p.gid,
        additional_gids: Vec::new(),
        home: if p.home.is_empty() {
            "/".into()
        } else {
            p.home.clone()
        },
        name: Some(p.name.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1::/usr/sbin:/bin/false\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n\
        broken line\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root,app\nstaff:x:50:app\napp:x:1000:\n";

    fn r(spec: &str) -> Result<ResolvedUser, UserError> {
        resolve_in(&parse_passwd(PASSWD), &parse_group(GROUP), spec)
    }

    /// An image's user or group name reaches the error quoted, none of its
    /// control characters printed.
    #[test]
    fn a_hostile_user_or_group_name_is_quoted_in_the_error() {
        for spec in ["\u{1b}]0;pwned\u{7}", "root:\u{1b}[2J"] {
            let msg = r(spec).unwrap_err().to_string();
            assert!(
                !msg.contains(char::is_control),
                "{spec:?}: raw control characters"
            );
        }
    }

    #[test]
    fn names_and_numbers() {
        let u = r("app").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/app"));
        assert_eq!(u.additional_gids, vec![10, 50]);
        let u = r("1000").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.additional_gids, vec![10, 50]);
        let u = r("4242").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        let u = r("").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
        assert_eq!(u.additional_gids, vec![10]);
    }

    #[test]
    fn explicit_groups() {
        let u = r("app:staff").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50));
        assert!(u.additional_gids.is_empty());
        let u = r("4242:77").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 77));
        let u = r("daemon:0").unwrap();
        assert_eq!((u.uid, u.gid), (1, 0));
    }

    #[test]
    fn errors() {
        assert!(matches!(r("nobody"), Err(UserError::UserNotFound { .. })));
        assert!(matches!(
            r("app:nogroup"),
            Err(UserError::GroupNotFound { .. })
        ));
        assert!(matches!(r("app:"), Err(UserError::Invalid { .. })));
        assert_eq!(r("nobody").unwrap_err().kind(), ErrorKind::NotFound);
    }

    #[test]
    fn ids_above_2_pow_31_minus_1_are_refused() {
        let out = |spec: &str| match r(spec) {
            Err(e @ UserError::IdOutOfRange { .. }) => e.kind() == ErrorKind::InvalidInput,
            other => panic!("{spec}: {other:?}"),
        };
        for spec in [
            "4294967295",
            "2147483648",
            "0:4294967295",
            "app:2147483648",
            "99999999999999999999999",
            "1:99999999999999999999999",
        ] {
            assert!(out(spec), "{spec}");
        }
        assert_eq!(r("2147483647:2147483647").unwrap().uid, MAX_ID);
        // The image's own files: a name mapping to -1, a group with -1.
        let passwd = parse_passwd("evil:x:4294967295:0::/:/bin/sh\nhalf:x:5:4294967295::/:\n");
        let groups = parse_group("g:x:4294967295:app2\n");
        assert!(matches!(
            resolve_in(&passwd, &groups, "evil"),
            Err(UserError::IdOutOfRange { what: "uid", .. })
        ));
        assert!(matches!(
            resolve_in(&passwd, &groups, "half"),
            Err(UserError::IdOutOfRange { what: "gid", .. })
        ));
        let passwd = parse_passwd("app2:x:7:7::/:\n");
        assert!(matches!(
            resolve_in(&passwd, &groups, "app2"),
            Err(UserError::IdOutOfRange {
                what: "supplementary gid",
                ..
            })
        ));
        assert!(matches!(
            resolve_in(&passwd, &groups, "app2:g"),
            Err(UserError::IdOutOfRange { what: "gid", .. })
        ));
    }

    #[test]
    fn generated_numeric_users_resolve_only_within_range() {
        // Boundaries and xorshift-generated numbers, in every spec form:
        // a spec resolves exactly when its numbers are at most MAX_ID, and
        // what resolves never holds an ID above it.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut ids: Vec<u64> = vec![
            0,
            1000,
            u64::from(MAX_ID) - 1,
            u64::from(MAX_ID),
            u64::from(MAX_ID) + 1,
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            u64::MAX,
        ];
        for _ in 0..200 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ids.push(state >> (state % 64));
        }
        let ok = |n: u64| n <= u64::from(MAX_ID);
        for &u in &ids {
            for &g in ids.iter().step_by(7) {
                for (spec, valid) in [
                    (format!("{u}"), ok(u)),
                    (format!("{u}:{g}"), ok(u) && ok(g)),
                    (format!("app:{g}"), ok(g)),
                    (format!("{u}:staff"), ok(u)),
                ] {
                    match r(&spec) {
                        Ok(x) => {
                            assert!(valid, "{spec} resolved: {x:?}");
                            assert!(x.uid <= MAX_ID && x.gid <= MAX_ID, "{spec}");
                            assert!(x.additional_gids.iter().all(|g| *g <= MAX_ID));
                        }
                        Err(UserError::IdOutOfRange { .. }) => assert!(!valid, "{spec}"),
                        Err(e) => panic!("{spec}: {e}"),
                    }
                }
            }
        }
    }

    #[test]
    fn resolves_through_hostile_symlinks_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::write(root.join("data/pw"), PASSWD).unwrap();
        std::fs::write(root.join("data/gr"), GROUP).unwrap();
        // The host's files would give other answers; these symlinks must not reach them.
        std::os::unix::fs::symlink("/../../../../data/pw", root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../../data/gr", root.join("etc/group")).unwrap();
        let rd = RootDir::open(&root).unwrap();
        let u = resolve(&rd, "app").unwrap();
        assert_eq!((u.uid, u.additional_gids.clone()), (1000, vec![10, 50]));
        // Missing files: numeric users still work, names do not.
        let empty = tmp.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let rd = RootDir::open(&empty).unwrap();
        assert_eq!(resolve(&rd, "5:6").unwrap().gid, 6);
        assert!(resolve(&rd, "app").is_err());
    }
}
