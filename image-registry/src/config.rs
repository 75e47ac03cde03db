//! Where a registry is reached: its host, its mirrors, and whether plain
//! HTTP (or TLS without verification) is allowed for it.
//!
//! The file form follows containers' `registries.conf` (TOML) where it is
//! cheap to, and is also read as JSON of the same shape:
//!
//! ```toml
//! [[registry]]
//! location = "docker.io"
//! [[registry.mirror]]
//! location = "mirror.example:5000/dockerhub"
//! insecure = true
//!
//! [[registry]]
//! location = "127.0.0.1:5000"
//! insecure = true
//! ```
//!
//! A mirror's location may carry a path: the repository's path is put
//! after it. Only `location`, `insecure` and `mirror` are read; other keys
//! of registries.conf are ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use image_core::{Classify, ErrorKind};

/// The registry host behind `docker.io`, as Docker resolves it.
pub const DOCKER_HUB_HOST: &str = "registry-1.docker.io";

/// The largest configuration file read.
pub const MAX_CONFIG_FILE: u64 = 1024 * 1024;

/// Why a registry configuration cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read registry configuration {path:?}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_FILE`].
    #[error("registry configuration {path:?} is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// The TOML does not have registries.conf's shape.
    #[error("registry configuration {path:?} is not valid TOML of registries.conf's shape")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: toml::de::Error,
    },
    /// The JSON does not have the configuration's shape.
    #[error("registry configuration {path:?} is not valid JSON of its shape")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A location is not `host[:port][/path]`.
    #[error("registry location {0:?} is not host[:port][/path]")]
    Location(String),
}

impl Classify for ConfigError {
    fn kind(&self) -> ErrorKind {
        match self {
            ConfigError::Read { source, .. } => ErrorKind::from_io(source),
            _ => ErrorKind::InvalidInput,
        }
    }
}

/// Where requests for one registry go: a host (and a path prefix for a
/// mirror), over HTTPS unless it is insecure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]`.
    pub host: String,
    /// A path put before the repository (a mirror's namespace), without
    /// slashes at either end; empty for none.
    pub prefix: String,
    /// Plain HTTP, or HTTPS without certificate verification, is allowed.
    pub insecure: bool,
    /// Whether this is a mirror rather than the registry itself.
    pub mirror: bool,
}

impl Endpoint {
    /// The path of `repository` on this endpoint (the prefix put before it).
    pub fn repository_path(&self, repository: &str) -> String {
        if self.prefix.is_empty() {
            repository.to_owned()
        } else {
            format!("{}/{repository}", self.prefix)
        }
    }
}

/// One mirror of a registry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Mirror {
    /// `host[:port][/path]`.
    pub location: String,
    /// Plain HTTP or unverified TLS allowed for this mirror.
    #[serde(default)]
    pub insecure: bool,
}

/// What the configuration says about one registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// Plain HTTP or unverified TLS allowed (Docker's and crane's insecure
    /// registries).
    pub insecure: bool,
    /// Mirrors tried in order before the registry, for reads.
    pub mirrors: Vec<Mirror>,
}

#[derive(serde::Deserialize)]
struct FileShape {
    #[serde(default)]
    registry: Vec<FileRegistry>,
}

#[derive(serde::Deserialize)]
struct FileRegistry {
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    mirror: Vec<Mirror>,
}

/// The hosts configuration: mirrors and insecure flags per registry, the
/// loopback rule, and CA certificates trusted beside the system's.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    hosts: BTreeMap<String, HostConfig>,
    allow_loopback_http: bool,
    ca_certificates: Vec<Vec<u8>>,
}

impl RegistryConfig {
    /// No mirrors, no insecure host, loopback over TLS only.
    pub fn new() -> RegistryConfig {
        RegistryConfig::default()
    }

    /// Reads a file: JSON when its name ends in `.json`, TOML
    /// (registries.conf's shape) otherwise.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn load(path: &Path) -> Result<RegistryConfig, ConfigError> {
        let text = read_bounded(path)?;
        let shape: FileShape = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|source| ConfigError::Json {
                path: path.to_owned(),
                source,
            })?
        } else {
            toml::from_str(&text).map_err(|source| ConfigError::Toml {
                path: path.to_owned(),
                source,
            })?
        };
        let mut config = RegistryConfig::new();
        for r in shape.registry {
            split_location(&r.location)?;
            for m in &r.mirror {
                split_location(&m.location)?;
            }
            config.hosts.insert(
                r.location.clone(),
                HostConfig {
                    insecure: r.insecure,
                    mirrors: r.mirror,
                },
            );
        }
        Ok(config)
    }

    /// Sets what is known of registry `domain` (as references name it:
    /// `docker.io`, `127.0.0.1:5000`).
    pub fn with_host(mut self, domain: impl Into<String>, host: HostConfig) -> RegistryConfig {
        self.hosts.insert(domain.into(), host);
        self
    }

    /// Marks registry `domain` insecure (plain HTTP, unverified TLS), as
    /// `--insecure` does.
    pub fn with_insecure(mut self, domain: impl Into<String>) -> RegistryConfig {
        self.hosts.entry(domain.into()).or_default().insecure = true;
        self
    }

    /// Lets loopback registries (`localhost`, `127.0.0.0/8`, `[::1]`) be
    /// reached over plain HTTP without marking each insecure. Off by
    /// default.
    pub fn with_loopback_http(mut self, allow: bool) -> RegistryConfig {
        self.allow_loopback_http = allow;
        self
    }

    /// Trusts a CA (PEM) beside the system's roots.
    pub fn with_ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> RegistryConfig {
        self.ca_certificates.push(pem.into());
        self
    }

    /// The CA certificates (PEM) given beside the system's roots.
    pub fn ca_certificates(&self) -> &[Vec<u8>] {
        &self.ca_certificates
    }

    /// What the configuration says about `domain`.
    pub fn host(&self, domain: &str) -> Option<&HostConfig> {
        self.hosts.get(domain)
    }

    /// The endpoints of registry `domain`, in the order reads try them:
    /// each mirror, then the registry itself (`docker.io` is reached at
    /// [`DOCKER_HUB_HOST`]).
    pub fn endpoints(&self, domain: &str) -> Vec<Endpoint> {
        let host = self.hosts.get(domain);
        let mut out = Vec::new();
        for m in host.map(|h| h.mirrors.as_slice()).unwrap_or_default() {
            if let Ok((h, prefix)) = split_location(&m.location) {
                out.push(Endpoint {
                    insecure: m.insecure || (self.allow_loopback_http && is_loopback(h)),
                    host: h.to_owned(),
                    prefix: prefix.to_owned(),
                    mirror: true,
                });
            }
        }
        out.push(self.origin(domain));
        out
    }

    /// The registry itself, without mirrors: where writes and deletes go.
    pub fn origin(&self, domain: &str) -> Endpoint {
        let host = match domain {
            image_core::reference::DEFAULT_DOMAIN
            | image_core::reference::LEGACY_DEFAULT_DOMAIN => DOCKER_HUB_HOST,
            other => other,
        };
        Endpoint {
            host: host.to_owned(),
            prefix: String::new(),
            insecure: self.hosts.get(domain).is_some_and(|h| h.insecure)
                || (self.allow_loopback_http && is_loopback(host)),
            mirror: false,
        }
    }
}

/// A configuration file's bytes, at most [`MAX_CONFIG_FILE`]; `Ok(None)`
/// when the file is larger.
pub(crate) fn read_config_file(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_CONFIG_FILE + 1)
        .read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= MAX_CONFIG_FILE).then_some(bytes))
}

fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    let bytes = read_config_file(path)
        .map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| ConfigError::TooLarge {
            path: path.to_owned(),
            limit: MAX_CONFIG_FILE,
        })?;
    String::from_utf8(bytes).map_err(|_| ConfigError::Read {
        path: path.to_owned(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidData),
    })
}

/// Splits `host[:port][/path]` into the host and the path (without
/// slashes at either end).
fn split_location(location: &str) -> Result<(&str, &str), ConfigError> {
    let bad = || ConfigError::Location(location.chars().take(200).collect());
    let (host, prefix) = location.split_once('/').unwrap_or((location, ""));
    let prefix = prefix.trim_end_matches('/');
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    let prefix_ok = prefix
        .split('/')
        .all(|p| prefix.is_empty() || (!p.is_empty() && p != "." && p != ".."))
        && prefix.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_' | '/')
        });
    if !host_ok || !prefix_ok || location.contains("://") {
        return Err(bad());
    }
    Ok((host, prefix))
}

/// Whether `host[:port]` names the loopback interface.
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map(|(h, _)| h).unwrap_or(rest)
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    if name == "localhost" {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_io_goes_to_its_registry_host() {
        let c = RegistryConfig::new();
        let e = c.endpoints("docker.io");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].host, DOCKER_HUB_HOST);
        assert!(!e[0].insecure);
    }

    #[test]
    fn loopback_is_plain_http_only_when_asked() {
        assert!(!RegistryConfig::new().origin("127.0.0.1:5000").insecure);
        let c = RegistryConfig::new().with_loopback_http(true);
        assert!(c.origin("127.0.0.1:5000").insecure);
        assert!(c.origin("localhost:5000").insecure);
        assert!(c.origin("[::1]:5000").insecure);
        assert!(!c.origin("example.com:5000").insecure);
        assert!(!c.origin("127.0.0.1.example.com").insecure);
    }

    #[test]
    fn registries_conf_toml_and_json_give_mirrors_and_insecure() {
        let dir = tempfile::tempdir().unwrap();
        let toml_path = dir.path().join("registries.conf");
        std::fs::write(
            &toml_path,
            r#"
unqualified-search-registries = ["docker.io"]
[[registry]]
location = "docker.io"
[[registry.mirror]]
location = "mirror.example:5000/hub"
insecure = true
[[registry]]
location = "10.1.2.3:5000"
insecure = true
"#,
        )
        .unwrap();
        let json_path = dir.path().join("registries.json");
        std::fs::write(
            &json_path,
            r#"{"registry":[{"location":"docker.io","mirror":[{"location":"mirror.example:5000/hub","insecure":true}]},{"location":"10.1.2.3:5000","insecure":true}]}"#,
        )
        .unwrap();
        for path in [toml_path, json_path] {
            let c = RegistryConfig::load(&path).unwrap();
            let e = c.endpoints("docker.io");
            assert_eq!(e.len(), 2, "{path:?}");
            assert_eq!(e[0].host, "mirror.example:5000");
            assert_eq!(
                e[0].repository_path("library/busybox"),
                "hub/library/busybox"
            );
            assert!(e[0].insecure && e[0].mirror);
            assert_eq!(e[1].host, DOCKER_HUB_HOST);
            assert!(!e[1].insecure);
            assert!(c.origin("10.1.2.3:5000").insecure);
        }
    }

    #[test]
    fn bad_locations_and_oversized_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.conf");
        std::fs::write(&p, "[[registry]]\nlocation = \"https://x.example\"\n").unwrap();
        assert!(matches!(
            RegistryConfig::load(&p),
            Err(ConfigError::Location(_))
        ));
        std::fs::write(&p, "[[registry]]\nlocation = \"x.example/../up\"\n").unwrap();
        assert!(matches!(
            RegistryConfig::load(&p),
            Err(ConfigError::Location(_))
        ));
        std::fs::write(&p, vec![b'#'; MAX_CONFIG_FILE as usize + 1]).unwrap();
        let e = RegistryConfig::load(&p).unwrap_err();
        assert!(matches!(e, ConfigError::TooLarge { .. }));
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
}
