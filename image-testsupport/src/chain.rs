//! The family's rule for error messages, checked on a real error: each link
//! of a `source()` chain names its own context only, so a chain printer
//! (`image_core::error::Chain`, imagectl) says nothing twice.
//!
//! ```
//! use image_testsupport::chain::{links, repeated};
//!
//! #[derive(Debug)]
//! struct Outer(std::io::Error);
//! impl std::fmt::Display for Outer {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         write!(f, "reading sha256:{}: {}", "a".repeat(64), self.0)
//!     }
//! }
//! impl std::error::Error for Outer {
//!     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
//!         Some(&self.0)
//!     }
//! }
//! let e = Outer(std::io::Error::other(format!("blob sha256:{} not found", "a".repeat(64))));
//! assert_eq!(links(&e).len(), 2);
//! assert!(!repeated(&e).is_empty());
//! ```

use std::collections::BTreeMap;
use std::error::Error;

/// The message of each link of `err`'s chain, outermost first.
pub fn links(err: &(dyn Error + 'static)) -> Vec<String> {
    let mut out = Vec::new();
    let mut link = Some(err);
    while let Some(e) = link {
        out.push(e.to_string());
        link = e.source();
    }
    out
}

/// What `err`'s chain says more than once: a link whose message holds a
/// later link's whole message, and each digest or URL (without its query)
/// named by two links. Empty when every link names only its own context.
pub fn repeated(err: &(dyn Error + 'static)) -> Vec<String> {
    let texts = links(err);
    let mut found = Vec::new();
    for (i, outer) in texts.iter().enumerate() {
        for inner in &texts[i + 1..] {
            if inner.len() > 6 && outer.contains(inner.as_str()) {
                found.push(format!("{outer:?} holds its cause {inner:?}"));
            }
        }
    }
    let mut named: BTreeMap<String, usize> = BTreeMap::new();
    for text in &texts {
        let mut mine: Vec<String> = text.split_whitespace().flat_map(tokens).collect();
        mine.sort();
        mine.dedup();
        for t in mine {
            *named.entry(t).or_default() += 1;
        }
    }
    found.extend(
        named
            .into_iter()
            .filter(|(_, links)| *links > 1)
            .map(|(t, links)| format!("{t} named by {links} links")),
    );
    found
}

/// The URL a word of a message is (without its query), and the digest it
/// is or ends with (`.../blobs/sha256:...`, `name@sha256:...`).
fn tokens(word: &str) -> Vec<String> {
    let word = word.trim_matches(|c: char| "()[]{}<>\"'`,;.".contains(c));
    let word = word.trim_end_matches(':');
    let word = &word[..word.find('?').unwrap_or(word.len())];
    let mut found = Vec::new();
    if word.find("://").is_some_and(|at| word.len() > at + 3) {
        found.push(word.to_owned());
    }
    let last = word.rsplit(['/', '@', '=']).next().unwrap_or(word);
    if let Some((alg, hex)) = last.split_once(':') {
        let long = matches!((alg, hex.len()), ("sha256", 64) | ("sha512", 128));
        if long && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            found.push(last.to_owned());
        }
    }
    found
}

/// Panics naming what `err`'s chain says twice, with the whole chain.
#[track_caller]
pub fn assert_said_once(err: &(dyn Error + 'static)) {
    let found = repeated(err);
    assert!(
        found.is_empty(),
        "said more than once: {found:?}\nin the chain {:?}",
        links(err)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(String, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }
    fn chain(texts: &[&str]) -> E {
        texts
            .iter()
            .rev()
            .fold(None, |inner, t| {
                Some(E((*t).to_owned(), inner.map(Box::new)))
            })
            .expect("one link at least")
    }

    #[test]
    fn a_cause_printed_again_a_digest_or_a_url_named_twice_is_found() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let printed = chain(&[
            "--mount=x: malformed mount: no type",
            "malformed mount: no type",
        ]);
        assert_eq!(repeated(&printed).len(), 1, "{:?}", repeated(&printed));
        let digest = chain(&[
            &format!("fetching blob {d}"),
            &format!("GET http://h/v2/r/blobs/{d} answered 404"),
        ]);
        assert_eq!(repeated(&digest), [format!("{d} named by 2 links")]);
        let url = chain(&[
            "request GET http://127.0.0.1:1/v2/ failed in transport",
            "error sending request for url (http://127.0.0.1:1/v2/?sig=x)",
        ]);
        assert_eq!(repeated(&url), ["http://127.0.0.1:1/v2/ named by 2 links"]);
    }

    #[test]
    fn links_that_name_their_own_context_pass() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let fine = chain(&[
            "pulling h/r:1",
            &format!("GET http://h/v2/r/blobs/{d} answered 404"),
            "connection refused",
        ]);
        assert_said_once(&fine);
        // One link may name a thing twice (expected and found).
        assert_said_once(&chain(&[&format!("expected {d}, found {d}")]));
    }
}
