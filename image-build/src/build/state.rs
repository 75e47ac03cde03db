//! A stage's state as the build walks it, and the instructions that change
//! only the config, applied as Docker applies them.

use std::collections::{BTreeMap, HashMap};

use image_core::config::{
    ConfigFile, ConfigLimitError, HealthConfig, History, RunConfig, MAX_CONFIG_ENTRIES,
    MAX_CONFIG_FIELD_BYTES,
};
use image_core::Platform;
use image_store::Image;

use super::error::StepError;
use crate::cache::CacheKey;
use crate::dockerfile::{Command, CommandLine, Healthcheck};
use crate::Layer;

/// One history entry the build added, with the layer it made (none for an
/// `empty_layer` entry).
#[derive(Debug, Clone)]
pub struct Entry {
    /// The history entry.
    pub history: History,
    /// The layer, for a step that made one.
    pub layer: Option<Layer>,
}

/// Where a stage stands: the image it started from (through other stages),
/// its config, what the build added to it, its layers and snapshot.
#[derive(Debug, Clone)]
pub struct State {
    /// The image at the bottom of the stage's chain of FROMs, or `None` for
    /// scratch.
    pub base: Option<Image>,
    /// The config as it stands (its `history` and `rootfs` are the base's).
    pub config: ConfigFile,
    /// What the build added on top of `base`, in order.
    pub added: Vec<Entry>,
    /// Every layer, the base's first.
    pub layers: Vec<Layer>,
    /// The committed snapshot of `layers` (their chain ID), when it is known
    /// to exist; `None` after cache hits until a step needs a filesystem.
    pub top: Option<String>,
    /// Whether CMD was set in this stage (ENTRYPOINT then keeps it).
    pub cmd_set: bool,
    /// The cache key of the state: the base's, then each step's.
    pub key: CacheKey,
    /// Where each name of `Env` is in it, made on the first ENV, so that
    /// each pair of an ENV costs the same however long `Env` is.
    env_index: Option<HashMap<String, usize>>,
    /// The bytes of `Env`, `Labels` and `Volumes` (as
    /// [`RunConfig::check_limits`] counts them), each counted on the
    /// first instruction that changes the field, then kept up to date, so
    /// that the bound costs the same however much a field holds.
    field_bytes: [Option<usize>; 3],
    /// The bytes of the text of the history entries in `added`.
    history_bytes: usize,
    /// The ports EXPOSE ranges have named so far, repeats included.
    ports_named: usize,
    /// The ENV of the stage's expansion scope when the stage ended (the
    /// same map as [`State::env_map`]), handed on to the stage built from
    /// this one, so that a chain of stages does not remake it per stage.
    scope_env: Option<BTreeMap<String, String>>,
}

/// The layers of an image (its descriptors with their diff IDs).
pub fn image_layers(image: &Image) -> Vec<Layer> {
    image
        .layers()
        .iter()
        .zip(image.diff_ids())
        .map(|(d, id)| Layer {
            descriptor: d.clone(),
            diff_id: id.clone(),
        })
        .collect()
}

/// The most ports the EXPOSE instructions of a stage may name, ranges
/// expanded and repeats included (the distinct ones are bounded by
/// [`MAX_CONFIG_ENTRIES`]).
pub const MAX_EXPOSE_PORTS: usize = 4 * MAX_CONFIG_ENTRIES;

/// The most bytes the text (`created_by`, `comment`, `author`) of the
/// history entries a build adds to one image may take: image-store's
/// `MAX_DOCUMENT_SIZE`, since a config larger than that is written but
/// never read back. Each entry is bounded by the instruction that makes it
/// (an expanded ENV or LABEL by `MAX_EXPANDED`, a RUN by the build args it
/// sees); this bounds their sum.
pub const MAX_HISTORY_BYTES: usize = image_store::refs::MAX_DOCUMENT_SIZE as usize;

/// Which of [`State::field_bytes`] a field's count is.
const ENV: usize = 0;
const LABELS: usize = 1;
const VOLUMES: usize = 2;

/// The bytes of a history entry's text.
fn history_text(h: &History) -> usize {
    [&h.created_by, &h.comment, &h.author]
        .iter()
        .map(|s| s.as_ref().map_or(0, String::len))
        .sum()
}

/// Fails when a config field's `found` (of `unit`) is over `limit`.
fn within(
    field: &'static str,
    unit: &'static str,
    found: usize,
    limit: usize,
) -> Result<(), StepError> {
    if found > limit {
        return Err(StepError::Limit(ConfigLimitError {
            field,
            unit,
            found,
            limit,
        }));
    }
    Ok(())
}

/// Fails when a config field's strings take more than
/// [`MAX_CONFIG_FIELD_BYTES`].
fn bounded_bytes(field: &'static str, found: usize) -> Result<(), StepError> {
    within(field, "bytes", found, MAX_CONFIG_FIELD_BYTES)
}

/// Fails when a config list or map holds more than [`MAX_CONFIG_ENTRIES`].
fn bounded(field: &'static str, found: usize) -> Result<(), StepError> {
    within(field, "entries", found, MAX_CONFIG_ENTRIES)
}

impl State {
    /// The state of `FROM scratch` for `platform`.
    pub fn scratch(platform: &Platform) -> State {
        State {
            base: None,
            config: ConfigFile::for_platform(platform),
            added: Vec::new(),
            layers: Vec::new(),
            top: None,
            cmd_set: false,
            key: CacheKey::base(None, platform),
            env_index: None,
            field_bytes: [None; 3],
            history_bytes: 0,
            ports_named: 0,
            scope_env: None,
        }
    }

    /// The state of `FROM image`.
    pub fn from_image(image: Image, platform: &Platform) -> State {
        let layers = image_layers(&image);
        State {
            config: image.config.file().clone(),
            key: CacheKey::base(Some(image.manifest_digest()), platform),
            base: Some(image),
            added: Vec::new(),
            layers,
            top: None,
            cmd_set: false,
            env_index: None,
            field_bytes: [None; 3],
            history_bytes: 0,
            ports_named: 0,
            scope_env: None,
        }
    }

    /// The state another stage starts from when its FROM names this one.
    pub fn child(&self) -> State {
        self.clone().into_child()
    }

    /// [`State::child`] of a state no other stage needs (no copy).
    pub fn into_child(mut self) -> State {
        self.cmd_set = false;
        self
    }

    /// Fails when `entry` would take the history the build added past
    /// [`MAX_HISTORY_BYTES`] (asked before a step's work, so that a step
    /// whose entry cannot be kept does not run).
    ///
    /// # Errors
    /// [`StepError::History`].
    pub fn fits(&self, entry: &History) -> Result<(), StepError> {
        let found = self.history_bytes.saturating_add(history_text(entry));
        if found > MAX_HISTORY_BYTES {
            return Err(StepError::History {
                found,
                limit: MAX_HISTORY_BYTES,
            });
        }
        Ok(())
    }

    /// Adds a history entry (and its layer) to what the build added, its
    /// text counted against [`MAX_HISTORY_BYTES`].
    ///
    /// # Errors
    /// [`StepError::History`]; nothing is added then.
    pub fn add(&mut self, entry: Entry) -> Result<(), StepError> {
        self.fits(&entry.history)?;
        self.history_bytes += history_text(&entry.history);
        self.added.push(entry);
        Ok(())
    }

    /// The run config, made if missing.
    pub fn run_config(&mut self) -> &mut RunConfig {
        self.config.config.get_or_insert_with(RunConfig::default)
    }

    /// The environment as a map (the later of two equal names wins).
    pub fn env_map(&self) -> BTreeMap<String, String> {
        self.env()
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (e.clone(), String::new()),
            })
            .collect()
    }

    /// The environment a stage built on this state starts its expansion
    /// scope with: the map its parent stage's scope ended with when that
    /// was kept ([`State::keep_scope_env`]), else [`State::env_map`].
    pub fn take_scope_env(&mut self) -> BTreeMap<String, String> {
        self.scope_env.take().unwrap_or_else(|| self.env_map())
    }

    /// Keeps the ENV of the stage's expansion scope as the stage ended, for
    /// the stage built on it ([`State::take_scope_env`]).
    pub fn keep_scope_env(&mut self, env: BTreeMap<String, String>) {
        self.scope_env = Some(env);
    }

    /// `Env` as stored.
    pub fn env(&self) -> &[String] {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.env.as_deref())
            .unwrap_or(&[])
    }

    /// The shell of shell forms: SHELL, else `/bin/sh -c`.
    pub fn shell(&self) -> Vec<String> {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.shell.clone())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    /// The working directory (`/` when unset).
    pub fn workdir(&self) -> String {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    }

    /// The user, when set.
    pub fn user(&self) -> Option<String> {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.user.clone())
            .filter(|u| !u.is_empty())
    }

    /// A command line as the config stores it: exec form as is, shell form
    /// wrapped in the stage's shell.
    pub fn argv(&self, line: &CommandLine) -> Vec<String> {
        match line {
            CommandLine::Exec(v) => v.clone(),
            CommandLine::Shell(s) => {
                let mut v = self.shell();
                v.push(s.clone());
                v
            }
        }
    }

    /// Applies an instruction that changes only the config (already
    /// expanded), as Docker does. RUN, COPY, ADD, FROM and ARG change
    /// nothing here.
    ///
    /// # Errors
    /// [`StepError::Invalid`] for a port or a duration that is not one.
    pub fn apply(&mut self, command: &Command) -> Result<(), StepError> {
        match command {
            Command::Env(pairs) => {
                let mut index = match self.env_index.take() {
                    Some(index) => index,
                    None => self
                        .env()
                        .iter()
                        .enumerate()
                        .map(|(i, e)| {
                            (
                                e.split_once('=').map_or(e.as_str(), |(k, _)| k).to_owned(),
                                i,
                            )
                        })
                        .collect(),
                };
                let mut bytes = match self.field_bytes[ENV] {
                    Some(n) => n,
                    None => self.env().iter().map(String::len).sum(),
                };
                let env = self.run_config().env.get_or_insert_with(Vec::new);
                for kv in pairs {
                    let item = format!("{}={}", kv.key, kv.value);
                    bytes += item.len();
                    match index.get(&kv.key) {
                        Some(&i) => bytes -= std::mem::replace(&mut env[i], item).len(),
                        None => {
                            index.insert(kv.key.clone(), env.len());
                            env.push(item);
                        }
                    }
                }
                let len = env.len();
                self.env_index = Some(index);
                self.field_bytes[ENV] = Some(bytes);
                bounded("Env", len)?;
                bounded_bytes("Env", bytes)?;
            }
            Command::Label(pairs) => {
                let known = self.field_bytes[LABELS];
                let labels = self.run_config().labels.get_or_insert_with(BTreeMap::new);
                let mut bytes =
                    known.unwrap_or_else(|| labels.iter().map(|(k, v)| k.len() + v.len()).sum());
                for kv in pairs {
                    bytes += kv.key.len() + kv.value.len();
                    if let Some(old) = labels.insert(kv.key.clone(), kv.value.clone()) {
                        bytes -= kv.key.len() + old.len();
                    }
                }
                let len = labels.len();
                self.field_bytes[LABELS] = Some(bytes);
                bounded("Labels", len)?;
                bounded_bytes("Labels", bytes)?;
            }
            Command::Expose(ports) => {
                let mut named = self.ports_named;
                let mut keys = Vec::new();
                for p in ports {
                    exposed(p, &mut keys, &mut named)?;
                }
                self.ports_named = named;
                let map = self
                    .run_config()
                    .exposed_ports
                    .get_or_insert_with(BTreeMap::new);
                for k in keys {
                    map.insert(k, serde_json::Value::Object(Default::default()));
                }
                bounded("ExposedPorts", map.len())?;
            }
            Command::User(u) => self.run_config().user = Some(u.clone()),
            Command::Workdir(w) => {
                let dir = image_core::path::clean_absolute(&if w.starts_with('/') {
                    w.clone()
                } else {
                    format!("{}/{w}", self.workdir())
                });
                self.run_config().working_dir = Some(dir);
            }
            Command::Volume(v) => {
                let known = self.field_bytes[VOLUMES];
                let vols = self.run_config().volumes.get_or_insert_with(BTreeMap::new);
                let mut bytes = known.unwrap_or_else(|| vols.keys().map(String::len).sum());
                for p in &v.paths {
                    let empty = serde_json::Value::Object(Default::default());
                    if vols.insert(p.clone(), empty).is_none() {
                        bytes += p.len();
                    }
                }
                let len = vols.len();
                self.field_bytes[VOLUMES] = Some(bytes);
                bounded("Volumes", len)?;
                bounded_bytes("Volumes", bytes)?;
            }
            Command::Shell(s) => self.run_config().shell = Some(s.clone()),
            Command::Stopsignal(s) => self.run_config().stop_signal = Some(s.clone()),
            Command::Healthcheck(h) => {
                let check = self.healthcheck(h)?;
                self.run_config().healthcheck = Some(check);
            }
            Command::Cmd(line) => {
                let argv = self.argv(line);
                self.run_config().cmd = Some(argv);
                self.cmd_set = true;
            }
            Command::Entrypoint(line) => {
                let argv = self.argv(line);
                let keep_cmd = self.cmd_set;
                let rc = self.run_config();
                rc.entrypoint = Some(argv);
                if !keep_cmd {
                    rc.cmd = None;
                }
            }
            Command::Onbuild(trigger) => {
                let text = super::history::text(trigger, '\\');
                let triggers = self.run_config().on_build.get_or_insert_with(Vec::new);
                triggers.push(text);
                bounded("OnBuild", triggers.len())?;
            }
            Command::Maintainer(m) => self.config.author = Some(m.clone()),
            Command::From(_)
            | Command::Run(_)
            | Command::Copy(_)
            | Command::Add(_)
            | Command::Arg(_) => {}
        }
        Ok(())
    }

    fn healthcheck(&self, h: &Healthcheck) -> Result<HealthConfig, StepError> {
        Ok(match h {
            Healthcheck::None => HealthConfig {
                test: Some(vec!["NONE".into()]),
                ..HealthConfig::default()
            },
            Healthcheck::Cmd {
                command,
                interval,
                timeout,
                start_period,
                start_interval,
                retries,
            } => {
                let test = match command {
                    CommandLine::Exec(v) => [vec!["CMD".to_owned()], v.clone()].concat(),
                    CommandLine::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
                };
                let d =
                    |what, v: &Option<String>| v.as_deref().map(|s| duration(what, s)).transpose();
                HealthConfig {
                    test: Some(test),
                    interval: d("--interval", interval)?,
                    timeout: d("--timeout", timeout)?,
                    start_period: d("--start-period", start_period)?,
                    start_interval: d("--start-interval", start_interval)?,
                    retries: retries.map(i64::from),
                    ..HealthConfig::default()
                }
            }
        })
    }
}

/// The keys of `ExposedPorts` for one EXPOSE word: `80` (tcp by default),
/// `80/udp`, or a range `8000-8002/tcp` (one key per port, as Docker's
/// `nat.ParsePortSpecs`). `named` counts the ports named so far, bounded
/// by [`MAX_EXPOSE_PORTS`] before any is expanded.
fn exposed(word: &str, out: &mut Vec<String>, named: &mut usize) -> Result<(), StepError> {
    let invalid = |reason| StepError::Invalid {
        what: "port",
        value: word.to_owned(),
        reason,
    };
    let (ports, proto) = match word.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (word, "tcp".to_owned()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(invalid("expected the protocol tcp, udp or sctp"));
    }
    let port = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| invalid("expected a port number from 0 to 65535"))
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(ports)?, port(ports)?),
    };
    if hi < lo {
        return Err(invalid("a range must not end below its start"));
    }
    *named += usize::from(hi - lo) + 1;
    if *named > MAX_EXPOSE_PORTS {
        return Err(invalid(
            "the stage's EXPOSE instructions name too many ports",
        ));
    }
    out.extend((lo..=hi).map(|p| format!("{p}/{proto}")));
    Ok(())
}

/// A Go duration (`1h30m`, `1.5s`, `300ms`, `10us`) in nanoseconds, as
/// HEALTHCHECK's options take it: at least 1ms, or 0.
fn duration(what: &'static str, s: &str) -> Result<i64, StepError> {
    let invalid = |reason| StepError::Invalid {
        what,
        value: s.to_owned(),
        reason,
    };
    let units: [(&str, f64); 7] = [
        ("ns", 1.0),
        ("us", 1e3),
        ("µs", 1e3),
        ("ms", 1e6),
        ("s", 1e9),
        ("m", 60e9),
        ("h", 3600e9),
    ];
    if s == "0" {
        return Ok(0);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(invalid("expected a duration such as 30s or 1m30s"));
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| invalid("expected a unit (ns, us, ms, s, m, h) after each number"))?;
        let (num, tail) = rest.split_at(n);
        let value: f64 = num
            .parse()
            .map_err(|_| invalid("expected a duration such as 30s or 1m30s"))?;
        let (unit, scale) = units
            .iter()
            .filter(|(u, _)| tail.starts_with(u))
            .max_by_key(|(u, _)| u.len())
            .ok_or_else(|| invalid("expected a unit (ns, us, ms, s, m, h) after each number"))?;
        total += value * scale;
        rest = &tail[unit.len()..];
    }
    if total > i64::MAX as f64 {
        return Err(invalid("the duration is too long"));
    }
    let ns = total.round() as i64;
    if ns != 0 && ns < 1_000_000 {
        return Err(invalid("a duration must be at least 1ms"));
    }
    Ok(ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(duration("x", "30s").unwrap(), 30_000_000_000);
        assert_eq!(duration("x", "1m30s").unwrap(), 90_000_000_000);
        assert_eq!(duration("x", "1.5h").unwrap(), 5_400_000_000_000);
        assert_eq!(duration("x", "300ms").unwrap(), 300_000_000);
        assert_eq!(duration("x", "0").unwrap(), 0);
        for bad in ["", "10", "1x", "s", "10us", "-1s", "1..2s"] {
            assert!(duration("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports() {
        let mut out = Vec::new();
        let mut named = 0;
        exposed("80", &mut out, &mut named).unwrap();
        exposed("53/UDP", &mut out, &mut named).unwrap();
        exposed("8000-8002/tcp", &mut out, &mut named).unwrap();
        assert_eq!(named, 5);
        assert_eq!(
            out,
            ["80/tcp", "53/udp", "8000/tcp", "8001/tcp", "8002/tcp"]
        );
        for bad in ["x", "80/icmp", "9-8", "70000"] {
            assert!(exposed(bad, &mut Vec::new(), &mut 0).is_err(), "{bad}");
        }
    }
}
