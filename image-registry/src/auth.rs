//! Credentials and the registry auth handshake.
//!
//! - [`Credentials`]: anonymous, a user and password (Basic, and the
//!   Bearer token flow's own Basic request), or an identity token (an
//!   OAuth refresh token, as `docker login` stores for some registries).
//! - [`DockerConfig`]: Docker's `config.json` and containers' `auth.json`
//!   (`auths` with base64 `user:password` in `auth`, `identitytoken`,
//!   `credHelpers` and `credsStore` run as `docker-credential-<name> get`).
//!   [`DockerConfig::default_files`] lists where they are looked for:
//!   `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`, then
//!   `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`).
//! - [`Challenge`]: a parsed `WWW-Authenticate` header.
//!
//! Every secret is a [`Secret`]: nothing here prints one.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use image_core::{Classify, ErrorKind};

use crate::config::{read_config_file, MAX_CONFIG_FILE};
use crate::secret::Secret;

/// The largest answer read from a credential helper.
const MAX_HELPER_OUTPUT: u64 = 64 * 1024;
/// The longest a credential helper may take to answer and end (Docker
/// waits for ever; a helper may ask for a keyring's password).
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(120);

/// What a client presents to one registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// No credentials: anonymous tokens only.
    #[default]
    Anonymous,
    /// A user name and password (or a personal access token).
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
    /// An identity (refresh) token for the token server's OAuth endpoint.
    IdentityToken(Secret),
}

impl Credentials {
    /// A user and password.
    pub fn basic(username: impl Into<String>, password: impl Into<Secret>) -> Credentials {
        Credentials::Basic {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The `Authorization` value for Basic auth, when these are a user and
    /// password.
    pub(crate) fn basic_header(&self) -> Option<String> {
        match self {
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()))
            )),
            _ => None,
        }
    }
}

/// Why credentials cannot be found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The auth file cannot be read.
    #[error("cannot read auth file {path:?}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The auth file is larger than the configuration limit.
    #[error("auth file {path:?} is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// The auth file is not JSON of Docker's shape.
    #[error("auth file {path:?} is not valid JSON of Docker's config shape")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// An `auth` entry is not base64 of `user:password`.
    #[error("auth entry for {registry:?} is not base64 of user:password")]
    BadAuthEntry {
        /// The registry key of the entry.
        registry: String,
    },
    /// A credential helper could not be run.
    #[error("cannot run credential helper {helper:?}")]
    HelperSpawn {
        /// The helper's executable name.
        helper: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A credential helper did not answer and end within its limit
    /// ([`HELPER_TIMEOUT`]); it was killed.
    #[error("credential helper {helper:?} did not answer for {registry:?} within {limit:?}")]
    HelperTimedOut {
        /// The helper's executable name.
        helper: String,
        /// The registry asked about.
        registry: String,
        /// The time it was given.
        limit: Duration,
    },
    /// A credential helper failed or answered something unreadable
    /// (more than 64 KiB among them).
    #[error("credential helper {helper:?} failed for {registry:?}")]
    HelperFailed {
        /// The helper's executable name.
        helper: String,
        /// The registry asked about.
        registry: String,
    },
}

impl Classify for CredentialError {
    fn kind(&self) -> ErrorKind {
        match self {
            CredentialError::Read { source, .. } | CredentialError::HelperSpawn { source, .. } => {
                ErrorKind::from_io(source)
            }
            CredentialError::HelperFailed { .. } => ErrorKind::Unauthenticated,
            CredentialError::HelperTimedOut { .. } => ErrorKind::Unavailable,
            _ => ErrorKind::InvalidInput,
        }
    }
}

#[derive(Debug, Default, serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<Secret>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<Secret>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<Secret>,
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

#[derive(Debug, Default, serde::Deserialize)]
struct FileShape {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

/// Credentials from Docker-format auth files, first file first.
#[derive(Debug, Default)]
pub struct DockerConfig {
    files: Vec<(PathBuf, FileShape)>,
}

impl DockerConfig {
    /// No files: every registry is anonymous.
    pub fn empty() -> DockerConfig {
        DockerConfig::default()
    }

    /// The files podman, skopeo and Docker read, in their order:
    /// `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
    /// `$DOCKER_CONFIG/config.json` or `$HOME/.docker/config.json`.
    pub fn default_files() -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
            out.push(PathBuf::from(p));
        }
        if let Some(p) = std::env::var_os("XDG_RUNTIME_DIR") {
            out.push(Path::new(&p).join("containers/auth.json"));
        }
        if let Some(p) = std::env::var_os("DOCKER_CONFIG") {
            out.push(Path::new(&p).join("config.json"));
        } else if let Some(home) = std::env::var_os("HOME") {
            out.push(Path::new(&home).join(".docker/config.json"));
        }
        out
    }

    /// Loads the [default files](DockerConfig::default_files) that exist.
    ///
    /// # Errors
    /// [`CredentialError`] for a file that exists but cannot be read.
    pub fn load_default() -> Result<DockerConfig, CredentialError> {
        DockerConfig::load(&DockerConfig::default_files())
    }

    /// Loads the given files, skipping those that do not exist.
    ///
    /// # Errors
    /// [`CredentialError`] for a file that exists but cannot be read.
    pub fn load(paths: &[PathBuf]) -> Result<DockerConfig, CredentialError> {
        let mut files = Vec::new();
        for path in paths {
            let text = match read_config_file(path) {
                Ok(Some(text)) => text,
                Ok(None) => {
                    return Err(CredentialError::TooLarge {
                        path: path.clone(),
                        limit: MAX_CONFIG_FILE,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(CredentialError::Read {
                        path: path.clone(),
                        source,
                    })
                }
            };
            let shape = serde_json::from_slice(&text).map_err(|source| CredentialError::Json {
                path: path.clone(),
                source,
            })?;
            files.push((path.clone(), shape));
        }
        Ok(DockerConfig { files })
    }

    /// The credentials for `repository` of registry `domain` (as references
    /// name it: `docker.io`, `ghcr.io`). Keys naming the repository
    /// (`host/ns/repo`, as podman allows) win over the host's; Docker Hub's
    /// key is `https://index.docker.io/v1/`. The first file with an entry
    /// wins; a `credHelpers` entry, then `credsStore`, come before `auths`
    /// within a file, as in Docker.
    ///
    /// # Errors
    /// A bad `auth` entry; a helper that cannot run or fails.
    pub fn credentials(
        &self,
        domain: &str,
        repository: &str,
    ) -> Result<Credentials, CredentialError> {
        let hub = is_docker_hub(domain);
        for (_, shape) in &self.files {
            let helper = shape
                .cred_helpers
                .iter()
                .find(|(k, _)| key_host(k) == domain || (hub && is_docker_hub(key_host(k))))
                .map(|(_, v)| v)
                .or(shape.creds_store.as_ref());
            if let Some(helper) = helper {
                let server = if hub {
                    "https://index.docker.io/v1/".to_owned()
                } else {
                    domain.to_owned()
                };
                if let Some(c) = run_helper(helper, &server)? {
                    return Ok(c);
                }
            }
            if let Some((key, entry)) = best_entry(&shape.auths, domain, repository) {
                return entry_credentials(key, entry);
            }
        }
        Ok(Credentials::Anonymous)
    }
}

fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// A key's `host[/path]`, without scheme or Docker Hub's `/v1/`.
fn key_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.trim_end_matches('/');
    k.strip_suffix("/v1")
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k)
}

fn best_entry<'a>(
    auths: &'a BTreeMap<String, AuthEntry>,
    domain: &str,
    repository: &str,
) -> Option<(&'a str, &'a AuthEntry)> {
    let mut best: Option<(usize, &'a str, &'a AuthEntry)> = None;
    for (key, entry) in auths {
        let k = key_host(key);
        let (host, path) = k.split_once('/').unwrap_or((k, ""));
        let host_ok = host == domain || (is_docker_hub(domain) && is_docker_hub(host));
        let path_ok = path.is_empty()
            || repository == path
            || repository
                .strip_prefix(path)
                .is_some_and(|rest| rest.starts_with('/'));
        if host_ok && path_ok && best.is_none_or(|(len, _, _)| path.len() > len) {
            best = Some((path.len(), key, entry));
        }
    }
    best.map(|(_, k, e)| (k, e))
}

fn entry_credentials(key: &str, entry: &AuthEntry) -> Result<Credentials, CredentialError> {
    if let Some(token) = entry.identity_token.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Credentials::IdentityToken(token.clone()));
    }
    if let Some(auth) = entry.auth.as_ref().filter(|a| !a.is_empty()) {
        let bad = || CredentialError::BadAuthEntry {
            registry: key.to_owned(),
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.expose().trim())
            .map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (user, password) = decoded.split_once(':').ok_or_else(bad)?;
        return Ok(Credentials::basic(user, password));
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) => Ok(Credentials::basic(u.clone(), p.clone())),
        _ => Ok(Credentials::Anonymous),
    }
}

#[derive(serde::Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: Secret,
}

/// Runs `docker-credential-<helper> get` with `server` on its input.
/// `None` when the helper knows no credentials for it.
fn run_helper(helper: &str, server: &str) -> Result<Option<Credentials>, CredentialError> {
    let program = format!("docker-credential-{helper}");
    let failed = || CredentialError::HelperFailed {
        helper: program.clone(),
        registry: server.to_owned(),
    };
    if helper.is_empty() || helper.contains('/') {
        return Err(failed());
    }
    run_program(&program, server, HELPER_TIMEOUT)
}

/// Runs credential helper `program` with `server` on its input: its
/// answer read (at most [`MAX_HELPER_OUTPUT`] bytes, on a thread) and its
/// end awaited for at most `limit` in all, then it is killed. (A process
/// of its own that keeps its output open keeps the reading thread until
/// it closes it; the caller goes on.)
fn run_program(
    program: &str,
    server: &str,
    limit: Duration,
) -> Result<Option<Credentials>, CredentialError> {
    let failed = || CredentialError::HelperFailed {
        helper: program.to_owned(),
        registry: server.to_owned(),
    };
    let timed_out = || CredentialError::HelperTimedOut {
        helper: program.to_owned(),
        registry: server.to_owned(),
        limit,
    };
    let spawn_error = |source| CredentialError::HelperSpawn {
        helper: program.to_owned(),
        source,
    };
    let deadline = Instant::now() + limit;
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(spawn_error)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading makes this fail: its status
        // tells what happened. (The server's name fits in the pipe.)
        let _ = stdin.write_all(server.as_bytes());
    }
    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.take(MAX_HELPER_OUTPUT + 1).read_to_end(&mut out);
            let _ = tx.send(out);
        });
    }
    let stop = |mut child: Child, e: CredentialError| {
        let _ = child.kill();
        let _ = child.wait();
        Err(e)
    };
    let out = match rx.recv_timeout(limit) {
        Ok(out) => out,
        Err(mpsc::RecvTimeoutError::Disconnected) => Vec::new(),
        Err(mpsc::RecvTimeoutError::Timeout) => return stop(child, timed_out()),
    };
    if out.len() as u64 > MAX_HELPER_OUTPUT {
        return stop(child, failed());
    }
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => return stop(child, timed_out()),
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(source) => return stop(child, spawn_error(source)),
        }
    };
    if !status.success() {
        // Docker's helpers say "credentials not found in native keychain"
        // and exit 1 when they know nothing of the server.
        if String::from_utf8_lossy(&out).contains("credentials not found") {
            return Ok(None);
        }
        return Err(failed());
    }
    let answer: HelperAnswer = serde_json::from_slice(&out).map_err(|_| failed())?;
    if answer.username == "<token>" {
        return Ok(Some(Credentials::IdentityToken(answer.secret)));
    }
    Ok(Some(Credentials::basic(answer.username, answer.secret)))
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lower-case (`bearer`, `basic`).
    pub scheme: String,
    /// Its parameters, names lower-case (`realm`, `service`, `scope`).
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// Parses a header holding one or more challenges and returns them in
    /// order. Malformed parameters end the parse; what was read is kept.
    pub fn parse_all(header: &str) -> Vec<Challenge> {
        let mut out: Vec<Challenge> = Vec::new();
        let mut rest = header.trim_start();
        while !rest.is_empty() {
            // A token: a scheme, or a parameter name.
            let end = rest.find([' ', '=', ',']).unwrap_or(rest.len());
            let token = &rest[..end];
            let after = rest[end..].trim_start();
            if let Some(value_part) = after.strip_prefix('=') {
                let Some(current) = out.last_mut() else {
                    return out;
                };
                let value_part = value_part.trim_start();
                let (value, tail) = if let Some(q) = value_part.strip_prefix('"') {
                    match parse_quoted(q) {
                        Some(v) => v,
                        None => return out,
                    }
                } else {
                    let e = value_part.find(',').unwrap_or(value_part.len());
                    (value_part[..e].trim().to_owned(), &value_part[e..])
                };
                current.params.insert(token.to_ascii_lowercase(), value);
                rest = tail.trim_start().trim_start_matches(',').trim_start();
            } else {
                if token.is_empty() {
                    rest = after.trim_start_matches(',').trim_start();
                    continue;
                }
                out.push(Challenge {
                    scheme: token.to_ascii_lowercase(),
                    params: BTreeMap::new(),
                });
                rest = after.trim_start_matches(',').trim_start();
            }
        }
        out
    }

    /// A parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Reads a quoted string after its opening quote: the value and the rest.
fn parse_quoted(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &s[i + 1..])),
            '\\' => value.push(chars.next()?.1),
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_parsed_with_quotes_and_several_schemes() {
        let c = Challenge::parse_all(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push repository:c:pull", Basic realm="x\"y""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.example/token"));
        assert_eq!(c[0].param("service"), Some("registry.example"));
        assert_eq!(
            c[0].param("scope"),
            Some("repository:a/b:pull,push repository:c:pull")
        );
        assert_eq!(c[1].scheme, "basic");
        assert_eq!(c[1].param("realm"), Some("x\"y"));
        // Unterminated quote: what was read is kept, no panic.
        let c = Challenge::parse_all(r#"Bearer realm="abc"#);
        assert_eq!(c.len(), 1);
        assert!(c[0].params.is_empty());
    }

    #[test]
    fn docker_config_auths_helpers_and_repository_keys() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("auth.json");
        let second = dir.path().join("config.json");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        std::fs::write(
            &first,
            format!(
                r#"{{"auths":{{"reg.example:5000/team/app":{{"auth":"{}"}},"reg.example:5000":{{"auth":"{}"}}}}}}"#,
                b64("teamuser:teampw"),
                b64("user:pw:with:colons")
            ),
        )
        .unwrap();
        std::fs::write(
            &second,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},"other.example":{{"identitytoken":"tok"}}}}}}"#,
                b64("hubuser:hubpw")
            ),
        )
        .unwrap();
        let c = DockerConfig::load(&[first, dir.path().join("missing.json"), second]).unwrap();
        assert_eq!(
            c.credentials("reg.example:5000", "team/app").unwrap(),
            Credentials::basic("teamuser", "teampw")
        );
        assert_eq!(
            c.credentials("reg.example:5000", "team/application")
                .unwrap(),
            Credentials::basic("user", "pw:with:colons")
        );
        assert_eq!(
            c.credentials("docker.io", "library/busybox").unwrap(),
            Credentials::basic("hubuser", "hubpw")
        );
        assert_eq!(
            c.credentials("other.example", "x").unwrap(),
            Credentials::IdentityToken(Secret::new("tok"))
        );
        assert_eq!(
            c.credentials("nowhere.example", "x").unwrap(),
            Credentials::Anonymous
        );
        let debug = format!("{c:?} {:?}", c.credentials("docker.io", "x").unwrap());
        assert!(
            !debug.contains("hubpw") && !debug.contains(&b64("hubuser:hubpw")),
            "{debug}"
        );
    }

    #[test]
    fn a_credential_helper_is_run_and_its_secret_kept_out_of_errors() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-r1test");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread server\ncase \"$server\" in\n  helped.example) echo '{\"ServerURL\":\"helped.example\",\"Username\":\"hu\",\"Secret\":\"hs\"}';;\n  *) echo 'credentials not found in native keychain'; exit 1;;\nesac\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cfg = dir.path().join("config.json");
        std::fs::write(&cfg, r#"{"credsStore":"r1test"}"#).unwrap();
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        std::env::set_var("PATH", path);
        let c = DockerConfig::load(&[cfg]).unwrap();
        assert_eq!(
            c.credentials("helped.example", "x").unwrap(),
            Credentials::basic("hu", "hs")
        );
        assert_eq!(
            c.credentials("unknown.example", "x").unwrap(),
            Credentials::Anonymous
        );
    }

    #[test]
    fn a_credential_helper_that_hangs_or_floods_is_stopped_within_its_limit() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for (name, script) in [
            // Never answers (for a minute).
            ("hang", "#!/bin/sh\nexec sleep 60\n"),
            // Megabytes, then still running.
            (
                "flood",
                "#!/bin/sh\nhead -c 4000000 /dev/zero | tr '\\0' x\nexec sleep 60\n",
            ),
        ] {
            let helper = dir.path().join(format!("docker-credential-{name}"));
            std::fs::write(&helper, script).unwrap();
            std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
            let program = helper.to_str().unwrap().to_owned();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(run_program(&program, "x", Duration::from_millis(500)));
            });
            let result = rx
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("helper {name} still runs"));
            let e = result.unwrap_err();
            let expected = match name {
                "hang" => ErrorKind::Unavailable,
                _ => ErrorKind::Unauthenticated,
            };
            assert_eq!(e.kind(), expected, "{name}: {e:?}");
        }
    }
}
