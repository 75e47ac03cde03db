//! System calls that rustix does not wrap, called through `libc`. The only
//! module of this crate with `unsafe` code.
//!
//! # Safety
//!
//! Each function passes a descriptor borrowed for the length of the call
//! (so open, and not closed under the call) and plain integers to one
//! system call that reads no memory of this process and writes none; its
//! result is only an integer and `errno`. Each `unsafe` block says so.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd};

use rustix::io::Errno;

/// Starts the writeback of the dirty pages of `fd` in `offset..offset +
/// len` (`len` 0: to the end of the file) and returns without waiting for
/// it: `sync_file_range(2)` with `SYNC_FILE_RANGE_WRITE`. The pages stay
/// in the page cache (unlike `posix_fadvise(POSIX_FADV_DONTNEED)`), and
/// nothing is made durable by it (no metadata, no disk cache flush): it
/// only moves writeback that a later `sync` would do to now, to overlap
/// it with the work that follows.
///
/// <https://man7.org/linux/man-pages/man2/sync_file_range.2.html>
pub(crate) fn start_writeback(fd: impl AsFd, offset: u64, len: u64) -> Result<(), Errno> {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(Errno::INVAL);
    };
    let fd = fd.as_fd();
    // SAFETY: `fd` is a descriptor borrowed for this call, so open; the
    // other arguments are integers, and the call touches no memory of
    // this process.
    let rc =
        unsafe { libc::sync_file_range(fd.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn writeback_of_a_written_file_starts_and_keeps_its_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(&[7u8; 100_000]).expect("write");
        start_writeback(&f, 0, 0).expect("whole file");
        start_writeback(&f, 4096, 8192).expect("a range");
        assert_eq!(start_writeback(&f, u64::MAX, 0), Err(Errno::INVAL));
        let pipe = rustix::pipe::pipe().expect("pipe").0;
        assert_eq!(start_writeback(&pipe, 0, 0), Err(Errno::SPIPE));
        assert_eq!(std::fs::read(&path).expect("read"), vec![7u8; 100_000]);
    }
}
