/* A syscall probe for the seccomp tests: each probe runs in a forked child
 * (so a call that succeeds changes nothing of the probe itself, and a
 * killing action kills only that child) and one line is printed per probe:
 *   NAME=ok        the call returned without error
 *   NAME=E<errno>  it failed with errno (EPERM = 1 is the default profile's)
 *   NAME=S<sig>    the child died of a signal (SIGSYS = 31: a kill action)
 * Arguments are chosen so that a call let through by seccomp fails
 * harmlessly (bad clock id, bad fd, bad reboot magic) or does nothing
 * outside the container (never run it on the host: it is meant for a
 * container whose seccomp and capabilities are under test). */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

static long r_getpid(void) { return syscall(SYS_getpid); }
static long r_openat(void) { return syscall(SYS_openat, AT_FDCWD, "/", O_RDONLY); }
static long r_uname(void) { struct utsname u; return syscall(SYS_uname, &u); }
static long r_personality_linux(void) { return syscall(SYS_personality, 0x0UL); }
static long r_personality_query(void) { return syscall(SYS_personality, 0xffffffffUL); }
static long r_personality_odd(void) { return syscall(SYS_personality, 0x6UL); /* PER_BSD */ }
static long r_keyctl(void) { return syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 0); }
static long r_add_key(void) { return syscall(SYS_add_key, "user", "probe", "x", 1, -2 /* process */); }
static long r_unshare_user(void) { return syscall(SYS_unshare, CLONE_NEWUSER); }
static long r_unshare_mnt(void) { return syscall(SYS_unshare, CLONE_NEWNS); }
static long r_setns(void) { return syscall(SYS_setns, -1, 0); }
static long r_mount(void) { return syscall(SYS_mount, "none", "/nonexistent-probe-target", "tmpfs", 0UL, NULL); }
static long r_reboot(void) { return syscall(SYS_reboot, 0, 0, 0, NULL); /* bad magic */ }
static long r_swapon(void) { return syscall(SYS_swapon, "/nonexistent", 0); }
static long r_clock_settime(void) {
    struct timespec ts = {0, 0};
    return syscall(SYS_clock_settime, 12345 /* no such clock */, &ts);
}
static long r_ptrace(void) { return syscall(SYS_ptrace, 0 /* TRACEME */, 0, 0, 0); }
static long r_vsock(void) { return syscall(SYS_socket, AF_VSOCK, SOCK_STREAM, 0); }
static long r_inet(void) { return syscall(SYS_socket, AF_INET, SOCK_DGRAM, 0); }
static long spawn(unsigned long flags) {
    long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid((pid_t)pid, NULL, 0);
    return pid < 0 ? -1 : 0;
}
static long r_clone(void) { return spawn(0); }
static long r_clone_newuser(void) { return spawn(CLONE_NEWUSER); }
static long r_clone_newns(void) { return spawn(CLONE_NEWNS); }
static long r_clone3(void) {
    uint64_t args[11];
    memset(args, 0, sizeof args);
    args[4] = SIGCHLD; /* exit_signal */
    long pid = syscall(435 /* clone3 */, args, sizeof args);
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid((pid_t)pid, NULL, 0);
    return pid < 0 ? -1 : 0;
}

struct probe { const char *name; long (*call)(void); };
static const struct probe probes[] = {
    {"getpid", r_getpid}, {"openat", r_openat}, {"uname", r_uname},
    {"personality_linux", r_personality_linux}, {"personality_query", r_personality_query},
    {"personality_odd", r_personality_odd}, {"keyctl", r_keyctl}, {"add_key", r_add_key},
    {"unshare_user", r_unshare_user}, {"unshare_mnt", r_unshare_mnt}, {"setns", r_setns},
    {"mount", r_mount}, {"reboot", r_reboot}, {"swapon", r_swapon},
    {"clock_settime", r_clock_settime}, {"ptrace", r_ptrace}, {"socket_vsock", r_vsock},
    {"socket_inet", r_inet}, {"clone", r_clone}, {"clone_newuser", r_clone_newuser},
    {"clone_newns", r_clone_newns}, {"clone3", r_clone3},
};

int main(void) {
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            long r = probes[i].call();
            _exit(r < 0 ? (errno & 0xff ? errno & 0xff : 255) : 0);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        if (WIFSIGNALED(st))
            printf("%s=S%d\n", probes[i].name, WTERMSIG(st));
        else if (WEXITSTATUS(st) == 0)
            printf("%s=ok\n", probes[i].name);
        else
            printf("%s=E%d\n", probes[i].name, WEXITSTATUS(st));
    }
    return 0;
}
