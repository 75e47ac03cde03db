//! Leaked secrets: in file contents (read in the same pass as the change
//! list), in files a later layer deleted or overwrote (their bytes stay in
//! the image), in the history's `created_by` lines, and in the config's
//! `Env`, `Labels` and `OnBuild`.
//!
//! # Security
//! A finding never holds the secret: its excerpt shows a rule's documented
//! public prefix (`ghp_`, `AKIA`) or the variable's name, and the secret's
//! length; its fingerprint is a hash of where it is (rule, layer, path or
//! history entry, occurrence), not of the secret, so a published
//! fingerprint cannot be used to guess a weak password. Only the first
//! [`SecretOptions::max_scan_bytes`] of a file are read, files with a NUL
//! byte there are skipped as binary, and at most
//! [`SecretOptions::max_findings`] findings are kept.

pub mod allow;
pub(crate) mod rules;

use std::collections::HashMap;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use image_core::config::{ConfigFile, History};
use image_core::Digest;

pub use allow::{AllowList, AllowListError};

/// Knobs of the secret scan.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SecretOptions {
    /// Scan file contents (the change list and efficiency need no data).
    pub enabled: bool,
    /// The most bytes read from the start of each file.
    pub max_scan_bytes: usize,
    /// The most findings kept (the report says when more were found).
    pub max_findings: usize,
    /// Accepted findings, left out of the report.
    pub allow: AllowList,
}

impl Default for SecretOptions {
    fn default() -> Self {
        SecretOptions {
            enabled: true,
            max_scan_bytes: 64 * 1024,
            max_findings: 1000,
            allow: AllowList::default(),
        }
    }
}

impl SecretOptions {
    /// Uses this allow list.
    pub fn with_allow(mut self, allow: AllowList) -> Self {
        self.allow = allow;
        self
    }

    /// Scans file contents or not.
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }
}

/// A layer, by position and digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerRef {
    /// Position in the manifest, base first, from 0.
    pub index: usize,
    /// The layer's blob digest.
    pub digest: Digest,
}

/// Where a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum Source {
    /// A file of a layer.
    File,
    /// A history entry's `created_by`.
    History,
    /// The config's `Env`.
    ConfigEnv,
    /// The config's `Labels`.
    ConfigLabels,
    /// The config's `OnBuild`.
    ConfigOnBuild,
}

/// One leaked secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Finding {
    /// The rule that fired (`private-key`, `github-token`,
    /// `sensitive-file-deleted`, ...).
    pub rule: &'static str,
    /// The layer holding it (for a history entry, the layer it made);
    /// `None` for the config and for history entries that made no layer.
    pub layer: Option<LayerRef>,
    /// The file, absolute, for a finding in a file.
    pub path: Option<String>,
    /// The history entry's index, for a finding in the history.
    pub history: Option<usize>,
    /// Where it is.
    pub source: Source,
    /// What may be shown: the secret redacted.
    pub excerpt: String,
    /// What to do about it.
    pub hint: &'static str,
    /// A stable identifier of this finding, for the allow list.
    pub fingerprint: String,
}

/// What to do about a finding of `rule` in `source`.
fn hint(rule: &str, source: Source) -> &'static str {
    match (rule, source) {
        ("sensitive-file-deleted", _) => "deleting a file in a later layer does not remove it: its bytes are still in the layer that added it; rebuild without copying it in (a multi-stage build, or RUN --mount=type=secret), then rotate it",
        ("sensitive-file-overwritten", _) => "overwriting a file in a later layer does not remove the old bytes from the layer below; rebuild without them, then rotate the secret",
        (_, Source::History) => "build arguments and command lines are kept in the image's history: pass secrets with RUN --mount=type=secret, never ARG, ENV or the command line; rotate it",
        (_, Source::ConfigEnv) => "environment variables set in the image are readable by anyone who pulls it: inject the value at run time instead; rotate it",
        (_, Source::ConfigLabels) => "labels are public metadata: remove it and rotate it",
        (_, Source::ConfigOnBuild) => "ONBUILD triggers are stored in the image: pass the secret at build time with --mount=type=secret; rotate it",
        (_, Source::File) => "a secret baked into a layer is readable by anyone who pulls the image: remove it from the build context (or use RUN --mount=type=secret), rebuild, and rotate it",
    }
}

/// The findings of one analysis, bounded and filtered by the allow list.
#[derive(Debug)]
pub(crate) struct Collector<'o> {
    options: &'o SecretOptions,
    pub(crate) findings: Vec<Finding>,
    pub(crate) truncated: bool,
    /// Occurrences per (rule, location), for fingerprints.
    seen: HashMap<(String, String), u64>,
}

impl<'o> Collector<'o> {
    pub(crate) fn new(options: &'o SecretOptions) -> Self {
        Collector {
            options,
            findings: Vec::new(),
            truncated: false,
            seen: HashMap::new(),
        }
    }

    /// Whether no more findings are kept (scanning can stop).
    pub(crate) fn full(&self) -> bool {
        self.findings.len() >= self.options.max_findings
    }

    pub(crate) fn push(
        &mut self,
        rule: &'static str,
        layer: Option<LayerRef>,
        path: Option<String>,
        history: Option<usize>,
        source: Source,
        excerpt: String,
    ) {
        let location = match (&path, history) {
            (Some(p), _) => p.clone(),
            (None, Some(h)) => format!("history[{h}]"),
            (None, None) => format!("{source:?}"),
        };
        let digest = layer
            .as_ref()
            .map_or(String::new(), |l| l.digest.to_string());
        let n = self
            .seen
            .entry((rule.to_owned(), format!("{digest}\0{location}")))
            .or_insert(0);
        *n += 1;
        let mut h = Sha256::new();
        for part in [rule, &digest, &location, &n.to_string()] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let fingerprint = hex::encode(&h.finalize()[..8]);
        if self.options.allow.allows(path.as_deref(), &fingerprint) {
            return;
        }
        if self.full() {
            self.truncated = true;
            return;
        }
        self.findings.push(Finding {
            rule,
            layer,
            path,
            history,
            source,
            excerpt,
            hint: hint(rule, source),
            fingerprint,
        });
    }

    /// Scans the start of a file; returns the first rule that fired.
    pub(crate) fn scan_file(
        &mut self,
        layer: &LayerRef,
        path: &str,
        text: &[u8],
    ) -> Option<&'static str> {
        if text.contains(&0) {
            return None;
        }
        let mut first = None;
        let mut hits = Vec::new();
        rules::scan_content(path, text, &mut |h| hits.push(h));
        for h in hits {
            first.get_or_insert(h.rule);
            self.push(
                h.rule,
                Some(layer.clone()),
                Some(format!("/{path}")),
                None,
                Source::File,
                h.excerpt,
            );
        }
        first
    }

    /// Scans the history lines and the config's Env, Labels and OnBuild;
    /// `layer_of[i]` is the layer history entry `i` made.
    pub(crate) fn scan_config(&mut self, config: &ConfigFile, layer_of: &[Option<LayerRef>]) {
        let history: &[History] = config.history.as_deref().unwrap_or(&[]);
        for (i, entry) in history.iter().enumerate() {
            let Some(line) = &entry.created_by else {
                continue;
            };
            let mut hits = Vec::new();
            rules::scan_text(line, &mut |h| hits.push(h));
            for h in hits {
                let layer = layer_of.get(i).cloned().flatten();
                self.push(h.rule, layer, None, Some(i), Source::History, h.excerpt);
            }
        }
        let Some(run) = &config.config else { return };
        let mut hits = Vec::new();
        for env in run.env.iter().flatten() {
            rules::scan_text(env, &mut |h| hits.push((Source::ConfigEnv, h)));
        }
        for (k, v) in run.labels.iter().flatten() {
            if rules::sensitive_key(k) && !v.is_empty() && !v.starts_with('$') {
                hits.push((
                    Source::ConfigLabels,
                    rules::Hit {
                        rule: "sensitive-assignment",
                        excerpt: format!("{k}={}", rules::redacted(v.len())),
                    },
                ));
            } else {
                rules::scan_text(v, &mut |h| hits.push((Source::ConfigLabels, h)));
            }
        }
        for trigger in run.on_build.iter().flatten() {
            rules::scan_text(trigger, &mut |h| hits.push((Source::ConfigOnBuild, h)));
        }
        for (source, h) in hits {
            self.push(h.rule, None, None, None, source, h.excerpt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_are_scanned_and_redacted() {
        let config: ConfigFile = serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {
                "Env": ["PATH=/usr/bin", "DB_PASSWORD=correct-horse", "GPG_KEY=0123ABCD"],
                "Labels": {"api.token": "xyz123", "maintainer": "me"},
                "OnBuild": ["RUN curl -u x --password hunter2 https://h/"]
            },
            "history": [
                {"created_by": "ARG NPM_TOKEN=npm_abc", "empty_layer": true},
                {"created_by": "/bin/sh -c #(nop) ADD file:abc in / "}
            ]
        }))
        .unwrap();
        let options = SecretOptions::default();
        let mut c = Collector::new(&options);
        c.scan_config(&config, &[None, None]);
        let got: Vec<(&str, Source, Option<usize>)> = c
            .findings
            .iter()
            .map(|f| (f.rule, f.source, f.history))
            .collect();
        assert_eq!(
            got,
            [
                ("sensitive-assignment", Source::History, Some(0)),
                ("sensitive-assignment", Source::ConfigEnv, None),
                ("sensitive-assignment", Source::ConfigLabels, None),
                ("password-flag", Source::ConfigOnBuild, None),
            ]
        );
        for f in &c.findings {
            for secret in ["npm_abc", "correct-horse", "xyz123", "hunter2"] {
                assert!(!f.excerpt.contains(secret), "{}", f.excerpt);
            }
        }
    }

    fn push_one(c: &mut Collector<'_>) {
        c.push(
            "r",
            None,
            Some("/x".into()),
            None,
            Source::File,
            String::new(),
        );
    }

    #[test]
    fn findings_are_bounded_and_allowed_by_fingerprint() {
        let options = SecretOptions {
            max_findings: 2,
            ..SecretOptions::default()
        };
        let mut c = Collector::new(&options);
        for _ in 0..5 {
            push_one(&mut c);
        }
        assert_eq!(c.findings.len(), 2);
        assert!(c.truncated);
        let fp = c.findings[1].fingerprint.clone();
        assert_ne!(fp, c.findings[0].fingerprint);
        let options = SecretOptions::default()
            .with_allow(AllowList::parse(&format!("fingerprint:{fp}")).unwrap());
        let mut c = Collector::new(&options);
        push_one(&mut c);
        push_one(&mut c);
        assert_eq!(c.findings.len(), 1);
    }
}
