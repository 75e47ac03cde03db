//! `--annotation` as buildx spells it: `[TYPE[\[PLATFORM\]]:]KEY=VALUE`,
//! where TYPE says what the annotation lands on ([`Level`]) and PLATFORM
//! narrows a manifest level to one platform's image. Without a type, the
//! image manifest (BuildKit's default).
//!
//! The keys of [`BuildOptions::annotations`](super::BuildOptions) are
//! parsed once, before anything is built, so an unknown type or an index
//! level on a build whose result is one manifest fails at once.

use std::collections::{BTreeMap, HashMap};

use image_core::Platform;

use super::BuildError;

/// What an annotation lands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// `manifest:` (or no type): each image manifest.
    Manifest,
    /// `manifest-descriptor:`: the descriptor of each image manifest, in
    /// the index of a multi-platform build, else the tag's.
    ManifestDescriptor,
    /// `index:`: the image index of a multi-platform build.
    Index,
    /// `index-descriptor:`: the descriptor of that index, as tagged.
    IndexDescriptor,
}

impl Level {
    /// The type as buildx spells it.
    pub fn name(self) -> &'static str {
        match self {
            Level::Manifest => "manifest",
            Level::ManifestDescriptor => "manifest-descriptor",
            Level::Index => "index",
            Level::IndexDescriptor => "index-descriptor",
        }
    }

    /// Whether this level needs an index (a multi-platform result).
    pub fn needs_index(self) -> bool {
        matches!(self, Level::Index | Level::IndexDescriptor)
    }

    fn from_name(name: &str) -> Option<Level> {
        [
            Level::Manifest,
            Level::ManifestDescriptor,
            Level::Index,
            Level::IndexDescriptor,
        ]
        .into_iter()
        .find(|l| l.name() == name)
    }
}

/// One `--annotation`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    /// What it lands on.
    pub level: Level,
    /// The one platform whose manifest (or descriptor) it is for; every
    /// platform's when `None`.
    pub platform: Option<Platform>,
    /// The key, without its type.
    pub key: String,
    /// The value.
    pub value: String,
}

/// The annotations of a build, parsed (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub struct Annotations(Vec<Annotation>);

impl Annotations {
    /// Parses `given` (keys as `--annotation` spells them).
    ///
    /// # Errors
    /// [`BuildError::Annotation`] for an empty key, an unknown type or a
    /// platform that does not parse or is put on an index level.
    pub fn parse(given: &BTreeMap<String, String>) -> Result<Annotations, BuildError> {
        given
            .iter()
            .map(|(k, v)| parse_one(k, v))
            .collect::<Result<Vec<_>, _>>()
            .map(Annotations)
    }

    /// The first annotation of a level that needs an index, spelled as
    /// given: what a build whose result is one manifest refuses.
    pub fn needing_index(&self) -> Option<String> {
        self.0
            .iter()
            .find(|a| a.level.needs_index())
            .map(|a| format!("{}:{}", a.level.name(), a.key))
    }

    /// The annotations of `level` for the image of `platform` (those of
    /// every platform, then those of that one, which win).
    pub fn of(&self, level: Level, platform: Option<&Platform>) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let levelled = || self.0.iter().filter(|a| a.level == level);
        for a in levelled().filter(|a| a.platform.is_none()) {
            out.insert(a.key.clone(), a.value.clone());
        }
        for a in levelled().filter(|a| {
            a.platform
                .as_ref()
                .is_some_and(|p| platform.is_some_and(|q| p.matches(q)))
        }) {
            out.insert(a.key.clone(), a.value.clone());
        }
        out
    }
}

/// `annotations` as a descriptor or document holds them (`None` for none).
pub fn as_map(annotations: BTreeMap<String, String>) -> Option<HashMap<String, String>> {
    (!annotations.is_empty()).then(|| annotations.into_iter().collect())
}

/// One key: `TYPE[PLATFORM]:KEY`, `TYPE:KEY` or `KEY`. A key whose part
/// before its first `:` is not lower-case letters and dashes (with an
/// optional `[...]`) has no type, as buildx reads it.
fn parse_one(spelled: &str, value: &str) -> Result<Annotation, BuildError> {
    let invalid = |reason: &'static str| BuildError::Annotation {
        annotation: spelled.to_owned(),
        reason,
    };
    let (level, platform, key) = match spelled.split_once(':') {
        Some((head, key)) if is_type(head) => {
            let (name, platform) = match head.split_once('[') {
                Some((name, rest)) => (name, Some(&rest[..rest.len() - 1])),
                None => (head, None),
            };
            let level = Level::from_name(name).ok_or_else(|| {
                invalid(
                    "unknown annotation type: expected manifest, manifest-descriptor, index or \
                     index-descriptor",
                )
            })?;
            let platform = match platform {
                None => None,
                Some(_) if level.needs_index() => {
                    return Err(invalid("a platform selects manifests, not the index"))
                }
                Some(p) => Some(
                    p.parse::<Platform>()
                        .map_err(|_| invalid("the platform is not os/arch[/variant]"))?,
                ),
            };
            (level, platform, key)
        }
        _ => (Level::Manifest, None, spelled),
    };
    if key.is_empty() || key.chars().any(char::is_whitespace) {
        return Err(invalid("the key is empty or holds white space"));
    }
    Ok(Annotation {
        level,
        platform,
        key: key.to_owned(),
        value: value.to_owned(),
    })
}

/// Whether `head` has the shape of a type: `[a-z-]+` then optionally
/// `[` platform characters `]` (buildx's pattern).
fn is_type(head: &str) -> bool {
    let (name, platform) = match head.split_once('[') {
        Some((name, rest)) => match rest.strip_suffix(']') {
            Some(p) => (name, Some(p)),
            None => return false,
        },
        None => (head, None),
    };
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
        && platform.is_none_or(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'/' | b'-'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(k: &str) -> Result<Annotation, BuildError> {
        parse_one(k, "v")
    }

    #[test]
    fn types_and_platforms_are_read_as_buildx_reads_them() {
        let a = parse("org.example.k").expect("plain");
        assert_eq!(
            (a.level, a.platform, a.key.as_str()),
            (Level::Manifest, None, "org.example.k")
        );
        for (spelled, level) in [
            ("manifest:k", Level::Manifest),
            ("manifest-descriptor:k", Level::ManifestDescriptor),
            ("index:k", Level::Index),
            ("index-descriptor:k", Level::IndexDescriptor),
        ] {
            let a = parse(spelled).expect(spelled);
            assert_eq!((a.level, a.key.as_str()), (level, "k"), "{spelled}");
        }
        let a = parse("manifest[linux/arm64]:k").expect("platform");
        assert_eq!(a.platform, Some(Platform::new("linux", "arm64")));
        // Upper case before the colon is no type: the whole is the key.
        assert_eq!(parse("Foo:k").expect("key").key, "Foo:k");
    }

    #[test]
    fn unknown_types_and_misplaced_platforms_are_refused() {
        for bad in [
            "manifests:k",
            "foo:k",
            "index[linux/amd64]:k",
            "manifest[not/a/plat/form]:k",
            "manifest:",
            "",
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(
                matches!(&e, BuildError::Annotation { annotation, .. } if annotation == bad),
                "{bad}: {e:?}"
            );
        }
    }

    /// Generated keys from pieces that matter to the parser (colons,
    /// brackets, slashes, types known and not): it never panics, a key
    /// with no type shape is a manifest key kept whole, and a parsed
    /// typed key spells back to what was given.
    #[test]
    fn generated_keys_parse_or_fail_typed_and_spell_back() {
        let pieces = [
            "manifest",
            "index",
            "manifest-descriptor",
            "index-descriptor",
            "foo",
            ":",
            "[",
            "]",
            "linux/arm64",
            "/",
            "org.example.k",
            "Key",
            " ",
            "",
            "-",
            "a",
        ];
        let mut rng = image_testsupport::rng::Rng(0x5eed);
        for _ in 0..20_000 {
            let n = (rng.next() % 6) as usize;
            let spelled: String = (0..n).map(|_| rng.pick(&pieces)).collect();
            match parse(&spelled) {
                Ok(a) if a.level == Level::Manifest && a.platform.is_none() && a.key == spelled => {
                }
                Ok(a) => {
                    let platform = a.platform.as_ref().map(|p| format!("[{p}]"));
                    let head = spelled.split_once(':').map(|(h, _)| h).expect("typed");
                    assert!(head.starts_with(a.level.name()), "{spelled:?}: {a:?}");
                    assert!(
                        platform.is_some() == head.contains('['),
                        "{spelled:?}: {a:?}"
                    );
                    assert_eq!(
                        spelled.split_once(':').map(|(_, k)| k),
                        Some(a.key.as_str())
                    );
                }
                Err(BuildError::Annotation { annotation, .. }) => {
                    assert_eq!(annotation, spelled);
                }
                Err(other) => panic!("{spelled:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_platform_annotation_wins_for_its_platform_only() {
        let given = BTreeMap::from([
            ("k".to_owned(), "all".to_owned()),
            ("manifest[linux/arm64]:k".to_owned(), "arm".to_owned()),
            ("index:i".to_owned(), "x".to_owned()),
        ]);
        let a = Annotations::parse(&given).expect("parse");
        let arm = Platform::new("linux", "arm64");
        let amd = Platform::new("linux", "amd64");
        assert_eq!(a.of(Level::Manifest, Some(&arm))["k"], "arm");
        assert_eq!(a.of(Level::Manifest, Some(&amd))["k"], "all");
        assert_eq!(a.of(Level::Index, None)["i"], "x");
        assert_eq!(a.needing_index().as_deref(), Some("index:i"));
    }
}
