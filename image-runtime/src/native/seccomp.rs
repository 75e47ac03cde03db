//! The spec's `linux.seccomp` compiled to BPF with `seccompiler` (pure
//! Rust, no libseccomp), before the clone; the child only installs the
//! programs (see the crate's `sys` module).
//!
//! # One program per action
//! A `seccompiler` filter has one action for a match and one for no match,
//! while a profile has a default action and rules with several actions
//! (Docker's default: allow, and `ERRNO(ENOSYS)` for `clone3`). So a spec
//! becomes a stack of programs, installed in order:
//! 1. the *base*: every rule's condition (whatever its action) allows, no
//!    match takes the default action;
//! 2. one program per other action: its rules' conditions take that
//!    action, no match allows.
//!
//! The kernel runs every program and takes the most severe result, so a
//! call matching a rule gets the rule's action and any other call gets
//! the default. (Where two rules of different actions match one call, the
//! more severe wins; libseccomp would refuse to build that profile.)
//!
//! # Limits
//! Only the native architecture is filtered: a system call made through
//! another ABI (`int 0x80` on x86_64) does not match the program's
//! architecture check and kills the process, where libseccomp would apply
//! the profile's sub-architectures. Names unknown on this architecture are
//! skipped, as runc does. `SCMP_ACT_NOTIFY` and filter flags need a
//! listener or flags `seccompiler` does not give: refused with
//! [`SeccompCompileError`].

use std::collections::BTreeMap;

use image_core::oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, LinuxSyscall,
};
use image_core::{Classify, ErrorKind};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// `EPERM`, the errno of `SCMP_ACT_ERRNO` and `SCMP_ACT_TRACE` without one.
const EPERM: u32 = 1;

/// Why a spec's seccomp cannot be compiled by the native backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeccompCompileError {
    /// An action the native backend cannot install (`SCMP_ACT_NOTIFY`).
    #[error("seccomp action {0} is not supported by the native backend")]
    Action(LinuxSeccompAction),
    /// Filter flags (`SECCOMP_FILTER_FLAG_*`).
    #[error("seccomp filter flags are not supported by the native backend")]
    Flags,
    /// The host's architecture has no system call table here, or the
    /// spec's architectures leave it out.
    #[error("seccomp for architecture {0} is not supported by the native backend")]
    Arch(&'static str),
    /// `seccompiler` refused the filter (too many instructions, an
    /// argument index above 5).
    #[error("compiling the seccomp filter")]
    Compile(#[source] seccompiler::BackendError),
}

impl Classify for SeccompCompileError {
    fn kind(&self) -> ErrorKind {
        match self {
            SeccompCompileError::Action(_)
            | SeccompCompileError::Flags
            | SeccompCompileError::Arch(_) => ErrorKind::Unsupported,
            SeccompCompileError::Compile(_) => ErrorKind::InvalidInput,
        }
    }
}

/// A system call table: `(name, number)`.
type Table = &'static [(&'static str, i64)];

/// The host's `(seccompiler target, seccomp arch, system call table)`.
fn host() -> Result<(TargetArch, Arch, Table), SeccompCompileError> {
    if cfg!(target_arch = "x86_64") {
        Ok((
            TargetArch::x86_64,
            Arch::ScmpArchX86_64,
            super::syscalls::X86_64,
        ))
    } else {
        Err(SeccompCompileError::Arch(std::env::consts::ARCH))
    }
}

/// The action of `a` with `errno` (`SCMP_ACT_KILL` kills the thread, as
/// libseccomp's does).
fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<SeccompAction, SeccompCompileError> {
    use LinuxSeccompAction as A;
    Ok(match a {
        A::ScmpActAllow => SeccompAction::Allow,
        A::ScmpActErrno => SeccompAction::Errno(errno.unwrap_or(EPERM)),
        A::ScmpActKill | A::ScmpActKillThread => SeccompAction::KillThread,
        A::ScmpActKillProcess => SeccompAction::KillProcess,
        A::ScmpActTrap => SeccompAction::Trap,
        A::ScmpActLog => SeccompAction::Log,
        A::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(EPERM)),
        A::ScmpActNotify => return Err(SeccompCompileError::Action(a)),
    })
}

/// A rule's argument conditions (all must hold), 64-bit comparisons as
/// libseccomp makes them. `None` when the rule has none (always matches).
fn conditions(s: &LinuxSyscall) -> Result<Option<SeccompRule>, SeccompCompileError> {
    let Some(args) = s.args().as_ref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(args.len());
    for a in args {
        let (op, value) = match a.op() {
            LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, a.value()),
            LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, a.value()),
            LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, a.value()),
            LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, a.value()),
            LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, a.value()),
            LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, a.value()),
            LinuxSeccompOperator::ScmpCmpMaskedEq => (
                SeccompCmpOp::MaskedEq(a.value()),
                a.value_two().unwrap_or(0),
            ),
        };
        let index = u8::try_from(a.index()).unwrap_or(u8::MAX);
        out.push(
            SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
                .map_err(SeccompCompileError::Compile)?,
        );
    }
    SeccompRule::new(out)
        .map(Some)
        .map_err(SeccompCompileError::Compile)
}

/// Rules by system call number; an empty list matches unconditionally
/// (`seccompiler`'s convention), so an unconditional rule absorbs the
/// conditional ones of the same call.
#[derive(Default)]
struct Rules(BTreeMap<i64, Option<Vec<SeccompRule>>>);

impl Rules {
    fn add(&mut self, nr: i64, rule: Option<SeccompRule>) {
        let entry = self.0.entry(nr).or_insert_with(|| Some(Vec::new()));
        match (entry.as_mut(), rule) {
            (Some(list), Some(r)) => list.push(r),
            (_, None) => *entry = None,
            (None, Some(_)) => {}
        }
    }

    fn into_map(self) -> BTreeMap<i64, Vec<SeccompRule>> {
        self.0
            .into_iter()
            .map(|(nr, rules)| (nr, rules.unwrap_or_default()))
            .collect()
    }
}

/// The BPF programs for a spec's `linux.seccomp`, in installation order.
///
/// A `seccompiler` filter has one action on a match and one on none, so a
/// profile with several actions becomes a stack: a base program where
/// every rule's condition allows and nothing else matches the default
/// action, then one program per other action whose rules take it (and
/// allow the rest). The kernel runs them all and takes the most severe
/// result: a call matching a rule gets the rule's action, any other the
/// default. An allow-all profile gives no program. Names unknown on the
/// host's architecture are skipped, as runc does.
///
/// # Errors
/// [`SeccompCompileError`].
pub fn compile(seccomp: &LinuxSeccomp) -> Result<Vec<BpfProgram>, SeccompCompileError> {
    let (target, native, table) = host()?;
    if seccomp.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(SeccompCompileError::Flags);
    }
    if let Some(arches) = seccomp.architectures().as_ref().filter(|a| !a.is_empty()) {
        if !arches.contains(&native) {
            return Err(SeccompCompileError::Arch(std::env::consts::ARCH));
        }
    }
    let table: std::collections::HashMap<&str, i64> = table.iter().copied().collect();
    let number = |name: &str| table.get(name).copied();
    let default = action(seccomp.default_action(), seccomp.default_errno_ret())?;
    let mut base = Rules::default();
    // Per action other than allow and the default, its rules; in the
    // order first seen, so the stack is the same for the same spec.
    let mut others: Vec<(SeccompAction, Rules)> = Vec::new();
    for s in seccomp.syscalls().iter().flatten() {
        let act = action(s.action(), s.errno_ret())?;
        if act == default {
            continue;
        }
        let cond = conditions(s)?;
        for nr in s.names().iter().filter_map(|n| number(n)) {
            base.add(nr, cond.clone());
            if act != SeccompAction::Allow {
                let at = match others.iter().position(|(a, _)| *a == act) {
                    Some(i) => i,
                    None => {
                        others.push((act.clone(), Rules::default()));
                        others.len() - 1
                    }
                };
                others[at].1.add(nr, cond.clone());
            }
        }
    }
    let program = |rules: Rules, mismatch: SeccompAction, matched: SeccompAction| {
        SeccompFilter::new(rules.into_map(), mismatch, matched, target)
            .and_then(BpfProgram::try_from)
            .map_err(SeccompCompileError::Compile)
    };
    let mut out = Vec::with_capacity(1 + others.len());
    if default != SeccompAction::Allow {
        out.push(program(base, default, SeccompAction::Allow)?);
    }
    for (act, rules) in others {
        out.push(program(rules, SeccompAction::Allow, act)?);
    }
    Ok(out)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::spec::seccomp::{default_profile, Profile, Target};

    fn resolve(p: &Profile, caps: &[&str]) -> LinuxSeccomp {
        p.resolve(&Target {
            arch: "amd64".into(),
            caps: caps.iter().map(|c| (*c).to_owned()).collect(),
            kernel: Some((6, 1)),
        })
    }

    #[test]
    fn the_default_profile_compiles_to_a_base_and_an_errno_program() {
        let progs = compile(&resolve(&default_profile(), &["CAP_CHOWN"])).unwrap();
        assert_eq!(progs.len(), 2, "base + ERRNO(ENOSYS) for clone3");
        assert!(progs.iter().all(|p| !p.is_empty() && p.len() < 4096));
        // With CAP_SYS_ADMIN clone3 is allowed: only the base is left.
        let admin = compile(&resolve(&default_profile(), &["CAP_SYS_ADMIN"])).unwrap();
        assert_eq!(admin.len(), 1);
    }

    #[test]
    fn what_the_native_backend_cannot_install_is_refused_by_type() {
        let p = Profile::from_slice(
            br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["uname"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        )
        .unwrap();
        let e = compile(&resolve(&p, &[])).unwrap_err();
        assert!(matches!(e, SeccompCompileError::Action(_)), "{e}");
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        let p = Profile::from_slice(
            br#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_AARCH64"]}"#,
        )
        .unwrap();
        assert!(matches!(
            compile(&resolve(&p, &[])),
            Err(SeccompCompileError::Arch(_))
        ));
        // An allow-all profile installs nothing.
        let p = Profile::from_slice(br#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
        assert!(compile(&resolve(&p, &[])).unwrap().is_empty());
    }

    #[test]
    fn the_table_has_each_name_and_number_once() {
        let t = super::super::syscalls::X86_64;
        let names: std::collections::BTreeSet<_> = t.iter().map(|(n, _)| n).collect();
        let nrs: std::collections::BTreeSet<_> = t.iter().map(|(_, nr)| nr).collect();
        assert_eq!((names.len(), nrs.len()), (t.len(), t.len()));
        for (name, nr) in [("read", 0), ("keyctl", 250), ("clone3", 435)] {
            assert!(t.contains(&(name, nr)), "{name}");
        }
    }
}
