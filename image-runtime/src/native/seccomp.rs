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

    /// A classic-BPF interpreter for seccomp programs, over
    /// `seccomp_data` (`nr`, `arch`, `ip`, `args[6]`), for what
    /// seccompiler emits (loads, ALU with constants, jumps, returns).
    fn interpret(prog: &BpfProgram, nr: i64, args: [u64; 6]) -> u32 {
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(&(nr as i32).to_le_bytes());
        data.extend_from_slice(&0xc000_003e_u32.to_le_bytes()); // AUDIT_ARCH_X86_64
        data.extend_from_slice(&0u64.to_le_bytes());
        for a in args {
            data.extend_from_slice(&a.to_le_bytes());
        }
        let word = |off: u32| {
            let o = off as usize;
            u32::from_le_bytes(data[o..o + 4].try_into().unwrap())
        };
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        loop {
            let i = &prog[pc];
            pc += 1;
            let k = i.k;
            let jump = |cond: bool| if cond { i.jt as usize } else { i.jf as usize };
            match i.code {
                0x20 => a = word(k),            // ld [k]
                0x00 => a = k,                  // ld #k
                0x01 => x = k,                  // ldx #k
                0x07 => x = a,                  // tax
                0x87 => a = x,                  // txa
                0x54 => a &= k,                 // and #k
                0x44 => a |= k,                 // or #k
                0x05 => pc += k as usize,       // ja
                0x15 => pc += jump(a == k),     // jeq #k
                0x25 => pc += jump(a > k),      // jgt #k
                0x35 => pc += jump(a >= k),     // jge #k
                0x45 => pc += jump(a & k != 0), // jset #k
                0x06 => return k,               // ret #k
                0x16 => return a,               // ret a
                c => panic!("BPF instruction {c:#x} not interpreted"),
            }
        }
    }

    /// Kernel precedence of a return value (higher wins).
    fn severity(ret: u32) -> u32 {
        match ret & 0xffff_0000 {
            0x8000_0000 => 7, // KILL_PROCESS
            0x0000_0000 => 6, // KILL_THREAD
            0x0003_0000 => 5, // TRAP
            0x0005_0000 => 4, // ERRNO
            0x7ff0_0000 => 3, // TRACE
            0x7ffc_0000 => 2, // LOG
            0x7fff_0000 => 1, // ALLOW
            other => panic!("return value {other:#x}"),
        }
    }

    /// What the kernel answers for a stack of programs: the most severe
    /// result, the most recently installed first among equals.
    fn kernel(progs: &[BpfProgram], nr: i64, args: [u64; 6]) -> u32 {
        let mut best: Option<u32> = None;
        for p in progs.iter().rev() {
            let r = interpret(p, nr, args);
            if best.is_none_or(|b| severity(r) > severity(b)) {
                best = Some(r);
            }
        }
        best.unwrap_or(0x7fff_0000)
    }

    /// The profile's meaning, runc's way: rules with the default's action
    /// dropped; the most severe action of the rules that match, else the
    /// default.
    fn reference(s: &LinuxSeccomp, name: &str, args: [u64; 6]) -> u32 {
        let ret = |a, e| u32::from(action(a, e).unwrap());
        let default = ret(s.default_action(), s.default_errno_ret());
        let holds = |r: &LinuxSyscall| {
            r.args().iter().flatten().all(|c| {
                let v = args[c.index()];
                match c.op() {
                    LinuxSeccompOperator::ScmpCmpNe => v != c.value(),
                    LinuxSeccompOperator::ScmpCmpLt => v < c.value(),
                    LinuxSeccompOperator::ScmpCmpLe => v <= c.value(),
                    LinuxSeccompOperator::ScmpCmpEq => v == c.value(),
                    LinuxSeccompOperator::ScmpCmpGe => v >= c.value(),
                    LinuxSeccompOperator::ScmpCmpGt => v > c.value(),
                    // As libseccomp (and runc and crun through it) does:
                    // the expected value is masked too.
                    LinuxSeccompOperator::ScmpCmpMaskedEq => {
                        v & c.value() == c.value_two().unwrap_or(0) & c.value()
                    }
                }
            })
        };
        s.syscalls()
            .iter()
            .flatten()
            .filter(|r| r.names().iter().any(|n| n == name))
            .filter_map(|r| {
                let a = ret(r.action(), r.errno_ret());
                (a != default && holds(r)).then_some(a)
            })
            .max_by_key(|r| severity(*r))
            .unwrap_or(default)
    }

    /// Generated profiles (actions, errnos, all seven comparisons, 0-2
    /// conditions per rule, calls named by several rules) compiled to a
    /// stack of programs give, for generated calls, what the profile
    /// means: the compiler against a reference over the same spec.
    #[test]
    fn generated_profiles_compile_to_what_they_mean() {
        use LinuxSeccompAction as A;
        use LinuxSeccompOperator as O;
        let mut rng = crate::spec::test_rng(0x5ecc_0a1b);
        let names = ["read", "write", "uname", "keyctl", "personality", "clone"];
        let actions = [
            A::ScmpActAllow,
            A::ScmpActErrno,
            A::ScmpActKillProcess,
            A::ScmpActTrap,
            A::ScmpActLog,
        ];
        let ops = [
            O::ScmpCmpNe,
            O::ScmpCmpLt,
            O::ScmpCmpLe,
            O::ScmpCmpEq,
            O::ScmpCmpGe,
            O::ScmpCmpGt,
            O::ScmpCmpMaskedEq,
        ];
        let values = [
            0u64,
            1,
            2,
            6,
            0xff,
            0x7e02_0000,
            1 << 32,
            (1 << 32) | 6,
            u64::MAX,
        ];
        let mut pick = |n: usize| rng(n as u64) as usize;
        for round in 0..300 {
            let default = actions[pick(actions.len())];
            let mut rules = Vec::new();
            for _ in 0..pick(8) {
                let mut r = LinuxSyscall::default();
                let n: Vec<String> = (0..1 + pick(2))
                    .map(|_| names[pick(names.len())].to_owned())
                    .collect();
                let act = actions[pick(actions.len())];
                let conds: Vec<_> = (0..pick(3))
                    .map(|_| {
                        let op = ops[pick(ops.len())];
                        let mut b =
                            image_core::oci_spec::runtime::LinuxSeccompArgBuilder::default()
                                .index(pick(3))
                                .value(values[pick(values.len())])
                                .op(op);
                        if op == O::ScmpCmpMaskedEq {
                            b = b.value_two(values[pick(values.len())]);
                        }
                        b.build().unwrap()
                    })
                    .collect();
                r.set_names(n)
                    .set_action(act)
                    .set_errno_ret((act == A::ScmpActErrno).then_some(38))
                    .set_args((!conds.is_empty()).then_some(conds));
                rules.push(r);
            }
            let mut s = LinuxSeccomp::default();
            s.set_default_action(default)
                .set_default_errno_ret(Some(1))
                .set_syscalls(Some(rules));
            let progs = compile(&s).unwrap();
            for _ in 0..40 {
                let name = names[pick(names.len())];
                let nr = super::super::syscalls::X86_64
                    .iter()
                    .find(|(n, _)| *n == name)
                    .unwrap()
                    .1;
                let args = std::array::from_fn(|_| values[pick(values.len())]);
                assert_eq!(
                    kernel(&progs, nr, args),
                    reference(&s, name, args),
                    "round {round}: {name}{args:?} under {s:?}"
                );
            }
        }
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
