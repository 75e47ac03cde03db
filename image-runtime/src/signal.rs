//! [`Signal`]: a signal for a container's process, the standard ones and
//! the real-time ones, named as Docker, runc and `kill -l` name them.
//!
//! The numbers are Linux's: 1 to 31 the standard signals, 34 (`RTMIN`) to
//! 64 (`RTMAX`) the real-time ones. 32 and 33 are refused: glibc keeps
//! them for itself (thread cancellation and `setxid`), so its `SIGRTMIN`
//! is 34, which is what Docker's `RTMIN` means too. The names do not
//! depend on this process's C library: the signal goes to a container's
//! process, whose numbering is the kernel's.

use std::fmt;
use std::str::FromStr;

use image_core::{Classify, ErrorKind};

/// The first real-time signal as glibc, Docker and `kill -l` number it.
const RT_MIN: u8 = 34;
/// The last real-time signal (the kernel's `_NSIG`).
const RT_MAX: u8 = 64;
/// How far from `RTMIN` a real-time signal is named `RTMIN+n` rather than
/// `RTMAX-n` (as glibc, bash and Docker name them).
const RT_MIN_NAMED: u8 = 15;

/// The standard signals by name (aliases after the canonical name, which
/// [`Signal`]'s `Display` uses).
const STANDARD: &[(&str, libc::c_int)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    #[cfg(not(any(
        target_arch = "mips",
        target_arch = "mips32r6",
        target_arch = "mips64",
        target_arch = "mips64r6",
        target_arch = "sparc",
        target_arch = "sparc64"
    )))]
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
    // Aliases, as Docker and the shells accept them.
    ("IOT", libc::SIGABRT),
    ("CLD", libc::SIGCHLD),
    ("POLL", libc::SIGIO),
];

/// A signal that cannot be sent to a container's process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// Neither a number nor a signal's name (`TERM`, `SIGTERM`,
    /// `RTMIN+3`, `SIGRTMAX-1`).
    #[error("unknown signal {0:?}")]
    Unknown(String),
    /// A number outside 1..=64, or a real-time name past its end
    /// (`RTMIN+31`).
    #[error("signal {0:?} is out of range (1-31, 34-64)")]
    OutOfRange(String),
    /// 32 or 33, which glibc keeps for itself (below its `SIGRTMIN`).
    #[error("signal {0} is reserved by the C library")]
    Reserved(u8),
}

impl Classify for SignalError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

/// A signal for a container's process: a checked Linux signal number, a
/// standard one (1..=31) or a real-time one (34..=64).
///
/// Parsed as Docker parses `docker kill -s`: a number (`15`), a name with
/// or without `SIG`, in any case (`TERM`, `SIGTERM`, `sigterm`), or a
/// real-time signal as an offset from either end (`RTMIN`, `RTMIN+3`,
/// `SIGRTMAX-1`); shown as its canonical name (`SIGTERM`, `SIGRTMIN+3`,
/// `SIGRTMAX-1`).
///
/// ```
/// use image_runtime::Signal;
/// let s: Signal = "RTMIN+3".parse().unwrap();
/// assert_eq!(s.as_raw(), 37);
/// assert_eq!(s.to_string(), "SIGRTMIN+3");
/// assert_eq!("sigterm".parse::<Signal>().unwrap(), Signal::TERM);
/// assert!("32".parse::<Signal>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signal(u8);

impl Signal {
    /// SIGHUP.
    pub const HUP: Signal = Signal(libc::SIGHUP as u8);
    /// SIGINT.
    pub const INT: Signal = Signal(libc::SIGINT as u8);
    /// SIGQUIT.
    pub const QUIT: Signal = Signal(libc::SIGQUIT as u8);
    /// SIGILL.
    pub const ILL: Signal = Signal(libc::SIGILL as u8);
    /// SIGTRAP.
    pub const TRAP: Signal = Signal(libc::SIGTRAP as u8);
    /// SIGABRT.
    pub const ABRT: Signal = Signal(libc::SIGABRT as u8);
    /// SIGBUS.
    pub const BUS: Signal = Signal(libc::SIGBUS as u8);
    /// SIGFPE.
    pub const FPE: Signal = Signal(libc::SIGFPE as u8);
    /// SIGKILL.
    pub const KILL: Signal = Signal(libc::SIGKILL as u8);
    /// SIGUSR1.
    pub const USR1: Signal = Signal(libc::SIGUSR1 as u8);
    /// SIGSEGV.
    pub const SEGV: Signal = Signal(libc::SIGSEGV as u8);
    /// SIGUSR2.
    pub const USR2: Signal = Signal(libc::SIGUSR2 as u8);
    /// SIGPIPE.
    pub const PIPE: Signal = Signal(libc::SIGPIPE as u8);
    /// SIGALRM.
    pub const ALRM: Signal = Signal(libc::SIGALRM as u8);
    /// SIGTERM.
    pub const TERM: Signal = Signal(libc::SIGTERM as u8);
    /// SIGCHLD.
    pub const CHLD: Signal = Signal(libc::SIGCHLD as u8);
    /// SIGCONT.
    pub const CONT: Signal = Signal(libc::SIGCONT as u8);
    /// SIGSTOP.
    pub const STOP: Signal = Signal(libc::SIGSTOP as u8);
    /// SIGTSTP.
    pub const TSTP: Signal = Signal(libc::SIGTSTP as u8);
    /// SIGTTIN.
    pub const TTIN: Signal = Signal(libc::SIGTTIN as u8);
    /// SIGTTOU.
    pub const TTOU: Signal = Signal(libc::SIGTTOU as u8);
    /// SIGURG.
    pub const URG: Signal = Signal(libc::SIGURG as u8);
    /// SIGXCPU.
    pub const XCPU: Signal = Signal(libc::SIGXCPU as u8);
    /// SIGXFSZ.
    pub const XFSZ: Signal = Signal(libc::SIGXFSZ as u8);
    /// SIGVTALRM.
    pub const VTALRM: Signal = Signal(libc::SIGVTALRM as u8);
    /// SIGPROF.
    pub const PROF: Signal = Signal(libc::SIGPROF as u8);
    /// SIGWINCH.
    pub const WINCH: Signal = Signal(libc::SIGWINCH as u8);
    /// SIGIO.
    pub const IO: Signal = Signal(libc::SIGIO as u8);
    /// SIGPWR.
    pub const PWR: Signal = Signal(libc::SIGPWR as u8);
    /// SIGSYS.
    pub const SYS: Signal = Signal(libc::SIGSYS as u8);
    /// The first real-time signal, `SIGRTMIN` (34).
    pub const RTMIN: Signal = Signal(RT_MIN);
    /// The last real-time signal, `SIGRTMAX` (64).
    pub const RTMAX: Signal = Signal(RT_MAX);

    /// The signal numbered `n`.
    ///
    /// # Errors
    /// [`SignalError::OutOfRange`] outside 1..=64,
    /// [`SignalError::Reserved`] for 32 and 33.
    pub fn from_raw(n: i32) -> Result<Signal, SignalError> {
        match u8::try_from(n) {
            Ok(n @ 1..=31) | Ok(n @ RT_MIN..=RT_MAX) => Ok(Signal(n)),
            Ok(n @ 32..=33) => Err(SignalError::Reserved(n)),
            _ => Err(SignalError::OutOfRange(n.to_string())),
        }
    }

    /// Its number.
    pub fn as_raw(self) -> i32 {
        i32::from(self.0)
    }

    /// Whether it is a real-time signal (`SIGRTMIN` to `SIGRTMAX`).
    pub fn is_realtime(self) -> bool {
        self.0 >= RT_MIN
    }

    /// Every signal, in the order of their numbers.
    pub fn all() -> impl Iterator<Item = Signal> {
        (1..=RT_MAX)
            .filter(|n| !(32..RT_MIN).contains(n))
            .map(Signal)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if let Some((name, _)) = STANDARD.iter().find(|(_, s)| *s == i32::from(n)) {
            return write!(f, "SIG{name}");
        }
        match n {
            RT_MIN => f.write_str("SIGRTMIN"),
            RT_MAX => f.write_str("SIGRTMAX"),
            n if n >= RT_MIN && n - RT_MIN <= RT_MIN_NAMED => {
                write!(f, "SIGRTMIN+{}", n - RT_MIN)
            }
            n if n >= RT_MIN => write!(f, "SIGRTMAX-{}", RT_MAX - n),
            // A standard number this architecture has no name for.
            n => write!(f, "SIG{n}"),
        }
    }
}

impl FromStr for Signal {
    type Err = SignalError;

    fn from_str(s: &str) -> Result<Signal, SignalError> {
        let out_of_range = || SignalError::OutOfRange(s.to_owned());
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            let n = s.parse::<i32>().map_err(|_| out_of_range())?;
            return Signal::from_raw(n).map_err(|e| match e {
                SignalError::OutOfRange(_) => out_of_range(),
                e => e,
            });
        }
        let upper = s.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        if let Some((_, n)) = STANDARD.iter().find(|(known, _)| *known == name) {
            return Ok(Signal(*n as u8));
        }
        let offset = |digits: &str| -> Result<u8, SignalError> {
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(SignalError::Unknown(s.to_owned()));
            }
            digits
                .parse::<u8>()
                .ok()
                .filter(|o| *o <= RT_MAX - RT_MIN)
                .ok_or_else(out_of_range)
        };
        let n = match name {
            "RTMIN" => RT_MIN,
            "RTMAX" => RT_MAX,
            _ => match (name.strip_prefix("RTMIN+"), name.strip_prefix("RTMAX-")) {
                (Some(o), _) => RT_MIN + offset(o)?,
                (_, Some(o)) => RT_MAX - offset(o)?,
                _ => return Err(SignalError::Unknown(s.to_owned())),
            },
        };
        Ok(Signal(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<i32, SignalError> {
        s.parse::<Signal>().map(Signal::as_raw)
    }

    #[test]
    fn names_with_or_without_sig_in_any_case_and_numbers() {
        for s in ["TERM", "SIGTERM", "term", "SigTerm", "15"] {
            assert_eq!(parse(s), Ok(15), "{s}");
        }
        for (s, n) in [
            ("KILL", 9),
            ("SIGUSR1", libc::SIGUSR1),
            ("IOT", libc::SIGABRT),
            ("CLD", libc::SIGCHLD),
            ("1", 1),
            ("31", 31),
        ] {
            assert_eq!(parse(s), Ok(n), "{s}");
        }
    }

    #[test]
    fn real_time_signals_from_either_end() {
        for (s, n) in [
            ("RTMIN", 34),
            ("SIGRTMIN", 34),
            ("RTMIN+3", 37),
            ("sigrtmin+15", 49),
            ("RTMAX-14", 50),
            ("SIGRTMAX-1", 63),
            ("RTMAX", 64),
            ("RTMIN+30", 64),
            ("RTMAX-30", 34),
            ("RTMIN+0", 34),
            ("34", 34),
            ("64", 64),
        ] {
            assert_eq!(parse(s), Ok(n), "{s}");
        }
    }

    #[test]
    fn bounds_and_reserved_numbers_are_refused() {
        for s in ["0", "65", "128", "99999999999999999999"] {
            assert_eq!(parse(s), Err(SignalError::OutOfRange(s.into())), "{s}");
        }
        assert_eq!(parse("32"), Err(SignalError::Reserved(32)));
        assert_eq!(parse("33"), Err(SignalError::Reserved(33)));
        for s in ["RTMIN+31", "RTMAX-31", "RTMIN+300"] {
            assert_eq!(parse(s), Err(SignalError::OutOfRange(s.into())), "{s}");
        }
        assert_eq!(
            Signal::from_raw(-9),
            Err(SignalError::OutOfRange("-9".into()))
        );
    }

    #[test]
    fn garbage_is_refused_with_a_typed_error() {
        for s in [
            "",
            "SIG",
            "TERMX",
            "-9",
            "+9",
            " 9",
            "9 ",
            "RTMIN+",
            "RTMIN-1",
            "RTMAX+1",
            "RTMIN+x",
            "RTMIN+-1",
            "RT",
            "SIGSIGTERM",
            "1.5",
            "0x10",
            "ᛏ",
        ] {
            let e = parse(s).unwrap_err();
            assert!(
                matches!(e, SignalError::Unknown(ref v) if v == s),
                "{s:?}: {e:?}"
            );
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
    }

    /// Every signal shows as a name that parses back to it, and every
    /// number in 1..=64 either is one of them or is refused.
    #[test]
    fn every_signal_round_trips_through_its_name_and_number() {
        let all: Vec<Signal> = Signal::all().collect();
        assert_eq!(all.len(), 62);
        for s in &all {
            let name = s.to_string();
            assert!(name.starts_with("SIG"), "{name}");
            assert_eq!(name.parse::<Signal>(), Ok(*s), "{name}");
            assert_eq!(s.as_raw().to_string().parse::<Signal>(), Ok(*s));
            assert_eq!(s.is_realtime(), s.as_raw() >= 34);
        }
        for n in -1..=70 {
            let known = all.iter().any(|s| s.as_raw() == n);
            assert_eq!(Signal::from_raw(n).is_ok(), known, "{n}");
        }
        assert_eq!(Signal::RTMIN.to_string(), "SIGRTMIN");
        assert_eq!(Signal::from_raw(49).unwrap().to_string(), "SIGRTMIN+15");
        assert_eq!(Signal::from_raw(50).unwrap().to_string(), "SIGRTMAX-14");
        assert_eq!(Signal::TERM.to_string(), "SIGTERM");
    }

    /// Every real-time form with every prefix and offset parses to the
    /// number it names or is refused as out of range; arbitrary short
    /// strings (a fixed pseudo-random sequence) never panic, and any that
    /// parses shows as a name that parses back to the same signal.
    #[test]
    fn generated_inputs_parse_as_their_arithmetic_says() {
        for prefix in ["", "SIG", "sig", "Sig"] {
            for k in 0..=70i32 {
                for (form, n) in [("rtmin+", 34 + k), ("RTMAX-", 64 - k)] {
                    let s = format!("{prefix}{form}{k}");
                    let want = match (34..=64).contains(&n) {
                        true => Ok(n),
                        false => Err(SignalError::OutOfRange(s.clone())),
                    };
                    assert_eq!(parse(&s), want, "{s}");
                }
            }
        }
        let alphabet = b"SIGRTMAXIN+-0123456789 tx";
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 12) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| alphabet[((state >> (i * 5)) % alphabet.len() as u64) as usize])
                .collect();
            let s = String::from_utf8(bytes).unwrap();
            if let Ok(sig) = s.parse::<Signal>() {
                assert_eq!(sig.to_string().parse::<Signal>(), Ok(sig), "{s}");
            }
        }
    }
}
