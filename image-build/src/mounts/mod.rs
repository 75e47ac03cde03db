//! `RUN --mount`: what a RUN mounts besides its root filesystem, parsed as
//! BuildKit's Dockerfile frontend parses it, and the cache mounts' home.
//!
//! [`MountSpec::parse`] reads one `--mount` value: comma-separated fields
//! (a field may be double-quoted, `""` inside is a quote, as Go's CSV
//! reader reads it), each `key=value` or a bare boolean (`rw`, `readwrite`,
//! `ro`, `readonly`, `required`), in any order; a key given twice keeps its
//! last value; an unknown key is an error naming it. The types:
//! - `bind` (the default): `target` (required), `from` (a stage, an image,
//!   or the context when absent: the context as its ignore rules leave
//!   it, a copy when they exclude anything), `source` (a path in it,
//!   default its root), `rw` (writes allowed, then discarded; read-only by
//!   default);
//! - `cache`: `target`, `id` (default: the target), `sharing`
//!   (`shared`, `private`, `locked`), `from`/`source` (what a new cache
//!   directory starts with), `mode` (octal, default 0755), `uid`, `gid`,
//!   `ro`;
//! - `tmpfs`: `target`, `size` (bytes, or with a `k`, `m`, `g` suffix);
//! - `secret`: `id` (default: the target's last component), `target`
//!   (default `/run/secrets/<id>`, none when only `env` is given), `env`,
//!   `required`, `mode` (default 0400), `uid`, `gid`;
//! - `ssh` is refused ([`MountError::Ssh`]): this builder forwards no agent.
//!
//! A relative target is taken from the RUN's working directory; every
//! target is cleaned lexically (no `..` can leave `/`).
//!
//! # Cache mount directories
//! Every cache mount lives in one directory, [`cache_dir_root`] of the
//! runtime's state directory (the builder passes its runtime's
//! `root()`):
//! ```text
//! <root>/<escaped id>/        the cache directory itself, mounted as is
//! <root>/<escaped id>.lock    its lock file (flock), for `sharing=locked`
//!                             and `private`
//! <root>/.new-*/<escaped id>  a directory being made (seeded, then renamed)
//! <root>/.import-*/mount      an imported mount being unpacked (renamed)
//! ```
//! A `.new-*` or `.import-*` directory is held by its maker's `flock`;
//! one no process holds (its maker was killed) is removed by the next
//! maker, before it makes its own.
//! The escaped id ([`CacheMountId::escaped`]) keeps ASCII letters, digits,
//! `-` and `_` and writes every other byte as `%XX` (so it never holds a
//! `.` and never starts one: the directories are exactly the entries whose
//! name has no `.`); [`CacheMountId::from_escaped`] reverses it. A cache
//! directory is made once, with its mount's `mode`, `uid`, `gid` and seed;
//! later mounts of the same id take it as it is.
//!
//! # Security
//! Every size, count and length is bounded ([`MAX_MOUNTS`], [`MAX_SECRET`],
//! [`MAX_ID`]). Nothing of a secret is kept in a [`MountSpec`]: only its id
//! and where it goes; its value is read from the caller's map when the RUN
//! runs, written on a tmpfs outside the root filesystem and never hashed.

use std::path::{Path, PathBuf};

mod prepare;

pub use prepare::{
    context_path, has_ignore_rules, resolve_in_context, sweep, ContextCopies, ContextView,
    HostBind, Prepared, Secret, Setup, SetupError, Swept,
};
pub(crate) use prepare::{locked_dir, sweep_staging, IMPORT};

/// The most `--mount` flags a RUN may have.
pub const MAX_MOUNTS: usize = 64;

/// The largest secret (BuildKit's limit, 500 KiB).
pub const MAX_SECRET: usize = 500 * 1024;

/// The longest cache or secret id, in bytes.
pub const MAX_ID: usize = 80;

/// The most components a target may have, plus one (the RUN step removes
/// the runtime's mount points up to this depth).
pub const MAX_TARGET_DEPTH: usize = 64;

/// The longest `--mount` value, in bytes.
pub const MAX_SPEC: usize = 8 * 1024;

/// The directory holding every cache mount directory, given the runtime's
/// state directory (see the module docs for the layout).
pub fn cache_dir_root(state: &Path) -> PathBuf {
    state.join("cache-mounts")
}

/// A cache mount's id after normalisation: the `id=` given, or the cleaned
/// absolute target when none; never empty, at most [`MAX_ID`] bytes, no
/// NUL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheMountId(String);

impl CacheMountId {
    /// `id` checked.
    ///
    /// # Errors
    /// [`MountError::Value`] when it is empty, longer than [`MAX_ID`] or
    /// holds a NUL.
    pub fn new(id: &str) -> Result<CacheMountId, MountError> {
        if id.is_empty() || id.len() > MAX_ID || id.contains('\0') {
            return Err(MountError::Value {
                key: "id".to_owned(),
                reason: "must be 1 to 80 bytes, without NUL",
            });
        }
        Ok(CacheMountId(id.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its directory's name under [`cache_dir_root`]: ASCII letters,
    /// digits, `-` and `_` kept, every other byte `%XX` (upper-case hex).
    pub fn escaped(&self) -> String {
        let mut out = String::with_capacity(self.0.len() * 3);
        for b in self.0.bytes() {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// The id whose [`Self::escaped`] form is `name`; `None` when `name` is
    /// not one (a lock file, a directory being made, anything else).
    pub fn from_escaped(name: &str) -> Option<CacheMountId> {
        let bytes = name.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'%' {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                if hex.bytes().any(|h| h.is_ascii_lowercase()) {
                    return None;
                }
                let v = u8::from_str_radix(hex, 16).ok()?;
                if v.is_ascii_alphanumeric() || v == b'-' || v == b'_' {
                    return None;
                }
                out.push(v);
                i += 3;
            } else if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                out.push(b);
                i += 1;
            } else {
                return None;
            }
        }
        CacheMountId::new(&String::from_utf8(out).ok()?).ok()
    }
}

impl std::fmt::Display for CacheMountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `sharing=` of a cache mount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Sharing {
    /// Every RUN using the id at once shares the directory (the default).
    #[default]
    Shared,
    /// A RUN that finds the directory in use gets a new empty one, thrown
    /// away after it.
    Private,
    /// A RUN waits until no other RUN uses the directory.
    Locked,
}

/// `type=bind`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BindMount {
    /// Where in the container (absolute, clean).
    pub target: String,
    /// A stage or an image; `None` is the build context.
    pub from: Option<String>,
    /// The path in `from` (relative to its root, clean; empty is the root).
    pub source: String,
    /// Writes allowed (and discarded after the RUN).
    pub rw: bool,
}

/// `type=cache`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheMount {
    /// Where in the container (absolute, clean).
    pub target: String,
    /// Which cache directory.
    pub id: CacheMountId,
    /// How concurrent RUNs share it.
    pub sharing: Sharing,
    /// What a new cache directory starts with: a stage or an image (`None`:
    /// empty, unless `source` names a context path).
    pub from: Option<String>,
    /// The path in `from` whose content seeds a new directory (clean,
    /// relative; empty is the root).
    pub source: String,
    /// A new directory's permission bits.
    pub mode: u32,
    /// A new directory's owner.
    pub uid: u32,
    /// A new directory's group.
    pub gid: u32,
    /// Mounted read-only.
    pub read_only: bool,
}

/// `type=tmpfs`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TmpfsMount {
    /// Where in the container (absolute, clean).
    pub target: String,
    /// The size limit in bytes (`None`: the kernel's default).
    pub size: Option<u64>,
}

/// `type=secret`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretMount {
    /// The secret's id, a key of the caller's secrets.
    pub id: String,
    /// The file it is mounted as (absolute, clean); `None` with `env` only.
    pub target: Option<String>,
    /// The environment variable it is given as.
    pub env: Option<String>,
    /// A missing secret is an error (otherwise the mount is skipped).
    pub required: bool,
    /// The file's permission bits.
    pub mode: u32,
    /// The file's owner.
    pub uid: u32,
    /// The file's group.
    pub gid: u32,
}

/// One `--mount` of a RUN.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MountSpec {
    /// `type=bind`.
    Bind(BindMount),
    /// `type=cache`.
    Cache(CacheMount),
    /// `type=tmpfs`.
    Tmpfs(TmpfsMount),
    /// `type=secret`.
    Secret(SecretMount),
}

/// A `--mount` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// A key no mount type takes, or not this one.
    #[error("unknown key {key:?} for type={typ}")]
    UnknownKey {
        /// The key.
        key: String,
        /// The mount's type.
        typ: &'static str,
    },
    /// A type other than bind, cache, tmpfs, secret, ssh.
    #[error("unknown mount type {0:?}")]
    UnknownType(String),
    /// `type=ssh`.
    #[error("type=ssh is not supported: this builder forwards no SSH agent")]
    Ssh,
    /// A key's value is not one it takes.
    #[error("invalid value for {key}: {reason}")]
    Value {
        /// The key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// A key the type needs is missing.
    #[error("type={typ} needs {key}")]
    Missing {
        /// The mount's type.
        typ: &'static str,
        /// The key.
        key: &'static str,
    },
    /// The value is malformed (quotes, length).
    #[error("malformed mount: {0}")]
    Syntax(&'static str),
    /// Two mounts of one RUN at one target, or too many mounts.
    #[error("{0}")]
    Mounts(&'static str),
}

impl image_core::Classify for MountError {
    fn kind(&self) -> image_core::ErrorKind {
        match self {
            MountError::Ssh => image_core::ErrorKind::Unsupported,
            _ => image_core::ErrorKind::InvalidInput,
        }
    }
}

/// The fields of a `--mount` value, as Go's CSV reader splits one line.
fn fields(s: &str) -> Result<Vec<String>, MountError> {
    if s.len() > MAX_SPEC {
        return Err(MountError::Syntax("longer than 8 KiB"));
    }
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(MountError::Syntax("an unterminated quote")),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    out.push(field);
                    return Ok(out);
                }
                Some(',') => {}
                Some(_) => return Err(MountError::Syntax("text after a closing quote")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        out.push(field);
                        return Ok(out);
                    }
                    Some(',') => break,
                    Some('"') => return Err(MountError::Syntax("a quote inside a field")),
                    Some(c) => field.push(c),
                }
            }
        }
        out.push(field);
    }
}

fn bool_value(key: &str, v: Option<&str>) -> Result<bool, MountError> {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(_) => Err(MountError::Value {
            key: key.to_owned(),
            reason: "expected true or false",
        }),
    }
}

fn number(key: &str, v: &str, radix: u32) -> Result<u32, MountError> {
    u32::from_str_radix(v, radix).map_err(|_| MountError::Value {
        key: key.to_owned(),
        reason: if radix == 8 {
            "expected an octal number"
        } else {
            "expected a number"
        },
    })
}

/// `size=`: bytes, or with a `k`, `m`, `g` suffix (powers of 1024,
/// optionally followed by `b`/`ib`).
fn size(v: &str) -> Result<u64, MountError> {
    let bad = MountError::Value {
        key: "size".to_owned(),
        reason: "expected a size (bytes, or with k, m or g)",
    };
    let lower = v.to_ascii_lowercase();
    let t = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (digits, unit) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = digits.parse().map_err(|_| bad.clone())?;
    n.checked_mul(unit).ok_or(bad)
}

/// `path` made absolute against `workdir` and cleaned lexically.
pub(crate) fn clean_target(path: &str, workdir: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{workdir}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `path` cleaned as a path inside a root, relative (empty is the root).
fn clean_source(path: &str) -> String {
    clean_target(path, "/").trim_start_matches('/').to_owned()
}

fn target_of(v: &str, workdir: &str) -> Result<String, MountError> {
    if v.contains('\0') {
        return Err(MountError::Value {
            key: "target".to_owned(),
            reason: "holds a NUL",
        });
    }
    let t = clean_target(v, workdir);
    // The runtime's mount points for deeper targets could not be removed
    // from the layer (the RUN step handles MAX_TARGET_DEPTH components).
    if t.split('/').count() > MAX_TARGET_DEPTH || t.len() > 4096 {
        return Err(MountError::Value {
            key: "target".to_owned(),
            reason: "is deeper than 63 components or longer than 4096 bytes",
        });
    }
    if t == "/" {
        return Err(MountError::Value {
            key: "target".to_owned(),
            reason: "cannot be the root",
        });
    }
    Ok(t)
}

impl MountSpec {
    /// The `--mount` value `s` of a RUN whose working directory is
    /// `workdir` (see the module docs).
    ///
    /// # Errors
    /// [`MountError`]: an unknown key or type, `type=ssh`, a bad value, a
    /// missing target or id, bad quoting.
    pub fn parse(s: &str, workdir: &str) -> Result<MountSpec, MountError> {
        let mut pairs: Vec<(String, Option<String>)> = Vec::new();
        for f in fields(s)? {
            match f.split_once('=') {
                Some((k, v)) => pairs.push((k.trim().to_ascii_lowercase(), Some(v.to_owned()))),
                None => pairs.push((f.trim().to_ascii_lowercase(), None)),
            }
        }
        let typ = match pairs.iter().rev().find(|(k, _)| k == "type") {
            None => "bind",
            Some((_, v)) => match v.as_deref().unwrap_or("") {
                "bind" => "bind",
                "cache" => "cache",
                "tmpfs" => "tmpfs",
                "secret" => "secret",
                "ssh" => return Err(MountError::Ssh),
                other => return Err(MountError::UnknownType(other.to_owned())),
            },
        };
        let mut target: Option<String> = None;
        let mut from = None;
        let mut source = String::new();
        let mut id = None;
        let mut rw = false;
        let mut sharing = Sharing::Shared;
        let mut mode = None;
        let (mut uid, mut gid) = (0, 0);
        let mut tmpfs_size = None;
        let mut env = None;
        let mut required = false;
        for (k, v) in &pairs {
            let allowed = match k.as_str() {
                "type" => continue,
                "target" | "dst" | "destination" => true,
                "source" | "src" | "from" => typ != "tmpfs" && typ != "secret",
                "readonly" | "ro" | "rw" | "readwrite" => typ == "bind" || typ == "cache",
                "id" => typ == "cache" || typ == "secret",
                "sharing" => typ == "cache",
                "mode" | "uid" | "gid" => typ == "cache" || typ == "secret",
                "size" => typ == "tmpfs",
                "env" | "required" => typ == "secret",
                _ => false,
            };
            if !allowed {
                return Err(MountError::UnknownKey {
                    key: k.clone(),
                    typ,
                });
            }
            let value = |k: &str| {
                v.clone().ok_or_else(|| MountError::Value {
                    key: k.to_owned(),
                    reason: "needs a value (key=value)",
                })
            };
            match k.as_str() {
                "target" | "dst" | "destination" => target = Some(value(k)?),
                "source" | "src" => source = clean_source(&value(k)?),
                "from" => {
                    let f = value(k)?;
                    from = (!f.is_empty()).then_some(f);
                }
                "readonly" | "ro" => rw = !bool_value(k, v.as_deref())?,
                "rw" | "readwrite" => rw = bool_value(k, v.as_deref())?,
                "id" => id = Some(value(k)?),
                "sharing" => {
                    sharing = match value(k)?.as_str() {
                        "shared" => Sharing::Shared,
                        "private" => Sharing::Private,
                        "locked" => Sharing::Locked,
                        _ => {
                            return Err(MountError::Value {
                                key: k.clone(),
                                reason: "expected shared, private or locked",
                            })
                        }
                    }
                }
                "mode" => {
                    let m = number(k, &value(k)?, 8)?;
                    if m > 0o7777 {
                        return Err(MountError::Value {
                            key: k.clone(),
                            reason: "expected permission bits (at most 7777)",
                        });
                    }
                    mode = Some(m);
                }
                "uid" => uid = number(k, &value(k)?, 10)?,
                "gid" => gid = number(k, &value(k)?, 10)?,
                "size" => tmpfs_size = Some(size(&value(k)?)?),
                "env" => {
                    let e = value(k)?;
                    if e.is_empty() || e.contains(['=', '\0']) {
                        return Err(MountError::Value {
                            key: k.clone(),
                            reason: "expected a variable name",
                        });
                    }
                    env = Some(e);
                }
                "required" => required = bool_value(k, v.as_deref())?,
                _ => unreachable!("checked above"),
            }
        }
        let target = target
            .as_deref()
            .map(|t| target_of(t, workdir))
            .transpose()?;
        let need_target = |t: Option<String>| t.ok_or(MountError::Missing { typ, key: "target" });
        Ok(match typ {
            "bind" => MountSpec::Bind(BindMount {
                target: need_target(target)?,
                from,
                source,
                rw,
            }),
            "cache" => {
                let target = need_target(target)?;
                let id = CacheMountId::new(id.as_deref().unwrap_or(&target))?;
                MountSpec::Cache(CacheMount {
                    target,
                    id,
                    sharing,
                    from,
                    source,
                    mode: mode.unwrap_or(0o755),
                    uid,
                    gid,
                    read_only: !rw && pairs.iter().any(|(k, _)| k == "ro" || k == "readonly"),
                })
            }
            "tmpfs" => MountSpec::Tmpfs(TmpfsMount {
                target: need_target(target)?,
                size: tmpfs_size,
            }),
            _ => {
                let id = match (id, &target) {
                    (Some(id), _) if !id.is_empty() => id,
                    (_, Some(t)) => t.rsplit('/').next().unwrap_or_default().to_owned(),
                    _ => {
                        return Err(MountError::Missing {
                            typ,
                            key: "id or target",
                        })
                    }
                };
                CacheMountId::new(&id)?;
                // The id names a file of /run/secrets: one component.
                if id.contains('/') || id == "." || id == ".." {
                    return Err(MountError::Value {
                        key: "id".to_owned(),
                        reason: "cannot hold '/' or be '.' or '..'",
                    });
                }
                let target = match (target, &env) {
                    (Some(t), _) => Some(t),
                    (None, Some(_)) => None,
                    (None, None) => Some(format!("/run/secrets/{id}")),
                };
                MountSpec::Secret(SecretMount {
                    id,
                    target,
                    env,
                    required,
                    mode: mode.unwrap_or(0o400),
                    uid,
                    gid,
                })
            }
        })
    }

    /// Where in the container it is mounted (`None`: a secret given only as
    /// an environment variable).
    pub fn target(&self) -> Option<&str> {
        match self {
            MountSpec::Bind(b) => Some(&b.target),
            MountSpec::Cache(c) => Some(&c.target),
            MountSpec::Tmpfs(t) => Some(&t.target),
            MountSpec::Secret(s) => s.target.as_deref(),
        }
    }

    /// The part of the RUN's cache key this mount contributes: its type,
    /// target and options, never a secret's value nor a cache's content
    /// (a `from` is keyed by the caller, by the digest of what it reads).
    pub fn key(&self) -> String {
        match self {
            MountSpec::Bind(b) => format!(
                "bind,target={},from={},source={},rw={}",
                b.target,
                b.from.as_deref().unwrap_or(""),
                b.source,
                b.rw
            ),
            MountSpec::Cache(c) => format!(
                "cache,target={},id={},sharing={:?},from={},source={},mode={:o},uid={},gid={},ro={}",
                c.target,
                c.id,
                c.sharing,
                c.from.as_deref().unwrap_or(""),
                c.source,
                c.mode,
                c.uid,
                c.gid,
                c.read_only
            ),
            MountSpec::Tmpfs(t) => format!("tmpfs,target={},size={:?}", t.target, t.size),
            MountSpec::Secret(s) => format!(
                "secret,id={},target={},env={},required={},mode={:o},uid={},gid={}",
                s.id,
                s.target.as_deref().unwrap_or(""),
                s.env.as_deref().unwrap_or(""),
                s.required,
                s.mode,
                s.uid,
                s.gid
            ),
        }
    }
}

/// The `from` of each `--mount` value that parses and names one (the
/// stages and images a RUN reads).
pub fn froms(values: &[String]) -> Vec<String> {
    let specs: Vec<MountSpec> = values
        .iter()
        .filter_map(|v| MountSpec::parse(v, "/").ok())
        .collect();
    froms_of(&specs)
}

/// The distinct `from` of parsed mounts, in order.
pub fn froms_of(specs: &[MountSpec]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in specs {
        let f = match s {
            MountSpec::Bind(b) => &b.from,
            MountSpec::Cache(c) => &c.from,
            _ => continue,
        };
        if let Some(f) = f {
            if !out.contains(f) {
                out.push(f.clone());
            }
        }
    }
    out
}

/// The `--mount` values of one RUN, parsed: at most [`MAX_MOUNTS`], no two
/// at one target.
///
/// # Errors
/// The first value's [`MountError`], or [`MountError::Mounts`].
pub fn parse_all(values: &[String], workdir: &str) -> Result<Vec<MountSpec>, MountError> {
    if values.len() > MAX_MOUNTS {
        return Err(MountError::Mounts("a RUN has more than 64 mounts"));
    }
    let specs: Vec<MountSpec> = values
        .iter()
        .map(|v| MountSpec::parse(v, workdir))
        .collect::<Result<_, _>>()?;
    let mut targets: Vec<&str> = specs.iter().filter_map(MountSpec::target).collect();
    targets.sort_unstable();
    if targets.windows(2).any(|w| w[0] == w[1]) {
        return Err(MountError::Mounts("two mounts of a RUN have one target"));
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_parses_with_defaults_as_buildkit() {
        assert_eq!(
            MountSpec::parse("target=/src", "/").unwrap(),
            MountSpec::Bind(BindMount {
                target: "/src".into(),
                from: None,
                source: String::new(),
                rw: false
            })
        );
        let MountSpec::Cache(c) = MountSpec::parse("type=cache,target=go/cache", "/w").unwrap()
        else {
            panic!("not a cache")
        };
        assert_eq!(
            (c.target.as_str(), c.id.as_str()),
            ("/w/go/cache", "/w/go/cache")
        );
        assert_eq!(
            (c.mode, c.sharing, c.read_only),
            (0o755, Sharing::Shared, false)
        );
        let MountSpec::Secret(s) = MountSpec::parse("type=secret,id=tok", "/").unwrap() else {
            panic!("not a secret")
        };
        assert_eq!(s.target.as_deref(), Some("/run/secrets/tok"));
        assert_eq!((s.mode, s.required), (0o400, false));
        let MountSpec::Secret(s) =
            MountSpec::parse("type=secret,id=tok,env=TOK,required", "/").unwrap()
        else {
            panic!("not a secret")
        };
        assert_eq!(
            (s.target, s.env.as_deref(), s.required),
            (None, Some("TOK"), true)
        );
        assert_eq!(
            MountSpec::parse("type=tmpfs,size=2m,dst=/t", "/").unwrap(),
            MountSpec::Tmpfs(TmpfsMount {
                target: "/t".into(),
                size: Some(2 << 20)
            })
        );
        let MountSpec::Bind(b) =
            MountSpec::parse("\"source=a,b\",rw,from=build,target=/x/../y", "/").unwrap()
        else {
            panic!("not a bind")
        };
        assert_eq!(
            (b.source.as_str(), b.rw, b.target.as_str()),
            ("a,b", true, "/y")
        );
    }

    #[test]
    fn errors_name_their_key_or_type() {
        let e = MountSpec::parse("type=cache,target=/c,colour=red", "/").unwrap_err();
        assert_eq!(e.to_string(), "unknown key \"colour\" for type=cache");
        assert_eq!(
            MountSpec::parse("type=ssh", "/").unwrap_err(),
            MountError::Ssh
        );
        assert!(MountSpec::parse("type=ssh", "/")
            .unwrap_err()
            .to_string()
            .contains("ssh"));
        assert_eq!(
            MountSpec::parse("type=volume,target=/v", "/").unwrap_err(),
            MountError::UnknownType("volume".into())
        );
        assert!(matches!(
            MountSpec::parse("type=tmpfs,target=/t,size=lots", "/"),
            Err(MountError::Value { .. })
        ));
        assert!(matches!(
            MountSpec::parse("type=cache", "/"),
            Err(MountError::Missing { key: "target", .. })
        ));
        assert!(matches!(
            MountSpec::parse("type=tmpfs,target=/t,rw", "/"),
            Err(MountError::UnknownKey { .. })
        ));
        assert!(matches!(
            MountSpec::parse("target=/a\"b", "/"),
            Err(MountError::Syntax(_))
        ));
        assert!(matches!(
            parse_all(&["target=/a".into(), "type=tmpfs,target=/a/".into()], "/"),
            Err(MountError::Mounts(_))
        ));
    }

    #[test]
    fn a_secret_id_is_one_component_so_its_default_target_is_clean() {
        for id in ["..", ".", "a/b"] {
            assert!(
                matches!(
                    MountSpec::parse(&format!("type=secret,id={id}"), "/"),
                    Err(MountError::Value { .. })
                ),
                "{id}"
            );
        }
        // Else `/run/secrets/..` would be a second mount at /run, unseen.
        assert!(parse_all(
            &["type=secret,id=..".into(), "type=tmpfs,target=/run".into()],
            "/"
        )
        .is_err());
        let MountSpec::Secret(s) = MountSpec::parse("type=secret,id=..a", "/").unwrap() else {
            panic!("not a secret")
        };
        assert_eq!(s.target.as_deref(), Some("/run/secrets/..a"));
    }

    #[test]
    fn keys_in_any_order_give_one_spec() {
        let fields = [
            "type=cache",
            "target=/var/cache/apt",
            "id=apt",
            "sharing=locked",
            "mode=0700",
            "uid=100",
            "gid=200",
            "\"source=a,b\"",
            "from=build",
        ];
        let want = MountSpec::parse(&fields.join(","), "/w").unwrap();
        let mut seed = 0x1234_5678_u32;
        let mut order: Vec<&str> = fields.to_vec();
        for _ in 0..500 {
            for i in (1..order.len()).rev() {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                order.swap(i, seed as usize % (i + 1));
            }
            assert_eq!(MountSpec::parse(&order.join(","), "/w").unwrap(), want);
        }
        // A target as deep as the stub cleaner reaches, and one deeper.
        let deep = |n: usize| format!("target=/{}", vec!["d"; n].join("/"));
        assert!(MountSpec::parse(&deep(MAX_TARGET_DEPTH - 1), "/").is_ok());
        assert!(MountSpec::parse(&deep(MAX_TARGET_DEPTH), "/").is_err());
    }

    #[test]
    fn escaped_ids_round_trip_and_never_hold_a_dot() {
        // Generated ids of every byte class, short and long.
        let alphabet: Vec<char> = "aZ09-_./%: é\u{7f}".chars().collect();
        let mut seed = 0x9e37_79b9_u32;
        for n in 0..2000 {
            let len = 1 + n % 30;
            let id: String = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    alphabet[seed as usize % alphabet.len()]
                })
                .collect();
            let Ok(id) = CacheMountId::new(&id) else {
                continue;
            };
            let e = id.escaped();
            assert!(!e.contains('.') && !e.contains('/'), "{e}");
            assert!(e.len() <= 255);
            assert_eq!(CacheMountId::from_escaped(&e), Some(id));
        }
        assert_eq!(CacheMountId::from_escaped("x.lock"), None);
        assert_eq!(CacheMountId::from_escaped("%2e"), None);
        assert_eq!(CacheMountId::from_escaped("%41"), None);
    }
}
