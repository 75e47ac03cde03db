//! Image efficiency as dive computes it (`filetree/efficiency.go` and
//! `image/analysis.go` of wagoodman/dive), so that its numbers and CI
//! thresholds carry over:
//!
//! - each layer is a tree of its entries' paths (parents made implicitly);
//!   only its **leaves** count (a directory with entries beneath it in the
//!   same layer does not);
//! - a leaf adds its tar header size to its path's cumulative size; a
//!   whiteout leaf (`.wh.NAME`) adds, for the path it deletes, the bytes of
//!   that path and everything beneath it in the layers below when it was a
//!   directory, and 0 when it was a file (dive's sizer runs on directories
//!   only); opaque markers (`.wh..wh..opq`) count nothing;
//! - the score is the sum over paths of the smallest size a path was seen
//!   with, divided by the sum of cumulative sizes (1 when nothing was seen);
//! - a path seen in two or more layers is an inefficiency; the wasted bytes
//!   are the sum of those paths' cumulative sizes (the copy that stays is
//!   counted too, as dive counts it);
//! - the total is the sum of every entry's size over all layers; the user
//!   bytes leave out the first layer; the wasted user percentage is wasted
//!   bytes over user bytes (dive's `WastedUserPercent`, here times 100).
//!
//! Where we differ, on inputs dive itself mishandles: a whiteout of a path
//! absent below counts 0 (dive stops visiting that layer), and the layers
//! below are stacked with opaque directories applied (dive ignores them).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::changes::{descendants, LayerEntry, Stack, Whiteout};

/// The efficiency report of an image.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Efficiency {
    /// dive's efficiency score, 0..=1.
    pub efficiency: f64,
    /// Bytes of the paths seen in more than one layer (all their copies).
    pub wasted_bytes: u64,
    /// Bytes of every entry of every layer.
    pub total_bytes: u64,
    /// Bytes of every layer but the first.
    pub user_bytes: u64,
    /// `100 * wasted_bytes / user_bytes`; `None` when there are no user
    /// bytes.
    pub wasted_user_percent: Option<f64>,
    /// The inefficient paths, most wasted bytes first.
    pub inefficiencies: Vec<PathWaste>,
}

/// One path seen in more than one layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PathWaste {
    /// The path, absolute.
    pub path: String,
    /// In how many layers it was seen.
    pub count: u64,
    /// The sum of its sizes over those layers (dive's `CumulativeSize`).
    pub cumulative_size: u64,
}

#[derive(Debug, Default)]
struct PathData {
    cumulative: u64,
    min: u64,
    count: u64,
}

/// Accumulates dive's per-path data, one layer at a time.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    paths: HashMap<String, PathData>,
    layer_bytes: Vec<u64>,
}

impl Builder {
    /// Adds a layer: its entries (archive order), the sum of the sizes of
    /// all its entries, and the filesystem of the layers below it.
    pub(crate) fn add_layer(&mut self, entries: &[LayerEntry], bytes: u64, lower: &Stack) {
        self.layer_bytes.push(bytes);
        // dive's tree of the layer: one node per path, the last entry wins.
        let mut nodes: BTreeMap<String, &LayerEntry> = BTreeMap::new();
        for e in entries {
            if let Some(node) = e.dive_node() {
                nodes.insert(node, e);
            }
        }
        let leaves: Vec<(&String, &&LayerEntry)> = nodes
            .iter()
            .filter(|(node, _)| nodes.range(descendants(node)).next().is_none())
            .collect();
        let targets: Vec<&str> = leaves
            .iter()
            .filter(|(_, e)| e.whiteout == Some(Whiteout::Remove))
            .map(|(_, e)| e.path.as_str())
            .collect();
        let deleted = lower.whiteout_sizes(&targets);
        for (node, e) in leaves {
            let (path, size) = match e.whiteout {
                Some(Whiteout::Remove) => (
                    e.path.as_str(),
                    deleted.get(e.path.as_str()).copied().unwrap_or(0),
                ),
                _ => (node.as_str(), e.size),
            };
            match self.paths.get_mut(path) {
                Some(d) => {
                    d.cumulative += size;
                    d.min = d.min.min(size);
                    d.count += 1;
                }
                None => {
                    self.paths.insert(
                        path.to_owned(),
                        PathData {
                            cumulative: size,
                            min: size,
                            count: 1,
                        },
                    );
                }
            }
        }
    }

    /// The report.
    pub(crate) fn finish(self) -> Efficiency {
        let (mut minimum, mut discovered) = (0u128, 0u128);
        let mut inefficiencies = Vec::new();
        for (path, d) in self.paths {
            minimum += u128::from(d.min);
            discovered += u128::from(d.cumulative);
            if d.count >= 2 {
                inefficiencies.push(PathWaste {
                    path: format!("/{path}"),
                    count: d.count,
                    cumulative_size: d.cumulative,
                });
            }
        }
        inefficiencies.sort_by(|a, b| {
            b.cumulative_size
                .cmp(&a.cumulative_size)
                .then_with(|| a.path.cmp(&b.path))
        });
        let efficiency = if discovered == 0 {
            1.0
        } else {
            minimum as f64 / discovered as f64
        };
        let wasted_bytes = inefficiencies.iter().map(|p| p.cumulative_size).sum();
        let total_bytes = self.layer_bytes.iter().sum();
        let user_bytes: u64 = self.layer_bytes.iter().skip(1).sum();
        Efficiency {
            efficiency,
            wasted_bytes,
            total_bytes,
            user_bytes,
            wasted_user_percent: (user_bytes > 0)
                .then(|| 100.0 * wasted_bytes as f64 / user_bytes as f64),
            inefficiencies,
        }
    }
}

/// CI thresholds on an [`Efficiency`] (dive's `rules.highestWastedBytes`,
/// `rules.highestUserWastedPercent`, `rules.lowestEfficiency`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct Gates {
    /// Fail when more bytes than this are wasted.
    pub max_wasted_bytes: Option<u64>,
    /// Fail when the wasted user percentage is above this (0..=100).
    pub max_wasted_percent: Option<f64>,
    /// Fail when the efficiency is below this (0..=1).
    pub min_efficiency: Option<f64>,
}

impl Gates {
    /// No thresholds.
    pub fn new() -> Gates {
        Gates::default()
    }

    /// Fails above `bytes` wasted.
    pub fn max_wasted_bytes(mut self, bytes: u64) -> Gates {
        self.max_wasted_bytes = Some(bytes);
        self
    }

    /// Fails above `percent` wasted user bytes.
    pub fn max_wasted_percent(mut self, percent: f64) -> Gates {
        self.max_wasted_percent = Some(percent);
        self
    }

    /// Fails below `efficiency`.
    pub fn min_efficiency(mut self, efficiency: f64) -> Gates {
        self.min_efficiency = Some(efficiency);
        self
    }
}

/// A CI threshold an image did not meet.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GateError {
    /// More bytes wasted than allowed.
    #[error("too many bytes wasted: {wasted} > {max}")]
    WastedBytes {
        /// Wasted bytes.
        wasted: u64,
        /// The threshold.
        max: u64,
    },
    /// More user bytes wasted than allowed (no user bytes with some wasted
    /// counts as above any threshold).
    #[error("too many bytes wasted relative to the bytes added above the base: {}% > {max}%",
        .percent.map_or("unbounded".to_owned(), |p| format!("{p:.2}")))]
    WastedPercent {
        /// The wasted user percentage.
        percent: Option<f64>,
        /// The threshold.
        max: f64,
    },
    /// Efficiency below the minimum.
    #[error("image efficiency too low: {efficiency:.4} < {min}")]
    Efficiency {
        /// The score.
        efficiency: f64,
        /// The threshold.
        min: f64,
    },
}

impl image_core::Classify for GateError {
    fn kind(&self) -> image_core::ErrorKind {
        image_core::ErrorKind::FailedPrecondition
    }
}

impl Efficiency {
    /// Checks the thresholds, in dive's order (efficiency, wasted bytes,
    /// wasted percentage); the first one not met is the error.
    ///
    /// # Errors
    /// The [`GateError`] of the first threshold not met.
    pub fn check(&self, gates: &Gates) -> Result<(), GateError> {
        if let Some(min) = gates.min_efficiency {
            if self.efficiency < min {
                return Err(GateError::Efficiency {
                    efficiency: self.efficiency,
                    min,
                });
            }
        }
        if let Some(max) = gates.max_wasted_bytes {
            if self.wasted_bytes > max {
                return Err(GateError::WastedBytes {
                    wasted: self.wasted_bytes,
                    max,
                });
            }
        }
        if let Some(max) = gates.max_wasted_percent {
            let over = match self.wasted_user_percent {
                Some(p) => p > max,
                None => self.wasted_bytes > 0,
            };
            if over {
                return Err(GateError::WastedPercent {
                    percent: self.wasted_user_percent,
                    max,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::list::EntryKind;

    use crate::analysis::changes::tests::entry as e;

    fn run(layers: &[Vec<LayerEntry>]) -> Efficiency {
        let mut b = Builder::default();
        let mut stack = Stack::default();
        for (i, l) in layers.iter().enumerate() {
            b.add_layer(l, l.iter().map(|e| e.size).sum(), &stack);
            stack.apply(i, l);
        }
        b.finish()
    }

    #[test]
    fn overwritten_and_deleted_files_are_wasted_as_dive_counts_them() {
        use EntryKind::{Directory as D, Regular as F};
        let r = run(&[
            vec![
                e("a", D, 0, None),
                e("a/f", F, 100, None),
                e("b", F, 10, None),
            ],
            vec![e("a", D, 0, None), e("a/f", F, 40, None)],
            vec![e("b", F, 0, Some(Whiteout::Remove))],
        ]);
        // a/f: 100 + 40 (min 40); b: 10 + 0 (min 0); a is not a leaf.
        assert_eq!(r.wasted_bytes, 150);
        assert_eq!(r.total_bytes, 150);
        assert_eq!(r.user_bytes, 40);
        assert!((r.efficiency - 40.0 / 150.0).abs() < 1e-12);
        assert_eq!(r.inefficiencies[0].path, "/a/f");
        assert_eq!(r.inefficiencies[0].count, 2);
    }

    #[test]
    fn a_deleted_directory_counts_its_tree_under_its_own_path() {
        use EntryKind::{Directory as D, Regular as F};
        let r = run(&[
            vec![
                e("d", D, 0, None),
                e("d/x", F, 7, None),
                e("d/y", F, 5, None),
            ],
            vec![e("d", D, 0, Some(Whiteout::Remove))],
        ]);
        // The whiteout adds 12 to path d, seen once (d was no leaf below).
        assert_eq!(r.wasted_bytes, 0);
        assert!((r.efficiency - 1.0).abs() < 1e-12);
    }

    #[test]
    fn gates_fail_with_a_reason() {
        let eff = Efficiency {
            efficiency: 0.5,
            wasted_bytes: 1000,
            total_bytes: 4000,
            user_bytes: 2000,
            wasted_user_percent: Some(50.0),
            inefficiencies: vec![],
        };
        assert!(eff.check(&Gates::new().max_wasted_bytes(1000)).is_ok());
        assert_eq!(
            eff.check(&Gates::new().max_wasted_bytes(999))
                .unwrap_err()
                .to_string(),
            "too many bytes wasted: 1000 > 999"
        );
        assert!(eff.check(&Gates::new().max_wasted_percent(49.9)).is_err());
        assert!(eff.check(&Gates::new().min_efficiency(0.6)).is_err());
        assert!(eff.check(&Gates::new().min_efficiency(0.5)).is_ok());
    }
}
