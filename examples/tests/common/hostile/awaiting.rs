//! The one list of adversarial cases (and fuzz corpus inputs) that fail
//! today because of a finding of issue 18 being fixed on another branch.
//! Each is skipped with a loud message naming the point and the failure
//! seen. When a fix is merged, delete its lines: the case then runs, and
//! must pass. `ADVERSARIAL_RUN_AWAITING=1` runs the listed cases anyway
//! (and counts their failures), to see which pass after a merge.

/// `(case name, the point of issue 18 and the failure seen)`. Adversarial
/// cases are named as the suite prints them; fuzz corpus inputs as
/// `fuzz:<target>/<file>`.
pub const AWAITING_FIX: &[(&str, &str)] = &[];

/// Why `case` is skipped, if it is awaiting a fix (`None` for every case
/// under `ADVERSARIAL_RUN_AWAITING=1`).
pub fn awaiting(case: &str) -> Option<&'static str> {
    if std::env::var("ADVERSARIAL_RUN_AWAITING").as_deref() == Ok("1") {
        return None;
    }
    AWAITING_FIX
        .iter()
        .find(|(name, _)| *name == case)
        .map(|(_, why)| *why)
}

/// Whether to skip `case`; prints a loud `SKIPPED (awaiting fix)` line
/// when it is. With `ADVERSARIAL_RUN_AWAITING=1` nothing is skipped (to
/// see which listed cases pass once a fix is merged).
pub fn skip(case: &str) -> bool {
    if std::env::var("ADVERSARIAL_RUN_AWAITING").as_deref() == Ok("1") {
        return false;
    }
    match awaiting(case) {
        Some(why) => {
            eprintln!("SKIPPED (awaiting fix, see AWAITING_FIX): {case}: {why}");
            true
        }
        None => false,
    }
}
