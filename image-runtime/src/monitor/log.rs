//! A detached container's output log, in Docker's `json-file` format: one
//! JSON object per line, `{"log":"...","stream":"stdout","time":"..."}`,
//! the time in RFC 3339 with nanoseconds (UTC). The file is
//! `<container dir>/container.log`; when the next entry would make it
//! larger than [`LogOptions::max_size`] it is rotated to `container.log.1`
//! (older ones shifted up to `container.log.<max_file - 1>`, the oldest
//! dropped), so a log never takes more than `max_size * max_file` bytes
//! (plus one entry). Files are opened with `O_NOFOLLOW`: a symlink planted
//! in the container's directory is refused, never followed.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use crate::model::LogOptions;

/// The log's file name in a container's directory.
pub const LOG_FILE: &str = "container.log";

/// The longest `log` of one entry: longer lines are split, as Docker does
/// (16 KiB).
pub const MAX_ENTRY: usize = 16 * 1024;

/// A `--log-opt` or `--restart` that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DetachOptionError {
    /// Not `max-size=SIZE` or `max-file=N`; not a restart policy.
    #[error("unsupported option {option:?}: expected max-size=SIZE or max-file=N (--log-opt), or no, on-failure[:N], always, unless-stopped (--restart)")]
    Unknown {
        /// The option as given.
        option: String,
    },
    /// A value out of range or not a number.
    #[error("option {option:?}: {why}")]
    Value {
        /// The option as given.
        option: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl image_core::Classify for DetachOptionError {
    fn kind(&self) -> image_core::ErrorKind {
        image_core::ErrorKind::InvalidInput
    }
}

impl LogOptions {
    /// Applies one `--log-opt` (`max-size=10m`, `max-file=3`).
    ///
    /// # Errors
    /// [`DetachOptionError`].
    pub fn set(&mut self, option: &str) -> Result<(), DetachOptionError> {
        let bad = |why| DetachOptionError::Value {
            option: option.to_owned(),
            why,
        };
        match option.split_once('=') {
            Some(("max-size", v)) => {
                let n = crate::spec::resources::parse_bytes("max-size", v)
                    .map_err(|_| bad("not a size (bytes, or a number with k, m, g)"))?;
                if n < Self::MIN_SIZE {
                    return Err(bad("below the least size, 64k"));
                }
                self.max_size = n;
            }
            Some(("max-file", v)) => {
                let n: u32 = v.parse().map_err(|_| bad("not a number"))?;
                if !(1..=100).contains(&n) {
                    return Err(bad("must be 1 to 100"));
                }
                self.max_file = n;
            }
            _ => {
                return Err(DetachOptionError::Unknown {
                    option: option.to_owned(),
                })
            }
        }
        Ok(())
    }
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The text, with its newline when it ended one (lossy UTF-8).
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// When it was read, RFC 3339 with nanoseconds (UTC).
    pub time: String,
}

impl LogEntry {
    /// Its time, when it parses.
    pub fn timestamp(&self) -> Option<SystemTime> {
        parse_rfc3339(&self.time)
    }
}

/// The path of log file `n` (0: the current one) in `dir`.
pub(crate) fn log_path(dir: &Path, n: u32) -> PathBuf {
    if n == 0 {
        dir.join(LOG_FILE)
    } else {
        dir.join(format!("{LOG_FILE}.{n}"))
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

fn open_read(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Writes entries to a container's log, rotating it at its cap.
#[derive(Debug)]
pub(crate) struct LogWriter {
    dir: PathBuf,
    options: LogOptions,
    file: File,
    size: u64,
}

impl LogWriter {
    /// Opens (appending to) the log in `dir`.
    pub(crate) fn open(dir: &Path, options: LogOptions) -> std::io::Result<LogWriter> {
        let file = open_append(&log_path(dir, 0))?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            dir: dir.to_owned(),
            options,
            file,
            size,
        })
    }

    /// Appends one entry (its text lossy UTF-8 of `bytes`), rotating first
    /// when it would cross the cap.
    pub(crate) fn write(&mut self, stream: &str, bytes: &[u8]) -> std::io::Result<()> {
        let entry = LogEntry {
            log: String::from_utf8_lossy(bytes).into_owned(),
            stream: stream.to_owned(),
            time: format_rfc3339(SystemTime::now()),
        };
        let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.options.max_size {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let keep = self.options.max_file.max(1);
        if keep == 1 {
            self.file.set_len(0)?;
            self.file.seek(SeekFrom::Start(0))?;
            self.size = 0;
            return Ok(());
        }
        // Oldest first: .(keep-1) is dropped, .i becomes .(i+1).
        match std::fs::remove_file(log_path(&self.dir, keep - 1)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for n in (0..keep - 1).rev() {
            match std::fs::rename(log_path(&self.dir, n), log_path(&self.dir, n + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        self.file = open_append(&log_path(&self.dir, 0))?;
        self.size = 0;
        Ok(())
    }
}

/// Splits a stream of output into log entries: one per line, lines longer
/// than [`MAX_ENTRY`] in pieces, the rest at the end.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `data`; calls `emit` for each complete entry.
    pub(crate) fn feed(&mut self, data: &[u8], mut emit: impl FnMut(&[u8])) {
        for &b in data {
            self.pending.push(b);
            if b == b'\n' || self.pending.len() >= MAX_ENTRY {
                emit(&self.pending);
                self.pending.clear();
            }
        }
    }

    /// The unterminated rest, if any.
    pub(crate) fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit(&self.pending);
            self.pending.clear();
        }
    }
}

/// Which entries [`read`] returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Only the last this many (`--tail N`); all when `None`.
    pub tail: Option<usize>,
    /// Only those at or after this time (`--since`).
    pub since: Option<SystemTime>,
}

/// The entries of the log in `dir`, oldest first, rotated files included;
/// lines that are not entries are skipped. Memory is bounded by the log's
/// cap (and by `tail`).
///
/// # Errors
/// I/O errors other than a missing file.
pub fn read(dir: &Path, query: &LogQuery, max_file: u32) -> std::io::Result<Vec<LogEntry>> {
    read_and_follow(dir, query, max_file).map(|(entries, _)| entries)
}

/// As [`read`], and a [`LogFollower`] that continues exactly after the
/// last entry read (nothing lost or repeated in between, across a
/// rotation too).
///
/// # Errors
/// As [`read`].
pub fn read_and_follow(
    dir: &Path,
    query: &LogQuery,
    max_file: u32,
) -> std::io::Result<(Vec<LogEntry>, LogFollower)> {
    let mut out: VecDeque<LogEntry> = VecDeque::new();
    // The follower pins the current file before the rotated ones are
    // read: a rotation in between is then read from `.1` by its poll.
    let mut follower = LogFollower::at_start(dir);
    for n in (1..max_file.max(1)).rev() {
        let file = match open_read(&log_path(dir, n)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if follower.inode.is_some() && follower.inode == file.metadata().ok().map(|m| m.ino()) {
            continue;
        }
        read_entries(BufReader::new(file), query, &mut out)?;
    }
    follower.poll_into(query, &mut out)?;
    Ok((out.into(), follower))
}

fn read_entries(
    mut r: impl BufRead,
    query: &LogQuery,
    out: &mut VecDeque<LogEntry>,
) -> std::io::Result<u64> {
    let mut line = Vec::new();
    let mut consumed = 0;
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            // A line still being written is read by the next poll.
            return Ok(consumed);
        }
        consumed += n as u64;
        let Ok(entry) = serde_json::from_slice::<LogEntry>(&line) else {
            continue;
        };
        if query
            .since
            .is_some_and(|s| entry.timestamp().is_some_and(|t| t < s))
        {
            continue;
        }
        out.push_back(entry);
        if query.tail.is_some_and(|t| out.len() > t) {
            out.pop_front();
        }
    }
}

/// Follows the current log file of a container from where it last read,
/// without a thread: each [`poll`](LogFollower::poll) returns what was
/// appended since (across a rotation too: a new file is read from its
/// start).
#[derive(Debug)]
pub struct LogFollower {
    dir: PathBuf,
    inode: Option<u64>,
    offset: u64,
}

impl LogFollower {
    /// A follower of the log in `dir` from its current end.
    pub fn at_end(dir: &Path) -> LogFollower {
        let (inode, offset) = match open_read(&log_path(dir, 0)).and_then(|f| f.metadata()) {
            Ok(m) => (Some(m.ino()), m.len()),
            Err(_) => (None, 0),
        };
        LogFollower {
            dir: dir.to_owned(),
            inode,
            offset,
        }
    }

    /// A follower of the log in `dir` from the start of its current file.
    fn at_start(dir: &Path) -> LogFollower {
        LogFollower {
            dir: dir.to_owned(),
            inode: open_read(&log_path(dir, 0))
                .and_then(|f| f.metadata())
                .ok()
                .map(|m| m.ino()),
            offset: 0,
        }
    }

    /// The entries appended since the last poll (none is an empty vector).
    ///
    /// # Errors
    /// I/O errors other than a missing file.
    pub fn poll(&mut self) -> std::io::Result<Vec<LogEntry>> {
        let mut out = VecDeque::new();
        self.poll_into(&LogQuery::default(), &mut out)?;
        Ok(out.into())
    }

    fn poll_into(&mut self, query: &LogQuery, out: &mut VecDeque<LogEntry>) -> std::io::Result<()> {
        let mut file = match open_read(&log_path(&self.dir, 0)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if self.inode != Some(meta.ino()) || meta.len() < self.offset {
            // Rotated: finish the old file (now .1) first, then start over.
            if let Some(old) = self.inode {
                if let Ok(mut f) = open_read(&log_path(&self.dir, 1)) {
                    if f.metadata()?.ino() == old {
                        f.seek(SeekFrom::Start(self.offset))?;
                        read_entries(BufReader::new(f), query, out)?;
                    }
                }
            }
            self.inode = Some(meta.ino());
            self.offset = 0;
        }
        file.seek(SeekFrom::Start(self.offset))?;
        self.offset += read_entries(BufReader::new(file), query, out)?;
        Ok(())
    }
}

/// `t` as RFC 3339 with nanoseconds in UTC (`2026-12-06T01:45:00.123456789Z`),
/// as Docker's json-file writes it.
pub fn format_rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = image_core::time::rfc3339(i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    // `...:SSZ` with the nanoseconds before the `Z`.
    format!("{}.{:09}Z", secs.trim_end_matches('Z'), d.subsec_nanos())
}

/// Parses what [`format_rfc3339`] writes, with any number of fraction
/// digits (or none) and `Z` or a `±HH:MM` offset.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    if h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = frac[..digits].parse::<u32>().ok()? * 10u32.pow(9 - digits as u32);
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && matches!(&o[..1], "+" | "-") && &o[3..4] == ":" => {
            let v = num(s.len() - 5..s.len() - 3)? * 3600 + num(s.len() - 2..s.len())? * 60;
            if o.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// A `--since`/`--until` time as Docker takes it: RFC 3339, Unix seconds
/// (with an optional fraction), or a duration before `now` (`10s`, `5m`,
/// `2h`, `1h30m`).
pub fn parse_since(s: &str, now: SystemTime) -> Option<SystemTime> {
    if let Some(t) = parse_rfc3339(s) {
        return Some(t);
    }
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| UNIX_EPOCH + Duration::from_secs_f64(secs));
    }
    let mut total = 0u64;
    let mut n = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            n.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return None,
        };
        total = total.checked_add(n.parse::<u64>().ok()?.checked_mul(unit)?)?;
        n.clear();
    }
    if !n.is_empty() || s.is_empty() {
        return None;
    }
    now.checked_sub(Duration::from_secs(total))
}

/// Days since 1970-01-01 of a date, proleptic Gregorian (the inverse of
/// Howard Hinnant's `civil_from_days`, which `image_core::time` uses).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Formatting then parsing gives the same instant, over a spread of
    /// generated times (leap years, month ends, the epoch).
    #[test]
    fn rfc3339_round_trips() {
        let mut next = image_core_rng(0x5eed);
        for _ in 0..20_000 {
            let secs = next() % 8_000_000_000;
            let nanos = (next() % 1_000_000_000) as u32;
            let t = UNIX_EPOCH + Duration::new(secs, nanos);
            let s = format_rfc3339(t);
            assert_eq!(parse_rfc3339(&s), Some(t), "{s}");
        }
        assert_eq!(
            format_rfc3339(UNIX_EPOCH + Duration::new(951_782_400, 5)),
            "2000-02-29T00:00:00.000000005Z"
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T01:00:00+01:00"),
            Some(UNIX_EPOCH + Duration::from_secs(951_782_400))
        );
        for bad in [
            "",
            "2000-13-01T00:00:00Z",
            "2000-02-29T00:00:00",
            "x000-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    fn image_core_rng(mut s: u64) -> impl FnMut() -> u64 {
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        }
    }

    #[test]
    fn since_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(
            parse_since("1h30m", now),
            Some(UNIX_EPOCH + Duration::from_secs(10_000 - 5400))
        );
        assert_eq!(
            parse_since("42", now),
            Some(UNIX_EPOCH + Duration::from_secs(42))
        );
        assert_eq!(parse_since("5x", now), None);
        assert_eq!(parse_since("", now), None);
    }

    /// Lines become entries; a line longer than an entry is split; the
    /// unterminated rest comes out at the end.
    #[test]
    fn splitter() {
        let mut s = LineSplitter::default();
        let mut got: Vec<Vec<u8>> = Vec::new();
        let long = vec![b'x'; MAX_ENTRY + 3];
        s.feed(b"a\nb", |e| got.push(e.to_vec()));
        s.feed(b"c\n", |e| got.push(e.to_vec()));
        s.feed(&long, |e| got.push(e.to_vec()));
        s.finish(|e| got.push(e.to_vec()));
        assert_eq!(got[0], b"a\n");
        assert_eq!(got[1], b"bc\n");
        assert_eq!(got[2].len(), MAX_ENTRY);
        assert_eq!(got[3], b"xxx");
    }

    /// Writing far more than the cap keeps `max_file` files, each within
    /// the cap, and the newest entries readable in order.
    #[test]
    fn rotation_bounds_the_log() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            max_size: LogOptions::MIN_SIZE,
            max_file: 3,
        };
        let mut w = LogWriter::open(tmp.path(), opts).unwrap();
        for i in 0..20_000 {
            w.write("stdout", format!("line {i}\n").as_bytes()).unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["container.log", "container.log.1", "container.log.2"]
        );
        for n in &names {
            let len = std::fs::metadata(tmp.path().join(n)).unwrap().len();
            assert!(len <= opts.max_size, "{n}: {len}");
        }
        let all = read(tmp.path(), &LogQuery::default(), 3).unwrap();
        assert_eq!(all.last().unwrap().log, "line 19999\n");
        let nums: Vec<u32> = all
            .iter()
            .map(|e| e.log.trim()[5..].parse().unwrap())
            .collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1));
        let tail = read(
            tmp.path(),
            &LogQuery {
                tail: Some(2),
                since: None,
            },
            3,
        )
        .unwrap();
        assert_eq!(tail.len(), 2);
        assert_eq!(tail[0].log, "line 19998\n");
    }

    /// A follower sees what is appended, across a rotation, exactly once.
    #[test]
    fn follower_crosses_rotation() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            max_size: LogOptions::MIN_SIZE,
            max_file: 2,
        };
        let mut w = LogWriter::open(tmp.path(), opts).unwrap();
        w.write("stdout", b"before\n").unwrap();
        let mut f = LogFollower::at_end(tmp.path());
        let mut seen = Vec::new();
        for i in 0..3000 {
            w.write("stderr", format!("{i}\n").as_bytes()).unwrap();
            if i % 500 == 0 {
                seen.extend(f.poll().unwrap());
            }
        }
        seen.extend(f.poll().unwrap());
        let nums: Vec<u32> = seen.iter().map(|e| e.log.trim().parse().unwrap()).collect();
        assert_eq!(nums, (0..3000).collect::<Vec<_>>());
    }

    /// A symlink in place of the log is refused, not followed.
    #[test]
    fn a_symlinked_log_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, tmp.path().join(LOG_FILE)).unwrap();
        assert!(LogWriter::open(tmp.path(), LogOptions::default()).is_err());
        assert!(!target.exists());
    }
}
