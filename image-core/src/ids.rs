//! Image IDs, diff IDs and chain IDs.
//!
//! - The **image ID** is the digest of the config blob, as stored.
//! - A layer's **diff ID** is the digest of its uncompressed tar; its
//!   **digest** is that of the blob as stored (usually compressed).
//! - The **chain ID** of layer n names the filesystem state after applying
//!   layers 1..=n, computed as Docker's layerdb does:
//!   `chain(1) = diff(1)`, `chain(n) = sha256(chain(n-1) + " " + diff(n))`.

use crate::digest::{Algorithm, Digest};

/// The chain ID of a layer whose parent has chain ID `parent` (`None` for
/// the bottom layer) and whose diff ID is `diff_id`.
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(p) => {
            let mut h = Algorithm::Sha256.hasher();
            h.update(p.to_string().as_bytes());
            h.update(b" ");
            h.update(diff_id.to_string().as_bytes());
            h.finish()
        }
    }
}

/// The chain IDs of a stack of layers given their diff IDs, bottom first.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = chain_id(out.last(), d);
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        s.parse().expect("valid digest")
    }

    /// Known answers computed independently (Python's hashlib over the
    /// same strings Docker's layerdb hashes).
    #[test]
    fn chain_ids_known_answers() {
        let a = d(&format!("sha256:{}", "1".repeat(64)));
        let b = d(&format!("sha256:{}", "2".repeat(64)));
        let c = d(&format!("sha256:{}", "3".repeat(64)));
        let ids = chain_ids(&[a.clone(), b, c]);
        assert_eq!(ids[0], a);
        assert_eq!(
            ids[1],
            d("sha256:9932074217c35353d2e03a3f5a86549f7c67bfeb0ba53e23d69f4d4c8f7958f5")
        );
        assert_eq!(
            ids[2],
            d("sha256:50127c0d6b338be78246434b4bce23ecf75e505158ea0bbd15effeb162fbf3ec")
        );
        assert!(chain_ids(&[]).is_empty());
    }
}
