"""A small seccomp filter for local sandboxes (defence in depth).

The sandboxed user has no capabilities, so most dangerous system calls fail
anyway; this filter makes them fail *before* the kernel looks further, and
closes the ones an unprivileged process may use to widen the kernel attack
surface: new namespaces (user namespaces in particular), ``ptrace``,
``process_vm_*``, ``mount`` and the new mount API, ``bpf``,
``perf_event_open``, ``userfaultfd``, ``io_uring``, keyrings, kernel modules,
``kexec``. A denied call returns ``EPERM`` (``clone3`` returns ``ENOSYS`` so
that the C library falls back to ``clone``, whose flags the filter checks).
A foreign architecture (e.g. 32-bit calls on x86-64) is killed.

Sockets: a network namespace isolates the Internet families, netlink and
abstract Unix sockets, not every socket family. ``AF_VSOCK`` reaches the
hypervisor or the host through no interface a namespace controls, and most
other families (``AF_ALG``, ``AF_TIPC``, ``AF_RDS``, ``AF_XDP``…) are kernel
attack surface a workspace never needs, some loaded as modules on first use.
``socket`` and ``socketpair`` are therefore allowed for
:data:`ALLOWED_SOCKET_FAMILIES` only (Unix, IPv4, IPv6 and netlink — what
Jupyter, Dask and the C library use) and return ``EAFNOSUPPORT`` for any
other family, as on a kernel built without it.

The program is raw classic BPF, built here without libseccomp, and handed
to bubblewrap with ``--seccomp FD``.
"""

from __future__ import annotations

import errno
import platform
import struct

# BPF opcodes
LD_W_ABS = 0x20
JEQ_K = 0x15
JGE_K = 0x35
JSET_K = 0x45
RET_K = 0x06

RET_ALLOW = 0x7FFF0000
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

CLONE_NS_FLAGS = (
    0x00020000  # NEWNS
    | 0x02000000  # NEWCGROUP
    | 0x04000000  # NEWUTS
    | 0x08000000  # NEWIPC
    | 0x10000000  # NEWUSER
    | 0x20000000  # NEWPID
    | 0x40000000  # NEWNET
    | 0x00000080  # NEWTIME
)

# name -> (x86_64, aarch64); None where the call does not exist
DENIED = {
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "chroot": (161, 51),
    "unshare": (272, 97),
    "setns": (308, 268),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "reboot": (169, 142),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "acct": (163, 89),
    "open_by_handle_at": (304, 265),
    "name_to_handle_at": (303, 264),
    "quotactl": (179, 60),
    "syslog": (103, 116),
    "settimeofday": (164, 170),
    "clock_settime": (227, 112),
    "adjtimex": (159, 171),
    "sethostname": (170, 161),
    "setdomainname": (171, 162),
    "iopl": (172, None),
    "ioperm": (173, None),
    "lookup_dcookie": (212, 18),
    "vhangup": (153, 58),
}
CLONE = {"x86_64": 56, "aarch64": 220}
CLONE3 = 435
SOCKET = {"x86_64": 41, "aarch64": 198}
SOCKETPAIR = {"x86_64": 53, "aarch64": 199}

#: socket families a sandbox may create (family number -> why)
ALLOWED_SOCKET_FAMILIES = {
    1: "AF_UNIX: Jupyter's kernels, Dask's local IPC; abstract names are per network "
       "namespace",
    2: "AF_INET: the workspace server, kernels (ZeroMQ), Dask, the hub API, behind the "
       "sandbox's network namespace and firewall",
    10: "AF_INET6: the same, on IPv6 (loopback)",
    16: "AF_NETLINK: the C library's getaddrinfo and psutil read addresses and routes of "
        "the sandbox's own network namespace",
}


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def build(arch: str | None = None) -> bytes:
    """The filter for ``arch`` (default: this machine) as bytes for bubblewrap."""
    arch = arch or platform.machine()
    if arch not in AUDIT_ARCH:
        raise ValueError(f"no seccomp filter for architecture {arch!r}")
    col = 0 if arch == "x86_64" else 1
    denied = sorted({nrs[col] for nrs in DENIED.values() if nrs[col] is not None})

    # Each entry: (code, jt, jf, k) where jt may name a label further down (BPF jumps
    # forward only); ("label", name) marks the next instruction.
    prog: list[tuple] = []
    prog.append((LD_W_ABS, 0, 0, 4))  # arch
    prog.append((JEQ_K, 1, 0, AUDIT_ARCH[arch]))
    prog.append((RET_K, 0, 0, RET_KILL_PROCESS))
    prog.append((LD_W_ABS, 0, 0, 0))  # syscall number
    if arch == "x86_64":
        prog.append((JGE_K, "eperm", 0, 0x40000000))  # x32 ABI
    prog.append((JEQ_K, "enosys", 0, CLONE3))
    for nr in denied:
        prog.append((JEQ_K, "eperm", 0, nr))
    prog.append((JEQ_K, "clone", 0, CLONE[arch]))
    prog.append((JEQ_K, "socket", 0, SOCKET[arch]))
    prog.append((JEQ_K, "socket", 0, SOCKETPAIR[arch]))
    prog.append((RET_K, 0, 0, RET_ALLOW))
    # clone: no namespace flags
    prog.append(("label", "clone"))
    prog.append((LD_W_ABS, 0, 0, 16))  # low 32 bits of args[0]
    prog.append((JSET_K, "eperm", 0, CLONE_NS_FLAGS))
    prog.append((RET_K, 0, 0, RET_ALLOW))
    # socket, socketpair: the family (args[0], an int) must be on the allow-list
    prog.append(("label", "socket"))
    prog.append((LD_W_ABS, 0, 0, 16))
    for family in sorted(ALLOWED_SOCKET_FAMILIES):
        prog.append((JEQ_K, "socket_ok", 0, family))
    prog.append((RET_K, 0, 0, RET_ERRNO | errno.EAFNOSUPPORT))
    prog.append(("label", "socket_ok"))
    prog.append((RET_K, 0, 0, RET_ALLOW))
    # the shared returns
    prog.append(("label", "eperm"))
    prog.append((RET_K, 0, 0, RET_ERRNO | errno.EPERM))
    prog.append(("label", "enosys"))
    prog.append((RET_K, 0, 0, RET_ERRNO | errno.ENOSYS))

    labels: dict[str, int] = {}
    code: list[tuple] = []
    for ins in prog:
        if ins[0] == "label":
            labels[ins[1]] = len(code)
        else:
            code.append(ins)
    out = b""
    for i, (op, jt, jf, k) in enumerate(code):
        if isinstance(jt, str):
            jt = labels[jt] - i - 1
            if not 0 <= jt <= 255:
                raise ValueError("seccomp program too long for short jumps")
        out += _insn(op, jt, jf, k)
    return out


DOCKER_ARCH = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}


def docker_profile(arch: str | None = None) -> dict:
    """The same filter as a Docker seccomp profile (``security_opt seccomp=<json>``).

    The docker backend gives its containers exactly the local backend's rules, so
    both pass the same isolation suite: the denied calls (``EPERM``), ``clone3``
    (``ENOSYS``), ``clone`` with a namespace flag (``EPERM``), ``socket`` and
    ``socketpair`` of a family outside :data:`ALLOWED_SOCKET_FAMILIES`
    (``EAFNOSUPPORT``). Only the native architecture is listed, so a call of a
    foreign one (32-bit, x32) kills the process, as in :func:`build`.
    """
    arch = arch or platform.machine()
    if arch not in DOCKER_ARCH:
        raise ValueError(f"no seccomp profile for architecture {arch!r}")
    col = 0 if arch == "x86_64" else 1
    rules: list[dict] = [{
        "names": sorted(n for n, nrs in DENIED.items() if nrs[col] is not None),
        "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM,
    }, {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS}]
    for bit in range(32):
        flag = 1 << bit
        if CLONE_NS_FLAGS & flag:
            rules.append({"names": ["clone"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": errno.EPERM,
                          "args": [{"index": 0, "value": flag, "valueTwo": flag,
                                    "op": "SCMP_CMP_MASKED_EQ"}]})
    top = max(ALLOWED_SOCKET_FAMILIES)
    for family in range(top):
        if family not in ALLOWED_SOCKET_FAMILIES:
            rules.append({"names": ["socket", "socketpair"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": errno.EAFNOSUPPORT,
                          "args": [{"index": 0, "value": family, "valueTwo": 0,
                                    "op": "SCMP_CMP_EQ"}]})
    rules.append({"names": ["socket", "socketpair"], "action": "SCMP_ACT_ERRNO",
                  "errnoRet": errno.EAFNOSUPPORT,
                  "args": [{"index": 0, "value": top, "valueTwo": 0, "op": "SCMP_CMP_GT"}]})
    return {"defaultAction": "SCMP_ACT_ALLOW", "architectures": [DOCKER_ARCH[arch]],
            "syscalls": rules}
