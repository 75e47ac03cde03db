//! A seccomp filter on the calling thread that refuses one system call
//! with a chosen errno, as a container runtime's profile refuses a call it
//! does not know: for tests of the fallbacks a library takes there
//! (`openat2` refused with `EPERM`, as older Docker profiles answer).
//!
//! The filter binds the calling thread and the threads it starts from
//! then on, for the rest of their lives: run the test in a child process
//! of its own ([`crate::process::spawn_self`]) when what it sets off is
//! remembered process-wide. On x86_64 and aarch64 (the architectures
//! whose `AUDIT_ARCH` it knows).
//!
//! # Safety
//!
//! One `unsafe` block: `seccomp(2)` given a pointer to a filter program
//! that lives on the caller's stack for the length of the call, which the
//! kernel copies; nothing else of this process is read or written.
#![allow(unsafe_code)]

use std::io;

/// `offsetof(struct seccomp_data, nr)`.
const NR: u32 = 0;
/// `offsetof(struct seccomp_data, arch)`.
const ARCH: u32 = 4;
/// `AUDIT_ARCH_*` of this build's architecture.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;

fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Makes `syscall` (a `libc::SYS_*` number) fail with `errno` on this
/// thread and on every thread it starts afterwards; every other call, and
/// any call of another architecture's ABI, is let through. Sets
/// `no_new_privs` on the thread, as an unprivileged filter needs.
///
/// # Errors
/// The `prctl(2)` or `seccomp(2)` error.
pub fn refuse_on_this_thread(syscall: libc::c_long, errno: u16) -> io::Result<()> {
    let nr = u32::try_from(syscall).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let program = [
        op(LD_W_ABS, 0, 0, ARCH),
        op(JEQ_K, 1, 0, AUDIT_ARCH),
        op(RET_K, 0, 0, RET_ALLOW),
        op(LD_W_ABS, 0, 0, NR),
        op(JEQ_K, 0, 1, nr),
        op(RET_K, 0, 0, RET_ERRNO | u32::from(errno)),
        op(RET_K, 0, 0, RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_ptr().cast_mut(),
    };
    rustix::thread::set_no_new_privs(true)?;
    // SAFETY: seccomp(2) with a sock_fprog that points at `program`, which
    // outlives the call; the kernel copies the program and reads nothing
    // else. No flags: the filter binds this thread only.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
