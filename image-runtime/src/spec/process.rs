//! The process part of the spec: argv from Entrypoint and Cmd, and the
//! environment, with Docker's rules.

use std::collections::HashMap;

use super::defaults::DEFAULT_PATH;

/// Docker's rule for the argv: an overridden entrypoint drops the image's
/// Cmd unless a cmd is given too; an empty entrypoint override clears it.
/// Returns the argv (empty when there is nothing to run).
pub fn command(
    image_entrypoint: Option<&[String]>,
    image_cmd: Option<&[String]>,
    entrypoint: Option<&[String]>,
    cmd: Option<&[String]>,
) -> Vec<String> {
    let cmd = cmd.filter(|c| !c.is_empty());
    let (ep, cmd): (&[String], &[String]) = match entrypoint {
        Some(ep) => {
            let ep = if ep.len() == 1 && ep[0].is_empty() {
                &[][..]
            } else {
                ep
            };
            (ep, cmd.unwrap_or(&[]))
        }
        None => (
            image_entrypoint.unwrap_or(&[]),
            cmd.or(image_cmd).unwrap_or(&[]),
        ),
    };
    ep.iter().chain(cmd).cloned().collect()
}

fn key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// Replaces entries of `base` with those of `overrides` that have the same
/// key (in place: the first entry of that key) and appends the others, in
/// order; a key repeated within `overrides` keeps its first position and
/// its last value. An override without `=` (`-e NAME`) is dropped: Docker
/// fills it from the caller's own environment, which a library must not
/// do behind the caller's back.
///
/// Linear in the number of entries: a map from each key to its position.
pub fn merge_env(base: &[String], overrides: &[String]) -> Vec<String> {
    let mut out: Vec<String> = base.to_vec();
    let mut position: HashMap<&str, usize> = HashMap::with_capacity(base.len() + overrides.len());
    for (i, e) in base.iter().enumerate() {
        position.entry(key(e)).or_insert(i);
    }
    for o in overrides.iter().filter(|o| o.contains('=')) {
        match position.get(key(o)) {
            Some(&i) => out[i].clone_from(o),
            None => {
                position.insert(key(o), out.len());
                out.push(o.clone());
            }
        }
    }
    out
}

/// The final environment as Docker builds it: `PATH` (default when the
/// config has none), `HOSTNAME`, `TERM=xterm` with a tty, then the config's
/// entries replacing those by key; `HOME` from the user's passwd entry
/// appended when unset.
pub fn container_env(config_env: &[String], hostname: &str, tty: bool, home: &str) -> Vec<String> {
    let mut base = Vec::new();
    if !config_env.iter().any(|e| key(e) == "PATH") {
        base.push(format!("PATH={DEFAULT_PATH}"));
    }
    base.push(format!("HOSTNAME={hostname}"));
    if tty {
        base.push("TERM=xterm".to_owned());
    }
    let mut env = merge_env(&base, config_env);
    if !env.iter().any(|e| key(e) == "HOME") {
        env.push(format!("HOME={home}"));
    }
    env
}

/// The value of `name` in `KEY=value` entries.
pub fn lookup<'a>(env: &'a [String], name: &str) -> Option<&'a str> {
    env.iter().rev().find_map(|e| {
        e.split_once('=')
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn docker_command_rules() {
        let ep = v(&["/entry", "-x"]);
        let cmd = v(&["serve"]);
        let c = |e: Option<&[String]>, c: Option<&[String]>| command(Some(&ep), Some(&cmd), e, c);
        assert_eq!(c(None, None), v(&["/entry", "-x", "serve"]));
        assert_eq!(c(None, Some(&v(&["other"]))), v(&["/entry", "-x", "other"]));
        // Overriding the entrypoint drops the image's Cmd...
        assert_eq!(c(Some(&v(&["/bin/sh"])), None), v(&["/bin/sh"]));
        // ...unless a cmd is given.
        assert_eq!(
            c(Some(&v(&["/bin/sh"])), Some(&v(&["-c", "id"]))),
            v(&["/bin/sh", "-c", "id"])
        );
        // An empty entrypoint clears it.
        assert_eq!(c(Some(&v(&[""])), Some(&v(&["id"]))), v(&["id"]));
        assert!(c(Some(&[]), None).is_empty());
        // An empty cmd override is no override.
        assert_eq!(c(None, Some(&[])), v(&["/entry", "-x", "serve"]));
        assert_eq!(command(None, Some(&cmd), None, None), v(&["serve"]));
        assert!(command(None, None, None, None).is_empty());
    }

    /// The merge as it was written first (a search per override): the
    /// reference the linear one must agree with.
    fn merge_env_reference(base: &[String], overrides: &[String]) -> Vec<String> {
        let mut out: Vec<String> = base.to_vec();
        for o in overrides.iter().filter(|o| o.contains('=')) {
            match out.iter_mut().find(|e| key(e) == key(o)) {
                Some(e) => e.clone_from(o),
                None => out.push(o.clone()),
            }
        }
        out
    }

    #[test]
    fn merge_agrees_with_the_reference_on_generated_environments() {
        let mut next = crate::spec::test_rng(0x9e37_79b9_7f4a_7c15);
        let entry = |next: &mut dyn FnMut(u64) -> u64| -> String {
            // Few keys, so that repeats within and across lists are common;
            // some entries without `=`, some with `=` in the value or an
            // empty key.
            let k = ["A", "B", "PATH", "HOME", "", "C_1"][next(6) as usize];
            match next(5) {
                0 => k.to_owned(),
                1 => format!("{k}=x=y"),
                _ => format!("{k}={}", next(100)),
            }
        };
        for _ in 0..2000 {
            let base: Vec<String> = (0..next(8)).map(|_| entry(&mut next)).collect();
            let over: Vec<String> = (0..next(8)).map(|_| entry(&mut next)).collect();
            assert_eq!(
                merge_env(&base, &over),
                merge_env_reference(&base, &over),
                "{base:?} + {over:?}"
            );
            let env = container_env(&over, "h", next(2) == 0, "/root");
            assert_eq!(env.iter().filter(|e| key(e) == "HOME").count().min(1), 1);
        }
    }

    #[test]
    fn a_large_environment_merges_in_linear_time() {
        // 200,000 distinct keys: the search-per-entry merge made 2 * 10^10
        // key comparisons here (minutes); the map makes 200,000 lookups.
        // The generous timeout only turns a regression into a failure
        // instead of a hang; nothing is timed.
        let env: Vec<String> = (0..200_000).map(|i| format!("E{i}=v{i}")).collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let env2 = env.clone();
        std::thread::spawn(move || {
            let overrides = vec!["E5=new".to_owned()];
            let merged = merge_env(&env2, &overrides);
            let all = container_env(&merged, "h", false, "/root");
            let _ = tx.send((merged, all));
        });
        let (merged, all) = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("merging 200,000 entries did not finish within 120 s: quadratic again?");
        assert_eq!(merged.len(), env.len());
        assert_eq!(merged[5], "E5=new");
        assert_eq!(all.len(), env.len() + 3); // PATH, HOSTNAME, HOME
    }

    #[test]
    fn env_rules() {
        let merged = merge_env(&v(&["A=1", "B=2", "PATH=/x"]), &v(&["B=3", "C=4", "D"]));
        assert_eq!(merged, v(&["A=1", "B=3", "PATH=/x", "C=4"]));
        let env = container_env(&merged, "h1", true, "/home/u");
        assert_eq!(
            env,
            v(&[
                "HOSTNAME=h1",
                "TERM=xterm",
                "A=1",
                "B=3",
                "PATH=/x",
                "C=4",
                "HOME=/home/u"
            ])
        );
        let env = container_env(&v(&["HOME=/h", "HOSTNAME=mine"]), "h1", false, "/root");
        assert_eq!(env[0], format!("PATH={DEFAULT_PATH}"));
        assert_eq!(env[1], "HOSTNAME=mine");
        assert_eq!(env.len(), 3);
        assert_eq!(lookup(&env, "HOME"), Some("/h"));
    }
}
