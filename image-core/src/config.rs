//! The image config (OCI `application/vnd.oci.image.config.v1+json` or
//! Docker `application/vnd.docker.container.image.v1+json`), faithful to both.
//!
//! oci-spec's `ImageConfiguration` drops Docker's fields (Healthcheck,
//! OnBuild, Shell, ArgsEscaped, container_config, docker_version) and keeps
//! labels in a `HashMap`. [`ConfigFile`] models every field of both formats,
//! keeps labels sorted, and keeps any field it does not know in a flattened
//! map at each level, so a read-modify-write loses nothing. [`ImageConfig`]
//! pairs it with the raw bytes, whose digest is the image ID; a changed
//! config is written through the canonical writer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::Digest;
use crate::error::{Classify, ErrorKind};
use crate::json::to_canonical_vec;
use crate::manifest::ParseError;
use crate::media_type::MediaType;

/// The root filesystem section: the diff IDs of the layers, bottom first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub fs_type: String,
    /// The digests of the uncompressed layer tars, bottom first.
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// One entry of the image history (`docker history`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct History {
    /// RFC 3339 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The command that made this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Who made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// A comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the step made no layer (ENV, CMD, ...).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Docker's health check settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// The test: `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    /// Nanoseconds between checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    /// Nanoseconds before a check is considered hung.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// Nanoseconds of start-up grace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
    /// Nanoseconds between checks during the start period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<i64>,
    /// Consecutive failures before unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// How to run a container of the image (the `config` section).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// `user`, `uid`, `user:group` or `uid:gid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Ports as `port/proto`, values empty objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    /// `KEY=value` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// The entrypoint argv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// The default arguments (or command when there is no entrypoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Volume mount points, values empty objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Value>>,
    /// The working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Labels, sorted by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// The signal that stops the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Docker: the health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// Docker: instructions run when the image is used as a build base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// Docker: the shell for shell-form instructions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// Docker (Windows): the command line is already escaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    /// Fields not modelled here (Hostname, AttachStdin, Image, ...), kept verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The most entries one list or map of a [`RunConfig`] may hold (Env,
/// Cmd, Entrypoint, Shell, OnBuild, Healthcheck's Test, Labels,
/// ExposedPorts, Volumes). Docker sets no limit; real images hold tens to
/// a few hundred, and a process cannot even receive more than the kernel's
/// `ARG_MAX` (a quarter of the stack limit, 2 MiB by default) of argv and
/// environment together.
pub const MAX_CONFIG_ENTRIES: usize = 65_536;

/// The most bytes the strings of one list or map of a [`RunConfig`] may
/// hold together (keys and values), see [`MAX_CONFIG_ENTRIES`].
pub const MAX_CONFIG_FIELD_BYTES: usize = 4 << 20;

/// A [`RunConfig`] field holds more than [`MAX_CONFIG_ENTRIES`] entries or
/// [`MAX_CONFIG_FIELD_BYTES`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image config field {field} holds {found} {unit}, above the limit of {limit}")]
pub struct ConfigLimitError {
    /// The field, as the config names it (`Env`, `Labels`, ...).
    pub field: &'static str,
    /// `entries` or `bytes`.
    pub unit: &'static str,
    /// What the config holds.
    pub found: usize,
    /// The limit.
    pub limit: usize,
}

impl Classify for ConfigLimitError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

fn check_field<'a>(
    field: &'static str,
    entries: usize,
    strings: impl Iterator<Item = &'a str>,
) -> Result<(), ConfigLimitError> {
    if entries > MAX_CONFIG_ENTRIES {
        return Err(ConfigLimitError {
            field,
            unit: "entries",
            found: entries,
            limit: MAX_CONFIG_ENTRIES,
        });
    }
    let bytes = strings.fold(0usize, |n, s| n.saturating_add(s.len()));
    if bytes > MAX_CONFIG_FIELD_BYTES {
        return Err(ConfigLimitError {
            field,
            unit: "bytes",
            found: bytes,
            limit: MAX_CONFIG_FIELD_BYTES,
        });
    }
    Ok(())
}

impl RunConfig {
    /// Checks every list and map against [`MAX_CONFIG_ENTRIES`] and
    /// [`MAX_CONFIG_FIELD_BYTES`], so that what is derived from the config
    /// (a container's environment and argv) stays bounded. A map's values
    /// other than strings (ExposedPorts' and Volumes' empty objects) are
    /// not counted.
    ///
    /// # Errors
    /// [`ConfigLimitError`] naming the first field over a limit.
    pub fn check_limits(&self) -> Result<(), ConfigLimitError> {
        let lists: [(&'static str, Option<&Vec<String>>); 6] = [
            ("Env", self.env.as_ref()),
            ("Cmd", self.cmd.as_ref()),
            ("Entrypoint", self.entrypoint.as_ref()),
            ("Shell", self.shell.as_ref()),
            ("OnBuild", self.on_build.as_ref()),
            (
                "Healthcheck.Test",
                self.healthcheck.as_ref().and_then(|h| h.test.as_ref()),
            ),
        ];
        for (field, list) in lists {
            if let Some(l) = list {
                check_field(field, l.len(), l.iter().map(String::as_str))?;
            }
        }
        if let Some(m) = &self.labels {
            let strings = m.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]);
            check_field("Labels", m.len(), strings)?;
        }
        for (field, map) in [
            ("ExposedPorts", &self.exposed_ports),
            ("Volumes", &self.volumes),
        ] {
            if let Some(m) = map {
                check_field(field, m.len(), m.keys().map(String::as_str))?;
            }
        }
        Ok(())
    }
}

/// The whole image config document, OCI and Docker fields alike.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ConfigFile {
    /// RFC 3339 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Who made the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture (`amd64`, `arm64`, ...).
    #[serde(default)]
    pub architecture: String,
    /// Operating system (`linux`).
    #[serde(default)]
    pub os: String,
    /// OS version (Windows).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// Required OS features.
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    /// CPU variant (`v7`, `v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// How to run the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RunConfig>,
    /// The layers' diff IDs.
    #[serde(default)]
    pub rootfs: RootFs,
    /// The history, one entry per build step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<History>>,
    /// Docker: the config of the container the image was committed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_config: Option<RunConfig>,
    /// Docker: the ID of the container the image was committed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Docker: the version of the daemon that made the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_version: Option<String>,
    /// Fields not modelled here, kept verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl ConfigFile {
    /// A new config for `os`/`architecture` with no layers.
    pub fn new(os: &str, architecture: &str) -> ConfigFile {
        ConfigFile {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            rootfs: RootFs {
                fs_type: "layers".into(),
                ..RootFs::default()
            },
            ..ConfigFile::default()
        }
    }

    /// A new config for `platform` (OS, architecture, variant, OS version
    /// and features) with no layers.
    pub fn for_platform(platform: &crate::Platform) -> ConfigFile {
        ConfigFile {
            os_version: platform.os_version.clone(),
            os_features: (!platform.os_features.is_empty()).then(|| platform.os_features.clone()),
            variant: platform.variant.clone(),
            ..ConfigFile::new(&platform.os, &platform.architecture)
        }
    }

    /// Converts to oci-spec's type (lossy: Docker's fields are dropped).
    ///
    /// # Errors
    /// [`ParseError::Json`] if oci-spec rejects the document.
    pub fn to_oci(&self) -> Result<oci_spec::image::ImageConfiguration, ParseError> {
        let v = serde_json::to_value(self).map_err(|source| ParseError::Serialize {
            what: "image config",
            source,
        })?;
        serde_json::from_value(v).map_err(|source| ParseError::Json {
            what: "image config",
            source,
        })
    }
}

/// An image config with its raw bytes; the digest of the bytes is the image ID.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageConfig {
    raw: Vec<u8>,
    digest: Digest,
    file: ConfigFile,
}

impl ImageConfig {
    /// Parses a config from its bytes, as stored.
    ///
    /// # Errors
    /// [`ParseError::Json`] when the bytes are not a config object.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<ImageConfig, ParseError> {
        let raw = bytes.into();
        let file: ConfigFile = serde_json::from_slice(&raw).map_err(|source| ParseError::Json {
            what: "image config",
            source,
        })?;
        let digest = Digest::sha256(&raw);
        Ok(ImageConfig { raw, digest, file })
    }

    /// The same config keyed by its digest in `algorithm`: a config a
    /// manifest names by a sha512 digest is that blob, and its ID is that
    /// digest (as containerd takes the config descriptor's digest). Hashes
    /// again only when `algorithm` is not the one the config is keyed by.
    pub fn with_algorithm(mut self, algorithm: crate::digest::Algorithm) -> ImageConfig {
        if self.digest.algorithm() != algorithm {
            self.digest = Digest::of_bytes(algorithm, &self.raw);
        }
        self
    }

    /// Serialises `file` canonically.
    ///
    /// # Errors
    /// [`ParseError::Serialize`] for values JSON cannot hold.
    pub fn new(file: ConfigFile) -> Result<ImageConfig, ParseError> {
        let raw = to_canonical_vec(&file).map_err(|source| ParseError::Serialize {
            what: "image config",
            source,
        })?;
        let digest = Digest::sha256(&raw);
        Ok(ImageConfig { raw, digest, file })
    }

    /// A changed copy, serialised canonically.
    ///
    /// # Errors
    /// As [`ImageConfig::new`].
    pub fn modify(&self, f: impl FnOnce(&mut ConfigFile)) -> Result<ImageConfig, ParseError> {
        let mut file = self.file.clone();
        f(&mut file);
        ImageConfig::new(file)
    }

    /// The bytes as stored.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The digest of the raw bytes.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The image ID: the config digest.
    pub fn image_id(&self) -> &Digest {
        &self.digest
    }

    /// The parsed document.
    pub fn file(&self) -> &ConfigFile {
        &self.file
    }

    /// The diff IDs of the layers, bottom first.
    pub fn diff_ids(&self) -> &[Digest] {
        &self.file.rootfs.diff_ids
    }

    /// The chain IDs of the layers, bottom first.
    pub fn chain_ids(&self) -> Vec<Digest> {
        crate::ids::chain_ids(self.diff_ids())
    }

    /// The history entries (empty when the image has none).
    pub fn history(&self) -> &[History] {
        self.file.history.as_deref().unwrap_or(&[])
    }

    /// A descriptor of this config with the given media type.
    pub fn descriptor(&self, media_type: &MediaType) -> oci_spec::image::Descriptor {
        crate::manifest::descriptor(media_type, &self.digest, self.raw.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Docker config as `docker save` writes it (trimmed), with the
    /// fields oci-spec drops.
    const DOCKER_CONFIG: &str = r##"{"architecture":"amd64","config":{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"],"Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":30000000000,"Retries":3},"ArgsEscaped":true,"Image":"sha256:abc","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":["RUN echo hi"],"Shell":["/bin/bash","-c"],"Labels":{"z":"1","a":"2"}},"container":"6f3c","container_config":{"Hostname":"6f3c","Cmd":["/bin/sh","-c","#(nop) ","CMD [\"sh\"]"],"Labels":{}},"created":"2023-05-19T20:19:24.224371562Z","docker_version":"20.10.23","history":[{"created":"2023-05-19T20:19:24.224371562Z","created_by":"/bin/sh -c #(nop) ADD file:abc in / "},{"created":"2023-05-19T20:19:24.3Z","created_by":"/bin/sh -c #(nop)  CMD [\"sh\"]","empty_layer":true}],"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:9547b4c33213e630a0ca602a989ecc094e042146ae8afa502e1e65af6473db03"]},"moby.extra":{"x":1}}"##;

    #[test]
    fn docker_fields_survive_read_modify_write() {
        let c = ImageConfig::from_bytes(DOCKER_CONFIG).expect("parses");
        assert_eq!(c.image_id(), &Digest::sha256(DOCKER_CONFIG.as_bytes()));
        let run = c.file().config.as_ref().expect("config");
        assert_eq!(
            run.shell.as_deref(),
            Some(&["/bin/bash".to_string(), "-c".into()][..])
        );
        assert_eq!(run.args_escaped, Some(true));
        assert_eq!(
            run.healthcheck.as_ref().and_then(|h| h.interval),
            Some(30_000_000_000)
        );
        assert_eq!(c.history().len(), 2);
        assert!(c.history()[1].empty_layer);
        let changed = c
            .modify(|f| {
                if let Some(cfg) = f.config.as_mut() {
                    cfg.env.get_or_insert_with(Vec::new).push("A=1".into());
                }
            })
            .expect("modify");
        let text = String::from_utf8(changed.raw().to_vec()).expect("utf8");
        for needle in [
            r#""Healthcheck":{"Interval":30000000000,"Retries":3,"Test":["CMD-SHELL","true"]}"#,
            r#""OnBuild":["RUN echo hi"]"#,
            r#""Shell":["/bin/bash","-c"]"#,
            r#""ArgsEscaped":true"#,
            r#""docker_version":"20.10.23""#,
            r#""container_config":{"Cmd""#,
            r#""Labels":{"a":"2","z":"1"}"#,
            r#""moby.extra":{"x":1}"#,
            r#""Image":"sha256:abc""#,
            r#""A=1"]"#,
        ] {
            assert!(text.contains(needle), "missing {needle} in {text}");
        }
        let back = ImageConfig::from_bytes(changed.raw().to_vec()).expect("reparse");
        assert_eq!(back.file(), changed.file());
        assert_eq!(
            ImageConfig::new(back.file().clone()).expect("new").raw(),
            changed.raw()
        );
    }

    #[test]
    fn config_limits_name_the_field() {
        let many = |n: usize| (0..n).map(|i| format!("K{i}=v")).collect::<Vec<_>>();
        let ok = RunConfig {
            env: Some(many(MAX_CONFIG_ENTRIES)),
            labels: Some((0..1000).map(|i| (format!("l{i}"), "v".into())).collect()),
            ..RunConfig::default()
        };
        assert_eq!(ok.check_limits(), Ok(()));
        let cases: Vec<(&str, &str, RunConfig)> = vec![
            (
                "Env",
                "entries",
                RunConfig {
                    env: Some(many(MAX_CONFIG_ENTRIES + 1)),
                    ..RunConfig::default()
                },
            ),
            (
                "Env",
                "bytes",
                RunConfig {
                    env: Some(vec!["A".repeat(MAX_CONFIG_FIELD_BYTES + 1)]),
                    ..RunConfig::default()
                },
            ),
            (
                "Cmd",
                "entries",
                RunConfig {
                    cmd: Some(many(MAX_CONFIG_ENTRIES + 1)),
                    ..RunConfig::default()
                },
            ),
            (
                "Entrypoint",
                "entries",
                RunConfig {
                    entrypoint: Some(many(MAX_CONFIG_ENTRIES + 1)),
                    ..RunConfig::default()
                },
            ),
            (
                "OnBuild",
                "bytes",
                RunConfig {
                    on_build: Some(vec!["x".repeat(3 << 20), "y".repeat(2 << 20)]),
                    ..RunConfig::default()
                },
            ),
            (
                "Labels",
                "bytes",
                RunConfig {
                    labels: Some([("k".into(), "v".repeat(MAX_CONFIG_FIELD_BYTES))].into()),
                    ..RunConfig::default()
                },
            ),
            (
                "ExposedPorts",
                "entries",
                RunConfig {
                    exposed_ports: Some(
                        (0..=MAX_CONFIG_ENTRIES)
                            .map(|i| (format!("{i}/tcp"), Value::Object(Default::default())))
                            .collect(),
                    ),
                    ..RunConfig::default()
                },
            ),
            (
                "Volumes",
                "entries",
                RunConfig {
                    volumes: Some(
                        (0..=MAX_CONFIG_ENTRIES)
                            .map(|i| (format!("/v{i}"), Value::Object(Default::default())))
                            .collect(),
                    ),
                    ..RunConfig::default()
                },
            ),
        ];
        for (field, unit, c) in cases {
            let e = c.check_limits().expect_err(field);
            assert_eq!((e.field, e.unit), (field, unit));
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            assert!(e.to_string().contains(field), "{e}");
        }
    }

    #[test]
    fn chain_ids_and_oci_conversion() {
        let c = ImageConfig::from_bytes(DOCKER_CONFIG).expect("parses");
        assert_eq!(c.chain_ids(), c.diff_ids());
        let oci = c.file().to_oci().expect("oci");
        assert_eq!(oci.rootfs().diff_ids().len(), 1);
        assert!(matches!(
            ImageConfig::from_bytes("{\"rootfs\": 3}"),
            Err(ParseError::Json { .. })
        ));
    }
}
