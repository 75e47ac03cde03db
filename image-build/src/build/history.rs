//! The history entries a build writes, with `created_by` as Docker writes
//! it, so that `imagectl inspect --history` reads like `docker history`:
//!
//! - an instruction that only changes the config: the classic builder's
//!   `/bin/sh -c #(nop)  ENV A=b` (two spaces after `#(nop)`), marked
//!   `empty_layer`;
//! - RUN: BuildKit's `RUN /bin/sh -c echo hi # buildkit` (the argv joined
//!   by spaces, shell form wrapped in the stage's SHELL), with the build
//!   args it sees first as `|N K=V ...` (BuildKit keeps the classic
//!   builder's prefix there);
//! - COPY and ADD: the classic builder's `COPY file:<hex> in /dst ` (the
//!   source's content digest, the destination as written, a trailing space).

use image_core::config::History;

use crate::dockerfile::{print_command, Command};

/// The history entry of an instruction that changed only the config.
pub fn config_only(command: &Command, escape: char) -> History {
    entry(
        format!("/bin/sh -c #(nop)  {}", text(command, escape)),
        true,
    )
}

/// An instruction as one line of text (as printed, without its newline).
pub fn text(command: &Command, escape: char) -> String {
    let mut out = String::new();
    print_command(&mut out, command, escape);
    out.truncate(out.trim_end().len());
    out
}

/// The history entry of a RUN whose final argv is `argv`, with the build
/// args `args` (`K=V`) in its environment.
pub fn run(argv: &[String], args: &[String]) -> History {
    let mut by = String::from("RUN ");
    if !args.is_empty() {
        by.push_str(&format!("|{} {} ", args.len(), args.join(" ")));
    }
    by.push_str(&argv.join(" "));
    by.push_str(" # buildkit");
    entry(by, false)
}

/// The history entry of a COPY or ADD (`keyword`) of `source` (Docker's
/// `file:<hex>`, `dir:<hex>` or `multi:<hex>`) into `dest` as written.
pub fn copy(keyword: &str, source: &str, dest: &str) -> History {
    entry(format!("{keyword} {source} in {dest} "), false)
}

/// An entry without its time: the build gives it (its clock, or its
/// `SOURCE_DATE_EPOCH`).
fn entry(created_by: String, empty_layer: bool) -> History {
    History {
        created: None,
        created_by: Some(created_by),
        empty_layer,
        ..History::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::KeyValue;

    #[test]
    fn docker_created_by_strings() {
        let env = Command::Env(vec![KeyValue {
            key: "A".into(),
            value: "b".into(),
        }]);
        let h = config_only(&env, '\\');
        assert_eq!(h.created_by.as_deref(), Some("/bin/sh -c #(nop)  ENV A=b"));
        assert!(h.empty_layer);
        let argv = ["/bin/sh".to_string(), "-c".into(), "echo hi".into()];
        let h = run(&argv, &[]);
        assert_eq!(
            h.created_by.as_deref(),
            Some("RUN /bin/sh -c echo hi # buildkit")
        );
        assert!(!h.empty_layer);
        let h = run(&argv, &["A=1".into(), "B=2".into()]);
        assert_eq!(
            h.created_by.as_deref(),
            Some("RUN |2 A=1 B=2 /bin/sh -c echo hi # buildkit")
        );
        let h = copy("COPY", "file:abc", "/dst");
        assert_eq!(h.created_by.as_deref(), Some("COPY file:abc in /dst "));
    }
}
