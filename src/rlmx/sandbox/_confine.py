"""Kernel confinement the isolated worker applies to itself before running model code.

Layers, each optional so the worker takes the strongest set the machine offers:

* rlimits — address space, CPU seconds, open files, file size, processes, no core dumps;
* Landlock (ctypes, syscalls 444-446) — read-only access to the interpreter's paths,
  read-write to the scratch directory only, no TCP bind/connect (ABI >= 4), no signals
  or abstract Unix sockets out of the domain (ABI >= 6);
* seccomp (libseccomp, through ctypes) — no new sockets, no exec or fork (threads
  are allowed), no ptrace, mount, namespaces, bpf, io_uring, keyrings, module loading...

The namespaces layer (bubblewrap) is applied from outside, by the host; see
``rlmx.sandbox._spawn``. This module is imported by the worker: standard library only
(libseccomp is loaded through ctypes).
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "SECCOMP_DENIED",
    "apply_landlock",
    "apply_rlimits",
    "apply_seccomp",
    "drop_capabilities",
    "landlock_abi",
    "seccomp_unavailable_reason",
    "set_no_new_privs",
]

# ------------------------------------------------------------------ rlimits

_RLIMITS = {
    "memory_bytes": "RLIMIT_AS",
    "cpu_seconds": "RLIMIT_CPU",
    "open_files": "RLIMIT_NOFILE",
    "file_bytes": "RLIMIT_FSIZE",
    "processes": "RLIMIT_NPROC",
    "core_bytes": "RLIMIT_CORE",
}


def apply_rlimits(limits: dict[str, int]) -> list[str]:
    """Lower soft and hard limits (they cannot be raised again); returns what was set."""
    applied: list[str] = []
    for key, value in limits.items():
        name = _RLIMITS.get(key)
        if name is None or not hasattr(resource, name):
            continue
        which = getattr(resource, name)
        _soft, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))
        applied.append(key)
    return applied


# ------------------------------------------------------------------ no_new_privs

_PR_SET_NO_NEW_PRIVS = 38


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def set_no_new_privs() -> None:
    """Required by Landlock and seccomp; also stops setuid binaries from gaining anything."""
    if _libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")


# ------------------------------------------------------------------ capabilities


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def drop_capabilities() -> bool:
    """Give up every capability (a worker started as root keeps its uid, not its powers).

    Returns whether any capability was held. Without CAP_DAC_OVERRIDE, CAP_SYS_RESOURCE
    and friends, root in the worker is an ordinary user of root-owned files.
    """
    libc = _libc()
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    current = (_CapData * 2)()
    if libc.capget(ctypes.byref(header), current) != 0:
        return False
    held = any(c.effective or c.permitted for c in current)
    if held and libc.capset(ctypes.byref(header), (_CapData * 2)()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")
    return held


# ------------------------------------------------------------------ Landlock

# The same numbers on every architecture (the syscalls are newer than the split tables).
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

_FS_EXECUTE = 1 << 0
_FS_WRITE_FILE = 1 << 1
_FS_READ_FILE = 1 << 2
_FS_READ_DIR = 1 << 3
_FS_TRUNCATE = 1 << 14
_FS_IOCTL_DEV = 1 << 15
_FILE_ONLY_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_READ_ONLY = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR

_NET_BIND_TCP = 1 << 0
_NET_CONNECT_TCP = 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
_SCOPE_SIGNAL = 1 << 1


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _syscall(number: int, *args: Any) -> int:
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    return int(libc.syscall(ctypes.c_long(number), *args))


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is missing or disabled."""
    if not sys.platform.startswith("linux"):
        return 0
    version = _syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    return max(version, 0)


def _fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1  # EXECUTE .. MAKE_SYM: ABI 1
    if abi >= 2:
        rights |= 1 << 13  # REFER
    if abi >= 3:
        rights |= _FS_TRUNCATE
    if abi >= 5:
        rights |= _FS_IOCTL_DEV
    return rights


def apply_landlock(read_only: Iterable[str], read_write: Iterable[str]) -> dict[str, Any]:
    """Restrict this process (and its threads' future children) to the given paths.

    Paths that do not exist are skipped. Returns what was enforced, for the report.
    """
    abi = landlock_abi()
    if abi < 1:
        raise OSError(errno.ENOSYS, "Landlock is not available in this kernel")
    fs = _fs_rights(abi)
    attr = _RulesetAttr(handled_access_fs=fs)
    size = 8
    if abi >= 4:
        attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP
        size = 16
    if abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
        size = 24
    ruleset = _syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0)
    if ruleset < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"landlock_create_ruleset: {os.strerror(err)}")
    try:
        for paths, rights in ((read_only, _READ_ONLY), (read_write, fs)):
            for path in paths:
                _add_path_rule(ruleset, path, rights & fs)
        set_no_new_privs()
        if _syscall(_SYS_RESTRICT_SELF, ruleset, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"landlock_restrict_self: {os.strerror(err)}")
    finally:
        os.close(ruleset)
    return {"abi": abi, "network": abi >= 4, "scoped_signals": abi >= 6}


def _add_path_rule(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if not Path(path).is_dir():
            rights &= _FILE_ONLY_RIGHTS
        rule = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
        if _syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"landlock_add_rule({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


# ------------------------------------------------------------------ seccomp

SECCOMP_DENIED = (
    # new sockets and the server side of any inherited one
    "socket", "socketpair", "bind", "listen", "accept", "accept4", "connect",
    # new programs and processes (clone without CLONE_THREAD is handled separately)
    "execve", "execveat", "fork", "vfork",
    # other processes' memory and handles
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    "pidfd_open", "pidfd_getfd", "pidfd_send_signal", "tkill",
    # filesystems and namespaces
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "unshare", "setns",
    "open_by_handle_at", "name_to_handle_at", "mknod", "mknodat", "quotactl",
    # kernel attack surface an interpreter never needs
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "keyctl", "add_key", "request_key", "kexec_load",
    "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "acct", "syslog", "lookup_dcookie", "iopl", "ioperm",
    "vhangup", "personality", "mbind", "migrate_pages", "move_pages",
    # open flags and modes live in memory there, out of a filter's reach (glibc falls back)
    "openat2",
    # the machine's clock and names
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname",
    "setdomainname",
    # limits stay as set (setrlimit; prlimit64 is denied below when it would set one)
    "setrlimit",
    # identities
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups",
    "setfsuid", "setfsgid", "capset",
)  # fmt: skip

_CLONE_THREAD = 0x00010000
_MODE_ARGS = (
    ("chmod", 1),
    ("fchmod", 1),
    ("fchmodat", 2),
    ("fchmodat2", 2),
    ("open", 2),
    ("openat", 3),
    ("creat", 1),
    ("mknod", 1),
    ("mknodat", 2),
)
_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_CMP_NE = 1
_SCMP_CMP_MASKED_EQ = 7


def _scmp_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def _libseccomp() -> ctypes.CDLL:
    """libseccomp by its soname: no ``find_library`` (it forks ``ldconfig``), no wrapper."""
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_load.restype = ctypes.c_int
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.restype = None
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_attr_set.restype = ctypes.c_int
    return lib


def seccomp_unavailable_reason() -> str | None:
    """Why seccomp cannot be used here, or ``None`` when it can."""
    if not sys.platform.startswith("linux"):
        return "seccomp is Linux-only"
    try:
        _libseccomp()
    except OSError as exc:
        return f"libseccomp could not be loaded ({exc}); install libseccomp2"
    return None


# Path-based metadata changes. Landlock does not cover them, so without a mount
# namespace (host files read-only) they are denied outright; fd-based ones (fchmod,
# fsetxattr) need a file Landlock let the worker open.
METADATA_BY_PATH = (
    "chmod", "fchmodat", "fchmodat2", "chown", "lchown", "fchownat", "utime", "utimes",
    "futimesat", "utimensat", "setxattr", "lsetxattr", "removexattr", "lremovexattr",
)  # fmt: skip
_SCMP_FLTATR_ACT_BADARCH = 1
_SCMP_ACT_KILL_PROCESS = 0x80000000


def apply_seccomp(*, deny_metadata_by_path: bool = False) -> dict[str, Any]:
    """Install the filter: listed syscalls fail with EPERM; the rest is allowed.

    A deny list rather than an allow list: CPython and the extension modules a model may
    import make a wide, version-dependent set of harmless calls. Calls from another
    architecture's ABI (x32, i386 on x86_64) kill the process (libseccomp's default).
    """
    lib = _libseccomp()
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        raise OSError(errno.ENOMEM, "seccomp_init failed")
    deny = _scmp_errno(errno.EPERM)
    pid = os.getpid()

    def rule(action: int, name: str, *conditions: tuple[int, int, int, int]) -> bool:
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0:
            return False  # not a syscall on this architecture
        args = (_ArgCmp * max(1, len(conditions)))(*(_ArgCmp(*c) for c in conditions))
        status = lib.seccomp_rule_add_array(ctx, action, number, len(conditions), args)
        if status < 0:
            raise OSError(-status, f"seccomp rule for {name}: {os.strerror(-status)}")
        return True

    try:
        # A call through a foreign ABI (x32, int 0x80) ends the whole process, not a thread.
        lib.seccomp_attr_set(ctx, _SCMP_FLTATR_ACT_BADARCH, _SCMP_ACT_KILL_PROCESS)
        names = SECCOMP_DENIED + (METADATA_BY_PATH if deny_metadata_by_path else ())
        denied = [name for name in names if rule(deny, name)]
        # Threads yes, processes no. glibc tries clone3 first and falls back to clone on
        # ENOSYS; clone3's flags live in memory, out of a filter's reach.
        rule(deny, "clone", (0, _SCMP_CMP_MASKED_EQ, _CLONE_THREAD, 0))
        rule(_scmp_errno(errno.ENOSYS), "clone3")
        # No setuid/setgid files: scratch is on the host's filesystem, where such a file
        # would run with the host user's identity. (mode argument index per syscall)
        for name, mode_arg in _MODE_ARGS:
            for bits in (0o4000, 0o2000, 0o6000):
                rule(deny, name, (mode_arg, _SCMP_CMP_MASKED_EQ, 0o6000, bits))
        # prlimit64(pid, resource, new, old): reading a limit is fine, setting one is not.
        rule(deny, "prlimit64", (2, _SCMP_CMP_NE, 0, 0))
        # Signals only to this process itself (not to its group, not to pid -1).
        for name in ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
            rule(deny, name, (0, _SCMP_CMP_NE, pid, 0))
        set_no_new_privs()
        status = lib.seccomp_load(ctx)
        if status < 0:
            raise OSError(-status, f"seccomp_load: {os.strerror(-status)}")
    finally:
        lib.seccomp_release(ctx)
    conditional = ["clone", "clone3", "chmod/open with setuid bits", "prlimit64", "kill"]
    return {"denied": len(denied), "conditional": conditional}
