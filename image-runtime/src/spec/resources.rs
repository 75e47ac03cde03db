//! Resource limits (`docker run --memory --pids-limit --cpus`) and the
//! network mode, as options and as the spec's `linux.resources`.
//!
//! Values are parsed and checked here; whether the host can enforce them
//! (a cgroup hierarchy with the controller) is the backend's question,
//! answered with [`crate::BackendError::LimitUnavailable`].

use std::str::FromStr;

use image_core::oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxPids, LinuxResources};

use super::SpecError;

/// The smallest memory limit accepted (Docker's: 6 MiB; below it the
/// runtime's own start-up may be killed).
pub const MIN_MEMORY: u64 = 6 << 20;

/// The CFS period written with a CPU limit, in microseconds (Docker's).
pub const CPU_PERIOD_US: u64 = 100_000;

/// The smallest CPU limit accepted, in billionths of a CPU (0.01 CPU, a
/// quota of 1 ms per period: the kernel's minimum).
pub const MIN_NANO_CPUS: u64 = 10_000_000;

/// Resource limits of a container; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Resources {
    /// Memory limit in bytes (`--memory`). Where the host can limit
    /// memory + swap, swap is limited to the same (no swap use), as
    /// `--memory-swap` equal to `--memory` in Docker.
    pub memory: Option<u64>,
    /// The most processes (and threads) at once (`--pids-limit`).
    pub pids: Option<u64>,
    /// CPU time in billionths of a CPU (`--cpus 1.5` = 1 500 000 000),
    /// enforced as a CFS quota per [`CPU_PERIOD_US`].
    pub nano_cpus: Option<u64>,
}

impl Resources {
    /// No limits.
    pub fn new() -> Resources {
        Resources::default()
    }

    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }

    /// The CFS `(quota, period)` in microseconds for [`Resources::nano_cpus`].
    pub fn cpu_quota(&self) -> Option<(i64, u64)> {
        let n = self.nano_cpus?;
        let quota = u128::from(n) * u128::from(CPU_PERIOD_US) / 1_000_000_000;
        Some((i64::try_from(quota).unwrap_or(i64::MAX), CPU_PERIOD_US))
    }

    /// Checks the values (not the host).
    ///
    /// # Errors
    /// [`SpecError::InvalidOption`]: memory below [`MIN_MEMORY`], zero
    /// pids, CPUs below [`MIN_NANO_CPUS`].
    pub fn validate(&self) -> Result<(), SpecError> {
        let bad = |option: &'static str, value: u64, reason: &str| SpecError::InvalidOption {
            option,
            value: value.to_string(),
            reason: reason.to_owned(),
        };
        if let Some(m) = self.memory.filter(|m| *m < MIN_MEMORY) {
            return Err(bad("memory limit", m, "the minimum is 6 MiB"));
        }
        if let Some(p) = self.pids.filter(|p| *p == 0 || *p > i64::MAX as u64) {
            return Err(bad("pids limit", p, "it must be at least 1"));
        }
        if let Some(c) = self.nano_cpus.filter(|c| *c < MIN_NANO_CPUS) {
            return Err(bad("cpus (in billionths)", c, "the minimum is 0.01 CPU"));
        }
        Ok(())
    }

    /// Checks the CPU limit against a host with `host_cpus` CPUs: above
    /// them is refused, as Docker refuses it ("range of CPUs is from 0.01
    /// to N.00, as there are only N CPUs available"); a quota the CPUs
    /// could never use would read as a limit that is not one.
    ///
    /// # Errors
    /// [`SpecError::CpusAboveHost`].
    pub fn validate_for_host(&self, host_cpus: u32) -> Result<(), SpecError> {
        match self.nano_cpus {
            Some(n) if n > u64::from(host_cpus) * 1_000_000_000 => Err(SpecError::CpusAboveHost {
                nano_cpus: n,
                host_cpus,
            }),
            _ => Ok(()),
        }
    }

    /// Writes the spec's `linux.resources` entries other than devices:
    /// `memory` (`limit`, and `swap` equal to it when `swap_limit`),
    /// `pids`, `cpu`; a limit that is not set is left as it is.
    pub(crate) fn apply_to(&self, resources: &mut LinuxResources, swap_limit: bool) {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        if let Some(m) = self.memory {
            let mut memory = LinuxMemory::default();
            memory
                .set_limit(Some(clamp(m)))
                .set_swap(swap_limit.then_some(clamp(m)));
            resources.set_memory(Some(memory));
        }
        if let Some(p) = self.pids {
            let mut pids = LinuxPids::default();
            pids.set_limit(clamp(p));
            resources.set_pids(Some(pids));
        }
        if let Some((quota, period)) = self.cpu_quota() {
            let mut cpu = LinuxCpu::default();
            cpu.set_quota(Some(quota)).set_period(Some(period));
            resources.set_cpu(Some(cpu));
        }
    }
}

/// Parses a size in bytes as Docker does: a number with an optional
/// binary suffix `b`, `k`, `m`, `g`, `t` (each may end in `b` or `ib`,
/// any case): `64m`, `1g`, `1.5GiB`, `1048576`.
///
/// Public on purpose, with [`parse_cpus`]: they are the grammar of
/// `docker run`'s `--memory` and `--cpus` for the values [`Resources`]
/// holds, which every front end offering those flags (imagectl, a build's
/// `RUN` limits) must read the same way, with the same typed error.
///
/// # Errors
/// [`SpecError::InvalidOption`] (`option` names the flag in the message).
pub fn parse_bytes(option: &'static str, s: &str) -> Result<u64, SpecError> {
    let bad = |reason: &str| SpecError::InvalidOption {
        option,
        value: s.to_owned(),
        reason: reason.to_owned(),
    };
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => {
            return Err(bad(
                "expected a number with an optional unit b, k, m, g or t",
            ))
        }
    };
    if num.is_empty() {
        return Err(bad(
            "expected a number with an optional unit b, k, m, g or t",
        ));
    }
    let bytes = match num.split_once('.') {
        None => num
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(1u64 << shift)),
        Some(_) => num
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(|f| f * (1u64 << shift) as f64)
            .filter(|f| *f < u64::MAX as f64)
            .map(|f| f as u64),
    };
    bytes.ok_or_else(|| bad("not a representable size"))
}

/// Parses `--cpus` (a decimal number of CPUs, `0.5`, `2`) into billionths
/// of a CPU.
///
/// # Errors
/// [`SpecError::InvalidOption`].
pub fn parse_cpus(s: &str) -> Result<u64, SpecError> {
    let bad = |reason: &str| SpecError::InvalidOption {
        option: "cpus",
        value: s.to_owned(),
        reason: reason.to_owned(),
    };
    let f: f64 = s
        .trim()
        .parse()
        .map_err(|_| bad("expected a decimal number of CPUs"))?;
    if !f.is_finite() || f <= 0.0 || f > 1e9 {
        return Err(bad("expected a positive number of CPUs"));
    }
    Ok((f * 1e9).round() as u64)
}

/// The CPUs this process may run on (its affinity mask, as Docker's
/// daemon counts them), at least 1; what [`Resources::validate_for_host`]
/// is given when a bundle is written.
pub fn host_cpus() -> u32 {
    rustix::thread::sched_getaffinity(None)
        .map(|set| set.count())
        .ok()
        .or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .and_then(|n| u32::try_from(n.get()).ok())
        })
        .unwrap_or(1)
        .max(1)
}

/// The container's network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NetworkMode {
    /// A new network namespace whose only interface is loopback, up
    /// (`--net none`; the default).
    #[default]
    None,
    /// The host's network namespace, with the host's `/etc/hosts` and
    /// `/etc/resolv.conf` (`--net host`).
    Host,
}

impl FromStr for NetworkMode {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<NetworkMode, SpecError> {
        match s {
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            _ => Err(SpecError::InvalidOption {
                option: "network",
                value: s.to_owned(),
                reason: "expected none or host".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_docker_parses_them() {
        let p = |s| parse_bytes("memory", s);
        assert_eq!(p("1048576").unwrap(), 1 << 20);
        assert_eq!(p("64m").unwrap(), 64 << 20);
        assert_eq!(p("64M").unwrap(), 64 << 20);
        assert_eq!(p("64mb").unwrap(), 64 << 20);
        assert_eq!(p("1g").unwrap(), 1 << 30);
        assert_eq!(p("1GiB").unwrap(), 1 << 30);
        assert_eq!(p("512k").unwrap(), 512 << 10);
        assert_eq!(p("100b").unwrap(), 100);
        assert_eq!(p("1.5g").unwrap(), 3 << 29);
        for bad in ["", "m", "12x", "-1m", "1..2m", "99999999999999999999t"] {
            assert!(
                matches!(p(bad), Err(SpecError::InvalidOption { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn cpus_become_a_quota() {
        assert_eq!(parse_cpus("1.5").unwrap(), 1_500_000_000);
        assert_eq!(parse_cpus("0.5").unwrap(), 500_000_000);
        for bad in ["0", "-1", "x", "NaN", "inf"] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
        let r = Resources {
            nano_cpus: Some(1_500_000_000),
            ..Resources::new()
        };
        assert_eq!(r.cpu_quota(), Some((150_000, 100_000)));
        let r = Resources {
            nano_cpus: Some(MIN_NANO_CPUS),
            ..Resources::new()
        };
        assert_eq!(r.cpu_quota(), Some((1_000, 100_000)));
    }

    #[test]
    fn validation() {
        assert!(Resources::new().validate().is_ok());
        let r = |memory, pids, nano_cpus| Resources {
            memory,
            pids,
            nano_cpus,
        };
        assert!(r(Some(16 << 20), Some(10), Some(MIN_NANO_CPUS))
            .validate()
            .is_ok());
        assert!(r(Some(1 << 20), None, None).validate().is_err());
        assert!(r(None, Some(0), None).validate().is_err());
        assert!(r(None, None, Some(1)).validate().is_err());
        assert_eq!("host".parse::<NetworkMode>().unwrap(), NetworkMode::Host);
        assert_eq!("none".parse::<NetworkMode>().unwrap(), NetworkMode::None);
        assert!("bridge".parse::<NetworkMode>().is_err());
    }

    /// Above the host's CPUs is refused with both numbers in the message;
    /// exactly the host's count is accepted.
    #[test]
    fn cpus_above_the_host_are_refused() {
        let r = |n| Resources {
            nano_cpus: Some(n),
            ..Resources::new()
        };
        assert!(r(2_000_000_000).validate_for_host(2).is_ok());
        assert!(Resources::new().validate_for_host(1).is_ok());
        let e = r(2_500_000_000).validate_for_host(2).unwrap_err();
        assert!(
            matches!(
                e,
                SpecError::CpusAboveHost {
                    nano_cpus: 2_500_000_000,
                    host_cpus: 2
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "invalid cpus 2.50: range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"
        );
        assert!(host_cpus() >= 1);
    }
}
