//! Platforms (`linux/arm64/v8`), their normalisation, and matching with
//! containerd's fallback order.
//!
//! A [`Platform`] is the OCI `platform` object: operating system, CPU
//! architecture and variant, and the optional OS version and features.
//! Parsing and normalisation follow containerd's `platforms` package:
//!
//! - [`FromStr`] reads a specifier `os[(version[+feature]*)][/arch[/variant]]`,
//!   or a lone OS or architecture (the other half is the host's), and
//!   spells the architecture canonically (`x86_64` is `amd64`, `aarch64` is
//!   `arm64`, `armhf` is `arm`, `armel` is `arm/v6`, `i386` is `386`);
//! - [`Platform::normalize`] gives the form used for comparison, where
//!   `arm` means `arm/v7`, and `arm64/v8` and `amd64/v1` drop their default
//!   variant;
//! - [`Matcher::only`] accepts a platform and the older ones that run on it,
//!   best first: `arm/v7` accepts `arm/v6` then `arm/v5`, `amd64/v3`
//!   accepts `amd64/v2`, `amd64` then `386`, `arm64` accepts `arm/v8` down
//!   to `arm/v5`; [`Matcher::only_strict`] accepts only the platform itself.
//!
//! [`select_manifest`] picks the best manifest of an image index for a
//! platform.
//!
//! ```
//! use image_core::platform::{Matcher, Platform};
//!
//! let pi: Platform = "linux/arm/v7".parse()?;
//! let m = Matcher::only(&pi);
//! assert!(m.matches(&"linux/armel".parse()?));
//! assert!(!m.matches(&"linux/arm64".parse()?));
//! assert_eq!(
//!     m.platforms().iter().map(ToString::to_string).collect::<Vec<_>>(),
//!     ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]
//! );
//! # Ok::<(), image_core::platform::PlatformError>(())
//! ```

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use crate::error::{Classify, ErrorKind};
use crate::manifest::{Descriptor, Index};

/// Highest numbered variant walked down from when building fallbacks, so a
/// hostile `amd64/v4000000000` cannot make a huge fallback list.
const MAX_FALLBACK_LEVEL: i64 = 64;

/// How much of an offending input an error keeps.
const ERROR_INPUT_MAX: usize = 256;

/// The platform an image or manifest is built for, as in the OCI image
/// index and image configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Platform {
    /// The operating system, as Go's `GOOS` spells it: `linux`, `windows`.
    pub os: String,
    /// The CPU architecture, as Go's `GOARCH` spells it: `amd64`, `arm64`.
    pub architecture: String,
    /// The CPU variant: `v7` for `arm`, `v8` for `arm64`, `v2` for `amd64`.
    /// OPTIONAL in the OCI specification.
    #[serde(
        default,
        skip_serializing_if = "is_blank",
        deserialize_with = "blank_as_none"
    )]
    pub variant: Option<String>,
    /// The version of the operating system (`10.0.17763.1879` on Windows).
    /// OPTIONAL in the OCI specification.
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "is_blank",
        deserialize_with = "blank_as_none"
    )]
    pub os_version: Option<String>,
    /// Features the operating system must have (`win32k`). OPTIONAL in the
    /// OCI specification.
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
}

fn is_blank(v: &Option<String>) -> bool {
    v.as_deref().is_none_or(str::is_empty)
}

fn blank_as_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v: Option<String> = serde::Deserialize::deserialize(d)?;
    Ok(v.filter(|s| !s.is_empty()))
}

impl Platform {
    /// A platform with an OS and an architecture, no variant, version or
    /// features. The strings are taken as they are, not normalised.
    pub fn new(os: impl Into<String>, architecture: impl Into<String>) -> Platform {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: None,
            os_version: None,
            os_features: Vec::new(),
        }
    }

    /// The same platform with `variant` as its variant.
    pub fn with_variant(mut self, variant: impl Into<String>) -> Platform {
        self.variant = Some(variant.into());
        self
    }

    /// The platform this program runs on, normalised: the OS and
    /// architecture of the build target in Go's spelling (`x86_64` is
    /// `amd64`, `macos` is `darwin`). On 32-bit ARM the variant comes from
    /// the target's features (`v5` to `v8`); containerd reads
    /// `/proc/cpuinfo` instead.
    pub fn host() -> Platform {
        let (architecture, variant) = host_arch();
        Platform {
            os: host_os().to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
            os_version: None,
            os_features: Vec::new(),
        }
    }

    /// The canonical form used for comparison, as containerd's
    /// `platforms.Normalize`: OS lower case (`macos` is `darwin`, empty is
    /// the host's), architecture and variant canonical (see the module
    /// documentation; `arm` alone is `arm/v7`, `arm64/v8` is `arm64`,
    /// `amd64/v1` is `amd64`), OS features sorted without duplicates.
    pub fn normalize(&self) -> Platform {
        let (architecture, variant) =
            normalize_arch(&self.architecture, self.variant.as_deref().unwrap_or(""));
        let mut os_features = self.os_features.clone();
        os_features.sort();
        os_features.dedup();
        Platform {
            os: normalize_os(&self.os),
            architecture,
            variant,
            os_version: self.os_version.clone().filter(|v| !v.is_empty()),
            os_features,
        }
    }

    /// Whether content built for `candidate` runs on `self`, with
    /// containerd's fallbacks: [`Matcher::only`]`(self).matches(candidate)`.
    pub fn matches(&self, candidate: &Platform) -> bool {
        Matcher::only(self).matches(candidate)
    }
}

impl fmt::Display for Platform {
    /// `os/arch[/variant]`, and `os(version+feature)/arch[/variant]` when
    /// the platform has an OS version or features (characters other than
    /// `[A-Za-z0-9_.-]` in them are percent-encoded). Empty parts are left
    /// out; an empty OS prints `unknown`, as containerd's `Format` does.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.os.is_empty() {
            return f.write_str("unknown");
        }
        f.write_str(&self.os)?;
        let version = self.os_version.as_deref().unwrap_or("");
        if !version.is_empty() || !self.os_features.is_empty() {
            write!(f, "({}", encode_os_option(version))?;
            for feature in &self.os_features {
                write!(f, "+{}", encode_os_option(feature))?;
            }
            f.write_str(")")?;
        }
        if !self.architecture.is_empty() {
            write!(f, "/{}", self.architecture)?;
        }
        if let Some(variant) = self.variant.as_deref().filter(|v| !v.is_empty()) {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    /// Parses a platform specifier as containerd's `platforms.Parse`:
    ///
    /// - `os/arch/variant`: architecture and variant canonical; `arm64`
    ///   without variant gets `v8`;
    /// - `os/arch`: architecture canonical; `arm/v7` is written `arm`;
    /// - a known OS alone (`linux`, `windows(10.0.17763)`): the host's
    ///   architecture;
    /// - a known architecture alone (`arm64`, `x86_64`): the host's OS.
    ///
    /// The OS may carry a version and `+`-prefixed features in parentheses,
    /// percent-encoded: `windows(10.0.17763+win32k)`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_specifier(s)
    }
}

impl TryFrom<&str> for Platform {
    type Error = PlatformError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<&oci_spec::image::Platform> for Platform {
    fn from(p: &oci_spec::image::Platform) -> Self {
        Platform {
            os: p.os().to_string(),
            architecture: p.architecture().to_string(),
            variant: p.variant().clone().filter(|v| !v.is_empty()),
            os_version: p.os_version().clone().filter(|v| !v.is_empty()),
            os_features: p.os_features().clone().unwrap_or_default(),
        }
    }
}

impl From<oci_spec::image::Platform> for Platform {
    fn from(p: oci_spec::image::Platform) -> Self {
        Platform::from(&p)
    }
}

impl From<&Platform> for oci_spec::image::Platform {
    fn from(p: &Platform) -> Self {
        let architecture = match p.architecture.as_str() {
            // oci-spec 0.10 reads "armbe" as arm64be.
            "armbe" => oci_spec::image::Arch::ARMbe,
            other => oci_spec::image::Arch::from(other),
        };
        let mut o = oci_spec::image::Platform::default();
        o.set_architecture(architecture);
        o.set_os(oci_spec::image::Os::from(p.os.as_str()));
        o.set_variant(p.variant.clone().filter(|v| !v.is_empty()));
        o.set_os_version(p.os_version.clone().filter(|v| !v.is_empty()));
        o.set_os_features((!p.os_features.is_empty()).then(|| p.os_features.clone()));
        o
    }
}

impl From<Platform> for oci_spec::image::Platform {
    fn from(p: Platform) -> Self {
        (&p).into()
    }
}

/// Why a platform could not be parsed or selected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformError {
    /// The string is not a platform specifier.
    #[error("invalid platform {input:?}: {reason}")]
    Parse {
        /// The input, cut to 256 characters.
        input: String,
        /// What is wrong with it, naming the offending part.
        reason: String,
    },
    /// No manifest of an image index is for a platform that matches.
    #[error("no manifest in the image index matches platform {wanted}; {}", offered(.available))]
    NoMatch {
        /// The platform asked for (boxed to keep the error small).
        wanted: Box<Platform>,
        /// The distinct platforms the index offers, in index order.
        available: Vec<String>,
    },
}

fn offered(available: &[String]) -> String {
    if available.is_empty() {
        "the index lists no manifest with a platform".to_owned()
    } else {
        format!("the index offers {}", available.join(", "))
    }
}

impl Classify for PlatformError {
    fn kind(&self) -> ErrorKind {
        match self {
            PlatformError::Parse { .. } => ErrorKind::InvalidInput,
            PlatformError::NoMatch { .. } => ErrorKind::NotFound,
        }
    }
}

/// Accepts platforms from an ordered list, and ranks them by their place in
/// it: containerd's `Ordered` match comparer, built by [`Matcher::only`] and
/// [`Matcher::only_strict`].
///
/// A candidate matches an entry when their normalised OS, architecture and
/// variant are equal, the candidate's OS features are all among the
/// entry's, and, for Windows, the OS versions are compatible (same major
/// and minor; the same build before Windows Server 2022, any build from
/// the last stable-ABI release up to the entry's after it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    entries: Vec<Platform>,
}

impl Matcher {
    /// Accepts `platform` and the platforms whose content runs on it, best
    /// first (containerd's `platforms.Only`):
    ///
    /// - `amd64/vN`: `amd64/vN` down to `amd64` (v1), then `386`;
    /// - `arm/vN`: `arm/vN` down to `arm/v5`;
    /// - `arm64/v8.x`: `arm64/v8.x` down to `arm64` (v8), then `arm/v8` down
    ///   to `arm/v5`;
    /// - `arm64/v9.x`: `arm64/v9.x` down to `arm64/v9`, then `arm64/v8.{x+5}`
    ///   (at most v8.9) down to `arm64`, then `arm/v8` down to `arm/v5`;
    /// - anything else: itself only.
    pub fn only(platform: &Platform) -> Matcher {
        Matcher::ordered(platform_vector(&platform.normalize()))
    }

    /// Accepts only `platform` itself, in any spelling that normalises to it
    /// (containerd's `platforms.OnlyStrict`): `arm64` accepts `arm64/v8`, but
    /// `arm/v7` does not accept `arm/v6`.
    pub fn only_strict(platform: &Platform) -> Matcher {
        Matcher::ordered([platform.clone()])
    }

    /// Accepts any of `platforms`, preferring them in the order given
    /// (containerd's `platforms.Ordered`).
    pub fn ordered(platforms: impl IntoIterator<Item = Platform>) -> Matcher {
        Matcher {
            entries: platforms.into_iter().map(|p| p.normalize()).collect(),
        }
    }

    /// The accepted platforms, normalised, best first.
    pub fn platforms(&self) -> &[Platform] {
        &self.entries
    }

    /// Whether `candidate` is accepted.
    pub fn matches(&self, candidate: &Platform) -> bool {
        self.rank(candidate).is_some()
    }

    /// The position of the first accepted platform that `candidate`
    /// matches: 0 for an exact match, higher for fallbacks, `None` when it
    /// is not accepted.
    pub fn rank(&self, candidate: &Platform) -> Option<usize> {
        let normalized = candidate.normalize();
        self.entries
            .iter()
            .position(|entry| entry_matches(entry, &normalized))
    }

    /// Orders two candidates by preference, as containerd's `Less`: the one
    /// that matches an earlier entry first; at the same entry, the one with
    /// more OS features first; candidates that match nothing last.
    pub fn compare(&self, a: &Platform, b: &Platform) -> Ordering {
        match (self.rank(a), self.rank(b)) {
            (Some(ra), Some(rb)) => ra
                .cmp(&rb)
                .then_with(|| b.os_features.len().cmp(&a.os_features.len())),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
    }

    /// Whether `a` is preferred to `b` (`compare(a, b)` is `Less`).
    pub fn less(&self, a: &Platform, b: &Platform) -> bool {
        self.compare(a, b) == Ordering::Less
    }
}

/// Chooses the manifest of `index` that best fits `wanted`, in the order of
/// [`Matcher::only`]; among equally good manifests, the one with more OS
/// features, then the first in the index. Descriptors without a platform
/// are skipped.
///
/// # Errors
/// [`PlatformError::NoMatch`], listing the platforms the index offers, when
/// no manifest fits.
pub fn select_manifest<'a>(
    index: &'a Index,
    wanted: &Platform,
) -> Result<&'a Descriptor, PlatformError> {
    let matcher = Matcher::only(wanted);
    let mut best: Option<(usize, usize, &'a Descriptor)> = None;
    for descriptor in index.manifests() {
        let Some(platform) = descriptor.platform() else {
            continue;
        };
        let platform = Platform::from(platform);
        let Some(rank) = matcher.rank(&platform) else {
            continue;
        };
        let features = platform.os_features.len();
        let better = match best {
            None => true,
            Some((best_rank, best_features, _)) => {
                rank < best_rank || (rank == best_rank && features > best_features)
            }
        };
        if better {
            best = Some((rank, features, descriptor));
        }
    }
    if let Some((_, _, descriptor)) = best {
        return Ok(descriptor);
    }
    let mut available: Vec<String> = Vec::new();
    for platform in index
        .manifests()
        .iter()
        .filter_map(|d| d.platform().as_ref())
    {
        let s = Platform::from(platform).to_string();
        if !available.contains(&s) {
            available.push(s);
        }
    }
    Err(PlatformError::NoMatch {
        wanted: Box::new(wanted.clone()),
        available,
    })
}

fn entry_matches(entry: &Platform, candidate: &Platform) -> bool {
    entry.os == candidate.os
        && entry.architecture == candidate.architecture
        && entry.variant == candidate.variant
        && os_version_matches(entry, candidate)
        && candidate
            .os_features
            .iter()
            .all(|f| entry.os_features.binary_search(f).is_ok())
}

fn os_version_matches(entry: &Platform, candidate: &Platform) -> bool {
    if entry.os != "windows" {
        return true;
    }
    let host = WindowsVersion::parse(entry.os_version.as_deref().unwrap_or(""));
    match candidate.os_version.as_deref() {
        _ if host.is_empty() => true,
        None | Some("") => true,
        Some(v) => host.runs(WindowsVersion::parse(v)),
    }
}

/// `major.minor.build` of a Windows OS version; zero when unparsable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct WindowsVersion {
    major: u8,
    minor: u8,
    build: u16,
}

impl WindowsVersion {
    /// Windows Server 2022, the first release with a stable container ABI.
    const WS2022: u16 = 20348;
    /// Stable-ABI releases, ascending.
    const STABLE_ABI_RELEASES: [u16; 1] = [Self::WS2022];

    fn parse(v: &str) -> WindowsVersion {
        let mut parts = v.split('.');
        let (Some(major), Some(minor), Some(build)) = (parts.next(), parts.next(), parts.next())
        else {
            return WindowsVersion::default();
        };
        match (major.parse(), minor.parse(), build.parse()) {
            (Ok(major), Ok(minor), Ok(build)) => WindowsVersion {
                major,
                minor,
                build,
            },
            _ => WindowsVersion::default(),
        }
    }

    fn is_empty(self) -> bool {
        self == WindowsVersion::default()
    }

    /// Whether a container of version `ctr` runs on a host of version `self`.
    fn runs(self, ctr: WindowsVersion) -> bool {
        if self.major != ctr.major || self.minor != ctr.minor {
            return false;
        }
        if self.build < Self::WS2022 {
            return self.build == ctr.build;
        }
        let oldest = Self::STABLE_ABI_RELEASES
            .iter()
            .rev()
            .find(|&&release| self.build >= release)
            .copied()
            .unwrap_or(0);
        ctr.build >= oldest && ctr.build <= self.build
    }
}

/// The platforms accepted by `only`, best first; `p` is normalised.
fn platform_vector(p: &Platform) -> Vec<Platform> {
    let mut out = vec![p.clone()];
    let sibling = |architecture: &str, variant: Option<String>| Platform {
        architecture: architecture.to_owned(),
        variant,
        ..p.clone()
    };
    match p.architecture.as_str() {
        "amd64" => {
            if let Some(level) = variant_level(p.variant.as_deref().unwrap_or("")) {
                for l in (1..level.min(MAX_FALLBACK_LEVEL)).rev() {
                    out.push(sibling("amd64", Some(format!("v{l}"))));
                }
            }
            out.push(sibling("386", None));
        }
        "arm" => {
            if let Some(level) = variant_level(p.variant.as_deref().unwrap_or("")) {
                for l in (5..level.min(MAX_FALLBACK_LEVEL)).rev() {
                    out.push(sibling("arm", Some(format!("v{l}"))));
                }
            }
        }
        "arm64" => {
            let variant = p.variant.as_deref().unwrap_or("v8");
            let (major, minor) = match variant.split_once('.') {
                Some((major, minor)) => (major, Some(minor)),
                None => (variant, None),
            };
            if let Some(mut major) = variant_level(major).filter(|&m| m >= 8) {
                let mut minor = match minor {
                    Some(m) if variant.len() == 4 => m.parse::<i64>().unwrap_or(0),
                    _ => 0,
                };
                let arm64 = |major: i64, minor: i64| {
                    if minor == 0 {
                        sibling("arm64", Some(format!("v{major}")))
                    } else {
                        sibling("arm64", Some(format!("v{major}.{minor}")))
                    }
                };
                if major == 9 {
                    for m in (0..minor).rev() {
                        out.push(arm64(9, m));
                    }
                    // v9.0 forked from v8.5: v9.x runs v8.(x+5), up to v8.9.
                    minor = (minor + 5).min(9);
                    major = 8;
                    out.push(sibling("arm64", Some(format!("v8.{minor}"))));
                }
                for m in (0..minor).rev() {
                    out.push(arm64(major, m));
                }
            }
            // Every arm64 runs 32-bit arm up to v8.
            let arm_variant = if variant.starts_with("v8.") || variant.starts_with("v9.") {
                "v8"
            } else {
                variant
            };
            out.extend(platform_vector(&sibling(
                "arm",
                Some(arm_variant.to_owned()),
            )));
        }
        _ => {}
    }
    out
}

/// The number in a variant `vN` or `N`, as containerd reads it.
fn variant_level(variant: &str) -> Option<i64> {
    variant.strip_prefix('v').unwrap_or(variant).parse().ok()
}

fn parse_specifier(s: &str) -> Result<Platform, PlatformError> {
    let fail = |reason: String| PlatformError::Parse {
        input: clip(s),
        reason,
    };
    if s.contains('*') {
        return Err(fail("wildcards are not supported".to_owned()));
    }
    let parts: Vec<&str> = s.splitn(4, '/').collect();
    let Some((&first, rest)) = parts.split_first() else {
        return Err(fail("empty platform".to_owned()));
    };
    let (os, os_version, os_features) = parse_os_component(first).map_err(&fail)?;
    if let Some(bad) = rest.iter().find(|part| !is_specifier_component(part)) {
        return Err(fail(format!(
            "component {:?} must be one or more letters, digits, '_', '.' or '-'",
            clip(bad)
        )));
    }
    let os = normalize_os(os);
    let mut platform = Platform {
        os,
        architecture: String::new(),
        variant: None,
        os_version,
        os_features,
    };
    match *rest {
        [] => {
            if is_known_os(&platform.os) {
                let (architecture, variant) = host_arch();
                platform.architecture = architecture.to_owned();
                platform.variant = variant.filter(|&v| v != "v7").map(str::to_owned);
                return Ok(platform);
            }
            let (architecture, variant) = normalize_arch(first, "");
            if !is_known_arch(&architecture) {
                return Err(fail(format!(
                    "{:?} is neither a known operating system nor a known architecture",
                    clip(first)
                )));
            }
            Ok(Platform {
                os: host_os().to_owned(),
                variant: drop_arm_v7(&architecture, variant),
                architecture,
                os_version: None,
                os_features: Vec::new(),
            })
        }
        [arch] => {
            let (architecture, variant) = normalize_arch(arch, "");
            platform.variant = drop_arm_v7(&architecture, variant);
            platform.architecture = architecture;
            Ok(platform)
        }
        [arch, variant] => {
            let (architecture, variant) = normalize_arch(arch, variant);
            platform.variant = match variant {
                None if architecture == "arm64" => Some("v8".to_owned()),
                v => v,
            };
            platform.architecture = architecture;
            Ok(platform)
        }
        _ => Err(fail(
            "expected at most three '/'-separated components (os/arch/variant)".to_owned(),
        )),
    }
}

/// `arm/v7` is written `arm` when the variant was not given explicitly.
fn drop_arm_v7(architecture: &str, variant: Option<String>) -> Option<String> {
    variant.filter(|v| !(architecture == "arm" && v == "v7"))
}

/// `name[(version[+feature]*)]` with name `[A-Za-z0-9_-]+` and the options
/// `[A-Za-z0-9_.%-]`, percent-encoded.
fn parse_os_component(part: &str) -> Result<(&str, Option<String>, Vec<String>), String> {
    let bad = || {
        format!(
            "operating system {:?} must be letters, digits, '_' or '-', optionally followed \
             by (version+feature...)",
            clip(part)
        )
    };
    let name_end = part
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(part.len());
    let (name, options) = part.split_at(name_end);
    if name.is_empty() {
        return Err(bad());
    }
    if options.is_empty() {
        return Ok((name, None, Vec::new()));
    }
    let Some(inner) = options.strip_prefix('(').and_then(|o| o.strip_suffix(')')) else {
        return Err(bad());
    };
    let option_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '%' | '-');
    let mut pieces = inner.split('+');
    let version = pieces.next().unwrap_or("");
    if !version.chars().all(option_char) {
        return Err(bad());
    }
    let mut features = Vec::new();
    for feature in pieces {
        if feature.is_empty() || !feature.chars().all(option_char) {
            return Err(bad());
        }
        features.push(decode_os_option(feature)?);
    }
    let version = decode_os_option(version)?;
    Ok((name, (!version.is_empty()).then_some(version), features))
}

/// Undoes percent-encoding (`%2B` is `+`).
fn decode_os_option(raw: &str) -> Result<String, String> {
    if !raw.contains('%') {
        return Ok(raw.to_owned());
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|&h| (h as char).to_digit(16));
            let lo = bytes.get(i + 2).and_then(|&l| (l as char).to_digit(16));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(format!("bad percent-encoding in OS option {:?}", clip(raw)));
            };
            // Two hex digits make at most 255.
            out.push(u8::try_from(hi * 16 + lo).unwrap_or(u8::MAX));
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| format!("OS option {:?} does not decode to UTF-8", clip(raw)))
}

/// Percent-encodes every byte outside `[A-Za-z0-9_.-]`, so the result parses
/// back to `value`.
fn encode_os_option(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `[A-Za-z0-9_.-]+`.
fn is_specifier_component(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn normalize_os(os: &str) -> String {
    if os.is_empty() {
        return host_os().to_owned();
    }
    let os = os.to_lowercase();
    if os == "macos" {
        "darwin".to_owned()
    } else {
        os
    }
}

/// containerd's `normalizeArch`, plus the arm64 spellings `v8.0` (the
/// default, dropped) and `9`, `9.0`, `v9.0` (`v9`), which newer containerd
/// releases also fold.
fn normalize_arch(arch: &str, variant: &str) -> (String, Option<String>) {
    let arch = arch.to_lowercase();
    let variant = variant.to_lowercase();
    let (arch, variant): (&str, String) = match arch.as_str() {
        "i386" => ("386", String::new()),
        "x86_64" | "x86-64" | "amd64" => (
            "amd64",
            if variant == "v1" {
                String::new()
            } else {
                variant
            },
        ),
        "aarch64" | "arm64" => {
            let variant = match variant.as_str() {
                "8" | "v8" | "v8.0" => String::new(),
                "9" | "9.0" | "v9.0" => "v9".to_owned(),
                _ => variant,
            };
            ("arm64", variant)
        }
        "armhf" => ("arm", "v7".to_owned()),
        "armel" => ("arm", "v6".to_owned()),
        "arm" => {
            let variant = match variant.as_str() {
                "" | "7" => "v7".to_owned(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm", variant)
        }
        other => return (other.to_owned(), (!variant.is_empty()).then_some(variant)),
    };
    (arch.to_owned(), (!variant.is_empty()).then_some(variant))
}

/// Operating systems Go knows (`go/build/syslist.go`), as containerd lists them.
fn is_known_os(os: &str) -> bool {
    matches!(
        os,
        "aix"
            | "android"
            | "darwin"
            | "dragonfly"
            | "freebsd"
            | "hurd"
            | "illumos"
            | "ios"
            | "js"
            | "linux"
            | "nacl"
            | "netbsd"
            | "openbsd"
            | "plan9"
            | "solaris"
            | "windows"
            | "zos"
    )
}

/// Architectures Go knows, as containerd lists them.
fn is_known_arch(arch: &str) -> bool {
    matches!(
        arch,
        "386"
            | "amd64"
            | "amd64p32"
            | "arm"
            | "armbe"
            | "arm64"
            | "arm64be"
            | "ppc64"
            | "ppc64le"
            | "loong64"
            | "mips"
            | "mipsle"
            | "mips64"
            | "mips64le"
            | "mips64p32"
            | "mips64p32le"
            | "ppc"
            | "riscv"
            | "riscv64"
            | "s390"
            | "s390x"
            | "sparc"
            | "sparc64"
            | "wasm"
    )
}

/// The build target's OS in Go's spelling.
fn host_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    }
}

/// The build target's architecture and variant in Go's spelling, normalised.
fn host_arch() -> (&'static str, Option<&'static str>) {
    let little = cfg!(target_endian = "little");
    match std::env::consts::ARCH {
        "x86" => ("386", None),
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", None),
        "arm" => ("arm", Some(host_arm_variant())),
        "loongarch64" => ("loong64", None),
        "mips" if little => ("mipsle", None),
        "mips64" if little => ("mips64le", None),
        "powerpc" => ("ppc", None),
        "powerpc64" if little => ("ppc64le", None),
        "powerpc64" => ("ppc64", None),
        "wasm32" => ("wasm", None),
        other => (other, None),
    }
}

fn host_arm_variant() -> &'static str {
    if cfg!(all(target_arch = "arm", target_feature = "v8")) {
        "v8"
    } else if cfg!(all(target_arch = "arm", target_feature = "v7")) {
        "v7"
    } else if cfg!(all(target_arch = "arm", target_feature = "v6")) {
        "v6"
    } else {
        "v5"
    }
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(ERROR_INPUT_MAX) {
        Some((end, _)) => s[..end].to_owned(),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    fn p(s: &str) -> Platform {
        s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn plat(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            variant: variant.map(str::to_owned),
            ..Platform::new(os, arch)
        }
    }

    #[test]
    fn parse_specifiers() {
        let host = Platform::host();
        let host_variant = host.variant.clone().filter(|v| v != "v7");
        let cases: Vec<(&str, Platform)> = vec![
            ("linux/amd64", plat("linux", "amd64", None)),
            ("linux/x86_64", plat("linux", "amd64", None)),
            ("linux/x86-64", plat("linux", "amd64", None)),
            ("Linux/AMD64", plat("linux", "amd64", None)),
            ("linux/amd64/v1", plat("linux", "amd64", None)),
            ("linux/amd64/v3", plat("linux", "amd64", Some("v3"))),
            ("linux/amd64/V2", plat("linux", "amd64", Some("v2"))),
            ("linux/i386", plat("linux", "386", None)),
            ("linux/i386/v7", plat("linux", "386", None)),
            ("linux/386", plat("linux", "386", None)),
            ("linux/arm64", plat("linux", "arm64", None)),
            ("linux/aarch64", plat("linux", "arm64", None)),
            ("linux/arm64/v8", plat("linux", "arm64", Some("v8"))),
            ("linux/aarch64/8", plat("linux", "arm64", Some("v8"))),
            ("linux/arm64/v8.0", plat("linux", "arm64", Some("v8"))),
            ("linux/arm64/v8.2", plat("linux", "arm64", Some("v8.2"))),
            ("linux/arm64/v9.0", plat("linux", "arm64", Some("v9"))),
            ("linux/arm", plat("linux", "arm", None)),
            ("linux/armhf", plat("linux", "arm", None)),
            ("linux/armel", plat("linux", "arm", Some("v6"))),
            ("linux/arm/v7", plat("linux", "arm", Some("v7"))),
            ("linux/arm/7", plat("linux", "arm", Some("v7"))),
            ("linux/arm/6", plat("linux", "arm", Some("v6"))),
            ("linux/arm/v5", plat("linux", "arm", Some("v5"))),
            ("linux/ppc64le", plat("linux", "ppc64le", None)),
            ("linux/s390x", plat("linux", "s390x", None)),
            ("linux/riscv64", plat("linux", "riscv64", None)),
            ("linux/mips64/Foo", plat("linux", "mips64", Some("foo"))),
            ("linux/unknownarch", plat("linux", "unknownarch", None)),
            ("macos/arm64", plat("darwin", "arm64", None)),
            ("freebsd/amd64", plat("freebsd", "amd64", None)),
            ("windows/amd64", plat("windows", "amd64", None)),
            (
                "windows(10.0.17763)/amd64",
                Platform {
                    os_version: Some("10.0.17763".into()),
                    ..plat("windows", "amd64", None)
                },
            ),
            (
                "windows(10.0.17763+win32k+gpu)/amd64",
                Platform {
                    os_version: Some("10.0.17763".into()),
                    os_features: vec!["win32k".into(), "gpu".into()],
                    ..plat("windows", "amd64", None)
                },
            ),
            (
                "linux(+a%2Bb)/arm64",
                Platform {
                    os_features: vec!["a+b".into()],
                    ..plat("linux", "arm64", None)
                },
            ),
            (
                "linux",
                Platform {
                    variant: host_variant.clone(),
                    ..plat("linux", &host.architecture, None)
                },
            ),
            (
                "windows(10.0.20348)",
                Platform {
                    variant: host_variant,
                    os_version: Some("10.0.20348".into()),
                    ..plat("windows", &host.architecture, None)
                },
            ),
            ("arm64", plat(&host.os, "arm64", None)),
            ("aarch64", plat(&host.os, "arm64", None)),
            ("x86_64", plat(&host.os, "amd64", None)),
            ("armhf", plat(&host.os, "arm", None)),
            ("armel", plat(&host.os, "arm", Some("v6"))),
            ("i386", plat(&host.os, "386", None)),
        ];
        for (input, want) in cases {
            assert_eq!(p(input), want, "{input}");
        }
    }

    #[test]
    fn parse_errors_name_the_input() {
        for (input, needle) in [
            ("", "operating system \"\""),
            ("linux/*", "wildcards"),
            ("linux/amd64/v8/extra", "at most three"),
            ("linux//v7", "component \"\""),
            ("linux/amd64/", "component \"\""),
            ("li nux/amd64", "operating system \"li nux\""),
            ("linux(/amd64", "operating system \"linux(\""),
            ("linux(1.0+)/amd64", "operating system"),
            ("linux(%zz)/amd64", "percent-encoding"),
            ("linux/amd 64", "component \"amd 64\""),
            (
                "nosuchthing",
                "neither a known operating system nor a known architecture",
            ),
            ("amd64(x)", "neither"),
        ] {
            let err = input.parse::<Platform>().expect_err(input);
            let msg = err.to_string();
            assert!(msg.contains(&format!("{input:?}")), "{msg}");
            assert!(msg.contains(needle), "{input}: {msg}");
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn display() {
        for (input, shown) in [
            ("linux/amd64", "linux/amd64"),
            ("linux/x86_64", "linux/amd64"),
            ("linux/arm64/v8", "linux/arm64/v8"),
            ("linux/armel", "linux/arm/v6"),
            ("linux/armhf", "linux/arm"),
            (
                "windows(10.0.17763+win32k)/amd64",
                "windows(10.0.17763+win32k)/amd64",
            ),
            ("linux(+a%2Bb)/arm64", "linux(+a%2Bb)/arm64"),
        ] {
            assert_eq!(p(input).to_string(), shown, "{input}");
        }
        assert_eq!(Platform::new("", "amd64").to_string(), "unknown");
        assert_eq!(Platform::new("linux", "").to_string(), "linux");
    }

    #[test]
    fn normalize_arch_table() {
        for ((arch, variant), (want_arch, want_variant)) in [
            (("x86_64", ""), ("amd64", None)),
            (("x86-64", "v2"), ("amd64", Some("v2"))),
            (("AMD64", "V1"), ("amd64", None)),
            (("amd64", "v4"), ("amd64", Some("v4"))),
            (("i386", "v6"), ("386", None)),
            (("386", ""), ("386", None)),
            (("aarch64", ""), ("arm64", None)),
            (("arm64", "v8"), ("arm64", None)),
            (("arm64", "8"), ("arm64", None)),
            (("arm64", "v8.0"), ("arm64", None)),
            (("arm64", "v8.1"), ("arm64", Some("v8.1"))),
            (("arm64", "9"), ("arm64", Some("v9"))),
            (("arm64", "v9.0"), ("arm64", Some("v9"))),
            (("armhf", ""), ("arm", Some("v7"))),
            (("armhf", "v6"), ("arm", Some("v7"))),
            (("armel", ""), ("arm", Some("v6"))),
            (("arm", ""), ("arm", Some("v7"))),
            (("arm", "7"), ("arm", Some("v7"))),
            (("arm", "5"), ("arm", Some("v5"))),
            (("arm", "6"), ("arm", Some("v6"))),
            (("arm", "8"), ("arm", Some("v8"))),
            (("arm", "v6"), ("arm", Some("v6"))),
            (("ARM", "V8"), ("arm", Some("v8"))),
            (("ppc64le", ""), ("ppc64le", None)),
            (("riscv64", "rva22u64"), ("riscv64", Some("rva22u64"))),
        ] {
            assert_eq!(
                normalize_arch(arch, variant),
                (want_arch.to_owned(), want_variant.map(str::to_owned)),
                "{arch}/{variant}"
            );
        }
        let n = Platform {
            os_features: vec!["b".into(), "a".into(), "b".into()],
            ..plat("MacOS", "aarch64", Some("v8"))
        }
        .normalize();
        assert_eq!(
            n,
            Platform {
                os_features: vec!["a".into(), "b".into()],
                ..plat("darwin", "arm64", None)
            }
        );
        assert_eq!(
            Platform::new("", "amd64").normalize().os,
            Platform::host().os
        );
    }

    #[test]
    fn host_is_normalised() {
        let host = Platform::host();
        assert_eq!(host.normalize(), host);
        assert!(is_known_os(&host.os) || host.os == "unknown", "{host}");
        if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            assert_eq!(host, plat("linux", "amd64", None));
        }
    }

    /// containerd's `TestOnly`.
    #[test]
    #[rustfmt::skip]
    fn only_matches() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("linux/amd64", &["linux/amd64", "linux/386"], &["linux/amd64/v2", "linux/arm/v7", "linux/arm64", "windows/amd64", "windows/arm"]),
            ("linux/amd64/v2", &["linux/amd64", "linux/amd64/v1", "linux/amd64/v2", "linux/386"], &["linux/amd64/v3", "linux/amd64/v4", "linux/arm/v7", "linux/arm64", "windows/amd64", "windows/arm"]),
            ("linux/386", &["linux/386"], &["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/amd64", "windows/arm"]),
            ("windows/amd64", &["windows/amd64", "windows(10.0.17763)/amd64"], &["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/arm"]),
            ("linux/arm/v8", &["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8"], &["linux/amd64", "linux/arm/v4", "linux/arm64", "windows/amd64", "windows/arm"]),
            ("linux/arm/v7", &["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7"], &["linux/amd64", "linux/arm/v4", "linux/arm/v8", "linux/arm64", "windows/amd64", "windows/arm"]),
            ("linux/arm/v6", &["linux/arm/v5", "linux/arm/v6"], &["linux/amd64", "linux/arm", "linux/arm/v4", "linux/arm/v7", "linux/arm/v8", "linux/arm64", "windows/amd64", "windows/arm"]),
            ("linux/arm/v5", &["linux/arm/v5"], &["linux/amd64", "linux/arm", "linux/arm/v4", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8", "linux/arm64", "windows/amd64", "windows/arm"]),
            ("linux/arm/v4", &["linux/arm/v4"], &["linux/amd64", "linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8", "linux/arm64", "windows/amd64", "windows/arm"]),
            ("linux/arm64/v9", &["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8", "linux/arm64", "linux/arm64/v8", "linux/arm64/v8.1", "linux/arm64/v8.2", "linux/arm64/v8.3", "linux/arm64/v8.4", "linux/arm64/v8.5", "linux/arm64/v9", "linux/arm64/v9.0"], &["linux/amd64", "linux/arm/v4", "windows/amd64", "windows/arm", "linux/arm64/v8.6"]),
            ("linux/arm64/v8.1", &["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8", "linux/arm64", "linux/arm64/v8", "linux/arm64/v8.1"], &["linux/amd64", "linux/arm/v4", "linux/arm/v9", "linux/arm64/v9", "windows/amd64", "windows/arm"]),
            ("linux/arm64", &["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8", "linux/arm64", "linux/arm64/v8"], &["linux/amd64", "linux/arm/v4", "linux/arm/v9", "linux/arm64/v9", "windows/amd64", "windows/arm"]),
        ];
        for (wanted, yes, no) in cases {
            let m = Matcher::only(&p(wanted));
            for c in *yes {
                assert!(m.matches(&p(c)), "only({wanted}) should match {c}");
            }
            for c in *no {
                assert!(!m.matches(&p(c)), "only({wanted}) should not match {c}");
            }
        }
    }

    /// containerd's `TestOnlyStrict`.
    #[test]
    #[rustfmt::skip]
    fn only_strict_matches() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("linux/amd64", &["linux/amd64"], &["linux/386", "linux/arm/v7", "linux/arm64", "windows/amd64", "windows/arm"]),
            ("windows(10.0.17763)/amd64", &["windows/amd64", "windows(10.0.17763)/amd64"], &["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/arm"]),
            ("linux/arm/v8", &["linux/arm/v8"], &["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm64"]),
            ("linux/arm/v7", &["linux/arm", "linux/arm/v7"], &["linux/arm/v5", "linux/arm/v6", "linux/arm/v8", "linux/arm64"]),
            ("linux/arm64/v9", &["linux/arm64/v9", "linux/arm64/v9.0"], &["linux/arm", "linux/arm/v8", "linux/arm64/v8", "linux/arm64/v8.1"]),
            ("linux/arm64", &["linux/arm64", "linux/arm64/v8"], &["linux/arm", "linux/arm/v8", "linux/arm64/v9", "linux/amd64"]),
        ];
        for (wanted, yes, no) in cases {
            let m = Matcher::only_strict(&p(wanted));
            for c in *yes {
                assert!(m.matches(&p(c)), "only_strict({wanted}) should match {c}");
            }
            for c in *no {
                assert!(!m.matches(&p(c)), "only_strict({wanted}) should not match {c}");
            }
        }
    }

    #[test]
    fn fallback_order() {
        let order = |s: &str| -> Vec<String> {
            Matcher::only(&p(s))
                .platforms()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(
            order("linux/arm/v7"),
            ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]
        );
        assert_eq!(
            order("linux/arm"),
            ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]
        );
        assert_eq!(order("linux/amd64"), ["linux/amd64", "linux/386"]);
        assert_eq!(
            order("linux/amd64/v3"),
            [
                "linux/amd64/v3",
                "linux/amd64/v2",
                "linux/amd64",
                "linux/386"
            ]
        );
        assert_eq!(order("linux/386"), ["linux/386"]);
        assert_eq!(order("linux/s390x"), ["linux/s390x"]);
        assert_eq!(
            order("linux/arm64/v8"),
            [
                "linux/arm64",
                "linux/arm/v8",
                "linux/arm/v7",
                "linux/arm/v6",
                "linux/arm/v5"
            ]
        );
        assert_eq!(
            order("linux/arm64/v8.2"),
            [
                "linux/arm64/v8.2",
                "linux/arm64/v8.1",
                "linux/arm64",
                "linux/arm/v8",
                "linux/arm/v7",
                "linux/arm/v6",
                "linux/arm/v5"
            ]
        );
        assert_eq!(
            order("linux/arm64/v9.1"),
            [
                "linux/arm64/v9.1",
                "linux/arm64/v9",
                "linux/arm64/v8.6",
                "linux/arm64/v8.5",
                "linux/arm64/v8.4",
                "linux/arm64/v8.3",
                "linux/arm64/v8.2",
                "linux/arm64/v8.1",
                "linux/arm64",
                "linux/arm/v8",
                "linux/arm/v7",
                "linux/arm/v6",
                "linux/arm/v5"
            ]
        );
        // A hostile variant does not make a huge list.
        assert!(
            Matcher::only(&p("linux/amd64/v4000000000"))
                .platforms()
                .len()
                <= 66
        );
        assert!(
            Matcher::only(&p("linux/arm64/v999999999"))
                .platforms()
                .len()
                <= 66
        );

        // Sorting candidates by preference.
        let m = Matcher::only(&p("linux/arm64"));
        let mut candidates: Vec<Platform> = [
            "linux/arm/v5",
            "linux/amd64",
            "linux/arm/v7",
            "linux/arm64/v8",
            "linux/arm/v6",
        ]
        .into_iter()
        .map(p)
        .collect();
        candidates.sort_by(|a, b| m.compare(a, b));
        let sorted: Vec<String> = candidates.iter().map(ToString::to_string).collect();
        assert_eq!(
            sorted,
            [
                "linux/arm64/v8",
                "linux/arm/v7",
                "linux/arm/v6",
                "linux/arm/v5",
                "linux/amd64"
            ]
        );
        assert!(m.less(&p("linux/arm64"), &p("linux/arm/v7")));
        assert!(!m.less(&p("linux/arm/v7"), &p("linux/arm64")));
        assert_eq!(m.rank(&p("linux/arm/v7")), Some(2));
        assert_eq!(m.rank(&p("linux/amd64")), None);
        assert!(p("linux/arm/v7").matches(&p("linux/arm/v6")));
        assert!(!p("linux/arm/v6").matches(&p("linux/arm/v7")));
    }

    #[test]
    fn os_features_and_windows_versions() {
        let wanted = Platform {
            os_features: vec!["win32k".into(), "sse4".into()],
            ..plat("windows", "amd64", None)
        };
        let m = Matcher::only(&wanted);
        assert!(m.matches(&plat("windows", "amd64", None)));
        assert!(m.matches(&Platform {
            os_features: vec!["win32k".into()],
            ..plat("windows", "amd64", None)
        }));
        assert!(!m.matches(&Platform {
            os_features: vec!["gpu".into()],
            ..plat("windows", "amd64", None)
        }));
        let more = Platform {
            os_features: vec!["win32k".into()],
            ..plat("windows", "amd64", None)
        };
        assert!(m.less(&more, &plat("windows", "amd64", None)));

        let host = |v: &str| {
            Matcher::only(&Platform {
                os_version: Some(v.into()),
                ..plat("windows", "amd64", None)
            })
        };
        let image = |v: &str| Platform {
            os_version: Some(v.into()),
            ..plat("windows", "amd64", None)
        };
        assert!(host("10.0.17763.1").matches(&image("10.0.17763.2000")));
        assert!(!host("10.0.17763.1").matches(&image("10.0.20348.1")));
        assert!(host("10.0.20348.1").matches(&image("10.0.20348.5")));
        assert!(host("10.0.22621.1").matches(&image("10.0.20348.1")));
        assert!(!host("10.0.22621.1").matches(&image("10.0.17763.1")));
        assert!(!host("10.0.20348.1").matches(&image("10.0.22621.1")));
        assert!(host("10.0.17763.1").matches(&plat("windows", "amd64", None)));
        assert!(host("junk").matches(&image("10.0.17763.1")));
        // Linux ignores the OS version.
        assert!(Matcher::only(&p("linux(5.10)/amd64")).matches(&p("linux(6.1)/amd64")));
    }

    #[test]
    fn serde_matches_oci_json() {
        let w = Platform {
            os_version: Some("10.0.17763.1879".into()),
            os_features: vec!["win32k".into()],
            ..plat("windows", "amd64", None)
        };
        let json = serde_json::to_string(&w).expect("serialize");
        assert_eq!(
            json,
            r#"{"os":"windows","architecture":"amd64","os.version":"10.0.17763.1879","os.features":["win32k"]}"#
        );
        assert_eq!(serde_json::from_str::<Platform>(&json).expect("back"), w);
        let arm = plat("linux", "arm", Some("v7"));
        let json = serde_json::to_string(&arm).expect("serialize");
        assert_eq!(
            json,
            r#"{"os":"linux","architecture":"arm","variant":"v7"}"#
        );
        let blank: Platform = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","variant":"","os.version":""}"#,
        )
        .expect("blank optionals");
        assert_eq!(blank, plat("linux", "amd64", None));
        assert!(serde_json::from_str::<Platform>(r#"{"os":"linux"}"#).is_err());
    }

    #[test]
    fn oci_spec_conversion() {
        for s in [
            "linux/amd64",
            "linux/arm/v7",
            "linux/arm64/v8",
            "linux/armbe",
            "windows(10.0.17763+win32k)/amd64",
            "plan9/weird/v1",
        ] {
            let ours = p(s);
            let theirs = oci_spec::image::Platform::from(&ours);
            assert_eq!(Platform::from(&theirs), ours, "{s}");
        }
        let theirs = oci_spec::image::Platform::from(p("linux/arm/v6"));
        assert_eq!(theirs.architecture(), &oci_spec::image::Arch::ARM);
        assert_eq!(theirs.os(), &oci_spec::image::Os::Linux);
        assert_eq!(theirs.variant().as_deref(), Some("v6"));
        assert_eq!(theirs.os_features(), &None);
    }

    fn descriptor(tag: &str, platform: Option<Platform>) -> oci_spec::image::Descriptor {
        let mut d = oci_spec::image::Descriptor::new(
            oci_spec::image::MediaType::ImageManifest,
            100,
            Digest::sha256(tag.as_bytes()),
        );
        d.set_platform(platform.map(Into::into));
        d
    }

    fn index(entries: Vec<(&str, Option<Platform>)>) -> Index {
        let mut index = oci_spec::image::ImageIndex::default();
        index.set_manifests(entries.into_iter().map(|(t, p)| descriptor(t, p)).collect());
        Index::new(index).expect("a valid index")
    }

    #[test]
    fn select_from_index() {
        let index = index(vec![
            ("no-platform", None),
            ("amd64", Some(p("linux/amd64"))),
            ("arm-v6", Some(p("linux/arm/v6"))),
            ("arm-v7", Some(p("linux/arm/v7"))),
            ("arm64", Some(p("linux/arm64/v8"))),
            ("ppc", Some(p("linux/ppc64le"))),
            (
                "win-2019",
                Some(Platform {
                    os_version: Some("10.0.17763.1879".into()),
                    ..p("windows/amd64")
                }),
            ),
            (
                "win-2022",
                Some(Platform {
                    os_version: Some("10.0.20348.1".into()),
                    ..p("windows/amd64")
                }),
            ),
            ("attestation", Some(Platform::new("unknown", "unknown"))),
            ("amd64-again", Some(p("linux/amd64"))),
        ]);
        let pick =
            |wanted: &str| select_manifest(&index, &p(wanted)).map(|d| d.digest().to_string());
        let digest_of = |tag: &str| Ok(Digest::sha256(tag.as_bytes()).to_string());
        assert_eq!(
            pick("linux/amd64"),
            digest_of("amd64"),
            "first of equals wins"
        );
        assert_eq!(pick("linux/amd64/v3"), digest_of("amd64"));
        assert_eq!(pick("linux/arm/v7"), digest_of("arm-v7"));
        assert_eq!(pick("linux/arm"), digest_of("arm-v7"));
        assert_eq!(pick("linux/arm/v8"), digest_of("arm-v7"));
        assert_eq!(pick("linux/arm/v6"), digest_of("arm-v6"));
        assert_eq!(pick("linux/arm64"), digest_of("arm64"));
        assert_eq!(pick("linux/aarch64/v8.2"), digest_of("arm64"));
        assert_eq!(pick("linux/ppc64le"), digest_of("ppc"));
        assert_eq!(
            pick("windows(10.0.17763.2000)/amd64"),
            digest_of("win-2019")
        );
        assert_eq!(pick("windows(10.0.22621.1)/amd64"), digest_of("win-2022"));

        let err = select_manifest(&index, &p("linux/s390x")).expect_err("no s390x");
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let PlatformError::NoMatch { wanted, available } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(**wanted, p("linux/s390x"));
        assert_eq!(
            available,
            &[
                "linux/amd64",
                "linux/arm/v6",
                "linux/arm/v7",
                "linux/arm64/v8",
                "linux/ppc64le",
                "windows(10.0.17763.1879)/amd64",
                "windows(10.0.20348.1)/amd64",
                "unknown/unknown",
            ]
        );
        assert_eq!(
            err.to_string(),
            "no manifest in the image index matches platform linux/s390x; the index offers \
             linux/amd64, linux/arm/v6, linux/arm/v7, linux/arm64/v8, linux/ppc64le, \
             windows(10.0.17763.1879)/amd64, windows(10.0.20348.1)/amd64, unknown/unknown"
        );
        // arm/v5 runs nowhere in this index.
        assert!(select_manifest(&index, &p("linux/arm/v5")).is_err());
        // An arm64 host prefers a 32-bit arm image to nothing.
        let arm_only = super::tests::index(vec![
            ("v6", Some(p("linux/arm/v6"))),
            ("v7", Some(p("linux/arm/v7"))),
        ]);
        assert_eq!(
            select_manifest(&arm_only, &p("linux/arm64")).map(|d| d.digest().to_string()),
            digest_of("v7")
        );
        let empty = super::tests::index(vec![("none", None)]);
        let err = select_manifest(&empty, &p("linux/amd64")).expect_err("nothing");
        assert!(
            err.to_string()
                .ends_with("the index lists no manifest with a platform"),
            "{err}"
        );
    }

    #[test]
    fn select_prefers_more_features() {
        let wanted = Platform {
            os_features: vec!["sse4".into()],
            ..p("linux/amd64")
        };
        let index = index(vec![
            ("plain", Some(p("linux/amd64"))),
            (
                "sse4",
                Some(Platform {
                    os_features: vec!["sse4".into()],
                    ..p("linux/amd64")
                }),
            ),
            (
                "avx",
                Some(Platform {
                    os_features: vec!["avx".into()],
                    ..p("linux/amd64")
                }),
            ),
        ]);
        let chosen = select_manifest(&index, &wanted).expect("match");
        assert_eq!(
            chosen.digest().to_string(),
            Digest::sha256(b"sse4").to_string()
        );
    }

    /// A small deterministic generator (xorshift64*) of specifier-like strings.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[(self.next() % items.len() as u64) as usize]
        }

        fn specifier(&mut self) -> String {
            const PIECES: &[&str] = &[
                "linux",
                "Linux",
                "windows",
                "macos",
                "darwin",
                "freebsd",
                "amd64",
                "x86_64",
                "x86-64",
                "arm",
                "armhf",
                "armel",
                "arm64",
                "aarch64",
                "i386",
                "386",
                "ppc64le",
                "v1",
                "v2",
                "v5",
                "v6",
                "v7",
                "v8",
                "v8.0",
                "v8.2",
                "v9",
                "9.0",
                "7",
                "8",
                "V7",
                "/",
                "/",
                "/",
                "/",
                "(",
                ")",
                "+",
                "10.0.17763",
                "win32k",
                "%2B",
                "%41",
                "%",
                "_",
                ".",
                "-",
                " ",
                "*",
                "mips64",
                "riscv64",
                "weird",
            ];
            let n = 1 + self.next() % 7;
            (0..n).map(|_| self.pick(PIECES)).collect()
        }
    }

    /// For every `s` that parses, `parse(display(parse(s))) == parse(s)`.
    #[test]
    fn round_trip_on_generated_inputs() {
        let mut g = Gen(0x2545_f491_4f6c_dd1d);
        let mut parsed = 0;
        for _ in 0..5000 {
            let s = g.specifier();
            let Ok(platform) = s.parse::<Platform>() else {
                continue;
            };
            parsed += 1;
            let shown = platform.to_string();
            assert_eq!(
                shown.parse::<Platform>().as_ref(),
                Ok(&platform),
                "{s:?} shown as {shown:?}"
            );
            assert_eq!(
                platform.normalize().normalize(),
                platform.normalize(),
                "{s:?}"
            );
        }
        assert!(parsed >= 300, "only {parsed} generated inputs parsed");
    }
}
