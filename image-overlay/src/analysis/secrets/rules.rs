//! The rules: what a secret looks like in a file, in a history line, in a
//! config value. Each hit carries only what may be shown (a rule's
//! documented public prefix, a variable's name) and the secret's length.
//!
//! The patterns are `regex` automata (no backtracking: linear in the text
//! scanned); a file is first checked against all of them at once
//! ([`RegexSet`]) and only the rules that matched run again to locate their
//! hits.

use std::sync::OnceLock;

use regex::bytes::{Regex, RegexSet};

/// One hit of a rule: the rule's name, and what may be shown of the
/// matched text (the secret itself replaced by its length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    pub(crate) rule: &'static str,
    pub(crate) excerpt: String,
}

/// What a secret of `len` bytes is shown as.
pub(crate) fn redacted(len: usize) -> String {
    format!("[REDACTED {len} bytes]")
}

/// How a content rule shows its hit: the capture group 1 is the secret.
#[derive(Clone, Copy)]
enum Show {
    /// `public prefix` + redacted rest (tokens with a documented prefix).
    Prefix(usize),
    /// The text before group 1 (a name and `=`), then the redacted value.
    Lead,
    /// A fixed label, then the redacted value.
    Label(&'static str),
}

struct ContentRule {
    name: &'static str,
    pattern: &'static str,
    show: Show,
    /// Only in files whose base name is one of these (empty: any file).
    names: &'static [&'static str],
    /// Extra check of the secret (group 1).
    accept: fn(&[u8]) -> bool,
}

fn any(_: &[u8]) -> bool {
    true
}

/// Not one of the documented example values (AWS's `...EXAMPLE` keys,
/// the well-known Azurite development key) and not a variable reference.
fn not_example(s: &[u8]) -> bool {
    const AZURITE: &[u8] =
        b"Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    !s.windows(7).any(|w| w == b"EXAMPLE") && s != AZURITE && !s.starts_with(b"$")
}

/// A value that looks generated: long, letters and digits, high entropy.
pub(crate) fn high_entropy(s: &[u8]) -> bool {
    s.len() >= 16
        && s.iter().any(u8::is_ascii_digit)
        && s.iter().any(u8::is_ascii_alphabetic)
        && shannon(s) >= 3.5
        && not_example(s)
}

/// Shannon entropy of `s` in bits per byte.
pub(crate) fn shannon(s: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &b in s {
        counts[usize::from(b)] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

const CONTENT: &[ContentRule] = &[
    ContentRule {
        name: "openssh-private-key",
        pattern: r"-----BEGIN OPENSSH PRIVATE KEY-----\s+([A-Za-z0-9+/=\r\n]{64,})",
        show: Show::Label("-----BEGIN OPENSSH PRIVATE KEY----- "),
        names: &[],
        accept: any,
    },
    ContentRule {
        name: "private-key",
        pattern: r"-----BEGIN ((?:RSA |EC |DSA |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----(?:\r?\n[A-Za-z-]+:[^\n]*)*\s+[A-Za-z0-9+/=\r\n]{64,})",
        show: Show::Label("-----BEGIN ... PRIVATE KEY----- "),
        names: &[],
        accept: any,
    },
    ContentRule {
        name: "aws-access-key-id",
        pattern: r"\b((?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16})\b",
        show: Show::Prefix(4),
        names: &[],
        accept: not_example,
    },
    ContentRule {
        name: "aws-secret-access-key",
        pattern: r#"(?i)aws_?secret_?access_?key["']?\s*[:=]\s*["']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+]|$)"#,
        show: Show::Label("aws_secret_access_key="),
        names: &[],
        accept: not_example,
    },
    ContentRule {
        name: "gcp-service-account",
        pattern: r#"(?s)"type"\s*:\s*"service_account".*?"private_key"\s*:\s*"(-----BEGIN[^"]{64,})""#,
        show: Show::Label(r#"{"type": "service_account", "private_key": "#),
        names: &[],
        accept: any,
    },
    ContentRule {
        name: "azure-storage-key",
        pattern: r"(?i)AccountKey=([A-Za-z0-9+/]{40,}={0,2})",
        show: Show::Label("AccountKey="),
        names: &[],
        accept: not_example,
    },
    ContentRule {
        name: "docker-config-auth",
        pattern: r#"(?s)"auths"\s*:\s*\{.*?"(?:auth|identitytoken)"\s*:\s*"([A-Za-z0-9+/=._-]{4,})""#,
        show: Show::Label(r#""auth": "#),
        names: &[],
        accept: any,
    },
    ContentRule {
        name: "npmrc-auth",
        pattern: r"(?m)(?:_authToken|_auth|_password)[ \t]*=[ \t]*([^\s$][^\s]*)",
        show: Show::Lead,
        names: &[".npmrc", "npmrc"],
        accept: any,
    },
    ContentRule {
        name: "pypirc-password",
        pattern: r"(?m)^\s*password\s*[=:]\s*([^\s$]\S*)",
        show: Show::Lead,
        names: &[".pypirc"],
        accept: any,
    },
    ContentRule {
        name: "netrc-password",
        pattern: r"\bpassword\s+([^\s$]\S*)",
        show: Show::Lead,
        names: &[".netrc", "_netrc"],
        accept: any,
    },
    ContentRule {
        name: "github-token",
        pattern: r"\b((?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82}))\b",
        show: Show::Prefix(4),
        names: &[],
        accept: any,
    },
    ContentRule {
        name: "gitlab-token",
        pattern: r"\b(glpat-[A-Za-z0-9_-]{20})(?:[^A-Za-z0-9_-]|$)",
        show: Show::Prefix(6),
        names: &[],
        accept: any,
    },
    ContentRule {
        name: "slack-token",
        pattern: r"\b(xox[bpar]-[0-9]{6,}-[0-9A-Za-z-]{6,})",
        show: Show::Prefix(5),
        names: &[],
        accept: any,
    },
    ContentRule {
        name: "high-entropy-assignment",
        pattern: r#"(?i)\b(?:[a-z0-9_.-]*(?:_key|_token|_secret|password|passwd)|secret|token|api_?key)["']?[ \t]*[:=][ \t]*["']?([^\s"'$<>{}()\[\];,`\\%&]{16,})"#,
        show: Show::Lead,
        names: &[],
        accept: high_entropy,
    },
];

struct Compiled {
    set: RegexSet,
    each: Vec<Regex>,
}

fn compiled() -> &'static Compiled {
    static RULES: OnceLock<Compiled> = OnceLock::new();
    RULES.get_or_init(|| {
        let patterns: Vec<&str> = CONTENT.iter().map(|r| r.pattern).collect();
        // The patterns are constants, checked by the unit tests.
        #[allow(clippy::expect_used)]
        Compiled {
            set: RegexSet::new(&patterns).expect("the content rules compile"),
            each: patterns
                .iter()
                .map(|p| Regex::new(p).expect("a content rule compiles"))
                .collect(),
        }
    })
}

/// Runs the content rules over `text`, the start of the file at `path`
/// (normalised, no leading `/`), calling `hit` for each secret found.
pub(crate) fn scan_content(path: &str, text: &[u8], hit: &mut dyn FnMut(Hit)) {
    let c = compiled();
    let base = super::super::changes::name(path);
    // The secrets already reported: a later (more generic) rule matching
    // the same bytes adds nothing.
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for i in c.set.matches(text).iter() {
        let rule = &CONTENT[i];
        if !rule.names.is_empty() && !rule.names.contains(&base) {
            continue;
        }
        if rule.name == "high-entropy-assignment" && !generic_applies(path) {
            continue;
        }
        for caps in c.each[i].captures_iter(text) {
            let (Some(all), Some(secret)) = (caps.get(0), caps.get(1)) else {
                continue;
            };
            if !(rule.accept)(secret.as_bytes())
                || spans
                    .iter()
                    .any(|&(a, b)| secret.start() < b && a < secret.end())
            {
                continue;
            }
            spans.push((secret.start(), secret.end()));
            let excerpt = match rule.show {
                Show::Prefix(n) => format!(
                    "{}{}",
                    String::from_utf8_lossy(&secret.as_bytes()[..n]),
                    redacted(secret.len() - n)
                ),
                Show::Lead => format!(
                    "{}{}",
                    String::from_utf8_lossy(&text[all.start()..secret.start()]).trim_start(),
                    redacted(secret.len())
                ),
                Show::Label(label) => format!("{label}{}", redacted(secret.len())),
            };
            hit(Hit {
                rule: rule.name,
                excerpt,
            });
        }
    }
}

/// Whether the generic rule (a high-entropy value assigned to a
/// secret-sounding name) applies to the file at `path`: not to program
/// sources, where such names hold expressions and documented protocol
/// examples (pip, oauthlib, cryptography in Debian's python3 all do), nor
/// to documentation; the rules with documented prefixes still apply there.
/// Shell scripts and configuration files are scanned.
fn generic_applies(path: &str) -> bool {
    const CODE: &[&str] = &[
        "py", "pyi", "pl", "pm", "rb", "js", "mjs", "cjs", "ts", "go", "java", "c", "h", "cc",
        "cpp", "hpp", "rs", "php", "lua", "tcl", "html", "htm", "md", "rst", "txt", "pod",
    ];
    if path.starts_with("usr/share/doc/") || path.starts_with("usr/share/man/") {
        return false;
    }
    let base = super::super::changes::name(path);
    match base.rsplit_once('.') {
        Some((_, ext)) => !CODE.contains(&ext.to_ascii_lowercase().as_str()),
        None => true,
    }
}

/// Why a file's name looks sensitive, if it does: private key files,
/// credential stores, names saying password, secret or token.
pub(crate) fn sensitive_name(path: &str) -> Option<&'static str> {
    const FILES: &[&str] = &[
        "id_rsa",
        "id_dsa",
        "id_ecdsa",
        "id_ed25519",
        ".env",
        ".netrc",
        "_netrc",
        ".npmrc",
        ".pypirc",
        ".git-credentials",
        ".htpasswd",
        "credentials",
        "credentials.json",
        "auth.json",
    ];
    const EXTENSIONS: &[&str] = &["pem", "key", "p12", "pfx", "jks", "keystore", "ppk"];
    const WORDS: &[&str] = &[
        "pass",
        "password",
        "secret",
        "secrets",
        "token",
        "tokens",
        "credential",
        "credentials",
        "apikey",
        "private",
    ];
    let base = super::super::changes::name(path);
    let lower = base.to_ascii_lowercase();
    if FILES.contains(&lower.as_str()) || path.ends_with(".docker/config.json") {
        return Some("sensitive-name");
    }
    if let Some((_, ext)) = lower.rsplit_once('.') {
        if EXTENSIONS.contains(&ext) {
            return Some("sensitive-name");
        }
    }
    lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| WORDS.contains(&w))
        .then_some("sensitive-name")
}

/// Whether a variable, label or flag name says it holds a secret: one of
/// its `_`/`-`/`.`-separated words is key, token, secret, password (or
/// passwd, pass, pwd), credential(s) or auth, and none says it is public
/// (a GPG key ID or fingerprint is not a secret).
pub(crate) fn sensitive_key(name: &str) -> bool {
    const SECRET: &[&str] = &[
        "key",
        "token",
        "secret",
        "password",
        "passwd",
        "pass",
        "pwd",
        "credential",
        "credentials",
        "auth",
        "apikey",
        "privatekey",
        "accesskey",
    ];
    const PUBLIC: &[&str] = &[
        "gpg",
        "pgp",
        "public",
        "pub",
        "fingerprint",
        "keyring",
        "keyserver",
        "keys",
        "id",
        "file",
        "path",
        "dir",
        "url",
        "type",
        "name",
        "user",
        "username",
        "size",
    ];
    let lower = name.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(['_', '-', '.'])
        .filter(|w| !w.is_empty())
        .collect();
    words.iter().any(|w| SECRET.contains(w)) && !words.iter().any(|w| PUBLIC.contains(w))
}

fn text_rules() -> &'static [(&'static str, Regex)] {
    static RULES: OnceLock<Vec<(&'static str, Regex)>> = OnceLock::new();
    RULES.get_or_init(|| {
        // Constant patterns, checked by the unit tests.
        #[allow(clippy::expect_used)]
        let r = |p: &str| Regex::new(p).expect("a text rule compiles");
        vec![
            (
                "password-flag",
                r(r#"(--(?:password|passwd|pass|token|api-key|secret)(?:=|\s+))("[^"]*"|'[^']*'|[^\s;&|"'$-][^\s;&|]*)"#),
            ),
            (
                "url-credentials",
                r(r"([a-z][a-z0-9+.-]*://[^/\s:@]+:)([^/\s@$][^/\s@]*)@"),
            ),
            (
                "sensitive-assignment",
                r(r#"(?:^|[\s|;&"'])([A-Za-z_][A-Za-z0-9_.-]*=)("[^"]*"|'[^']*'|[^\s;&|"']+)"#),
            ),
        ]
    })
}

/// Runs the rules for a line of text that is not a file (a history
/// `created_by`, an `OnBuild` trigger, an `Env` entry): flags with
/// passwords, credentials in URLs, sensitive `NAME=value` assignments, and
/// the token and key rules of file contents.
pub(crate) fn scan_text(text: &str, hit: &mut dyn FnMut(Hit)) {
    for (rule, re) in text_rules() {
        for caps in re.captures_iter(text.as_bytes()) {
            let (Some(lead), Some(value)) = (caps.get(1), caps.get(2)) else {
                continue;
            };
            let v = value.as_bytes();
            let inner = v
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .or_else(|| v.strip_prefix(b"'").and_then(|v| v.strip_suffix(b"'")))
                .unwrap_or(v);
            if inner.is_empty() || inner.starts_with(b"$") {
                continue;
            }
            let lead = String::from_utf8_lossy(lead.as_bytes());
            if *rule == "sensitive-assignment" && !sensitive_key(lead.trim_end_matches('=')) {
                continue;
            }
            hit(Hit {
                rule,
                excerpt: format!("{lead}{}", redacted(inner.len())),
            });
        }
    }
    scan_content("", text.as_bytes(), &mut |h| {
        if h.rule != "high-entropy-assignment" {
            hit(h);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules_of(path: &str, text: &str) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        scan_content(path, text.as_bytes(), &mut |h| {
            out.push((h.rule, h.excerpt))
        });
        out
    }

    #[test]
    fn every_pattern_compiles() {
        assert_eq!(compiled().each.len(), CONTENT.len());
        assert_eq!(text_rules().len(), 3);
    }

    #[test]
    fn tokens_are_found_and_never_shown() {
        let gh = "ghp_0123456789abcdefghijABCDEFGHIJ012345";
        let hits = rules_of("app/config", &format!("token: {gh}\n"));
        assert_eq!(
            hits,
            [("github-token", "ghp_[REDACTED 36 bytes]".to_owned())]
        );
        let key = "AKIAQWERTYUIOP123456";
        let hits = rules_of("x", &format!("id={key}"));
        assert_eq!(hits[0].0, "aws-access-key-id");
        assert!(!hits[0].1.contains("QWERTY"));
    }

    #[test]
    fn documented_examples_and_references_are_not_secrets() {
        assert!(rules_of("x", "AKIAIOSFODNN7EXAMPLE").is_empty());
        assert!(rules_of("x", "DB_PASSWORD=${DB_PASSWORD}").is_empty());
        assert!(rules_of("x", "sort_key = lambda item: item.name").is_empty());
    }

    /// What a probe of Debian's python3, perl, docs and /etc flagged
    /// before: code expressions, protocol examples in sources, `_password`
    /// outside an .npmrc, a match across a line break.
    #[test]
    fn debian_false_positives_stay_out() {
        let code = "        private_key = ec.derive_private_key(secret2, self.curve)\n\
                    oauth_token=Kd8sLmQ2pZx7Vb3NcR5tYw1Pa9\n";
        assert!(rules_of("usr/lib/python3/dist-packages/x/ssh.py", code).is_empty());
        assert!(rules_of(
            "usr/share/doc/x/README",
            "api_key=Kd8sLmQ2pZx7Vb3NcR5tYw1Pa9"
        )
        .is_empty());
        assert!(rules_of("etc/ssl/openssl.cnf", "challenge_password = A challenge").is_empty());
        assert!(rules_of("x.cfg", "token':\n   Kd8sLmQ2pZx7Vb3NcR5tYw1Pa9").is_empty());
        assert!(rules_of("x.cfg", "secret=a%3Db&oauth_token=lock%26key9876543").is_empty());
        assert_eq!(rules_of("root/.npmrc", "_authToken=abc")[0].0, "npmrc-auth");
        assert_eq!(
            rules_of(
                "srv/entrypoint.sh",
                "export API_TOKEN=Kd8sLmQ2pZx7Vb3NcR5tYw1Pa9"
            )[0]
            .0,
            "high-entropy-assignment"
        );
    }

    #[test]
    fn history_lines() {
        let mut out = Vec::new();
        scan_text(
            "|2 API_TOKEN=s3cr3t GPG_KEY=ABCDEF /bin/sh -c mysql --password=hunter2 && curl https://u:pw@h/",
            &mut |h| out.push((h.rule, h.excerpt)),
        );
        let rules: Vec<&str> = out.iter().map(|(r, _)| *r).collect();
        assert_eq!(
            rules,
            ["password-flag", "url-credentials", "sensitive-assignment"]
        );
        for (_, e) in &out {
            assert!(
                !e.contains("hunter2") && !e.contains("s3cr3t") && !e.contains(":pw"),
                "{e}"
            );
        }
    }

    #[test]
    fn names() {
        assert!(sensitive_name("tmp/pass").is_some());
        assert!(sensitive_name("root/.ssh/id_rsa").is_some());
        assert!(sensitive_name("etc/passwd").is_none());
        assert!(sensitive_name("etc/shadow").is_none());
        assert!(sensitive_key("AWS_SECRET_ACCESS_KEY"));
        assert!(!sensitive_key("GPG_KEY"));
        assert!(!sensitive_key("PATH"));
    }
}
