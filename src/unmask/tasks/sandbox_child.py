"""The child side of the sandbox: confine this interpreter, run one program, prove that it passed.

Started by `sandbox.run_program` as
`python -I -B sandbox_child.py VERDICT_PATH DETAIL_FD CPU_S MEMORY_MB FILE_MB` in a fresh temporary
directory holding `program.py`. It deliberately imports nothing from unmask (it runs isolated,
outside the package's import path).

Order matters: read and compile the program, set resource limits, leave the network namespace
and install a seccomp filter (both through ctypes, which the program is then denied), then install
an audit hook (which Python code cannot remove) and only then execute the program.

Why the verdict cannot be forged. The program runs in this process, so anything this process holds
(objects, frames, descriptors, memory) is within its reach; no secret kept here is safe. The pass
signal is therefore not something this process knows but something it may do: open VERDICT_PATH
(a file outside the sandbox directory) for writing. The audit hook refuses that to everyone, except
while the frame of `judge` that runs the program stands on its last line, which it reaches only
after `exec` of the whole program (tests included) returned normally. A frame's position cannot be
moved from Python without a trace function (`sys.settrace` is refused) and nothing else the program
can reach writes that file. Failure details travel on DETAIL_FD, which the parent never takes a pass
from. The hook keeps all it needs in its closure as values that cannot be changed (strings, tuples,
frozensets, C functions), because the program can monkeypatch modules, builtins and this module,
and can read (not change) the hook's frame from a signal handler, a finalizer or a traceback; the
garbage collector's object lists, which would reach the hook itself, are refused.

Why writes stay inside. Absolute paths are resolved (symbolic links followed) and must lie inside
the directory. Relative paths are resolved by the kernel against the working directory or a
directory descriptor (`dir_fd`), and the hook keeps both inside: `chdir` may not leave, no
descriptor of an outside directory may be opened, calls that carry `dir_fd` are checked against the
descriptor's real directory (/proc/self/fd), and `..` is refused in any path checked (a rename racing
with the lookup could otherwise lead it out). The program cannot create symbolic or hard links,
FIFOs or device nodes, mount, or chroot (seccomp, and audit events where they exist), and metadata
calls on a descriptor (fchmod, fchown, futimes, fsetxattr) are refused, since a read-only descriptor
of an outside file would do for them. What remains
outside any in-process guard: a program that corrupts the interpreter's memory (hand-made bytecode,
for one) escapes all of this except the seccomp filter and the resource limits.
"""

import json
import os
import resource
import sys
import traceback

CLONE_NEWNET = 0x40000000
DETAIL_CHARS = 1000
PASSED = b"passed\n"

# Events refused outright (prefix match for the families ending in ".").
BLOCKED_EVENTS = frozenset({
    "os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.startfile",
    "subprocess.Popen", "os.kill", "os.killpg", "os.link", "os.symlink", "signal.pthread_kill",
    "resource.setrlimit", "resource.prlimit", "sys.remote_exec", "pty.spawn",
    # a trace function can move a frame to another line (skipping a failing assert)
    "sys.settrace", "sys.setprofile",
    # the garbage collector's object lists reach the audit hook's closure cells, which are writable
    "gc.get_objects", "gc.get_referrers", "gc.get_referents",
    # a sub-interpreter starts without this hook; SQLite writes files (ATTACH) without audit events
    "cpython.PyInterpreterState_New", "sqlite3.connect",
    # on a read-only descriptor of an outside file or terminal: chattr +i, or typing into a shell (TIOCSTI)
    "fcntl.ioctl",
})
BLOCKED_PREFIXES = ("socket.", "ctypes.", "_ctypes.", "winreg.", "msvcrt.")
# Modules whose fresh import is refused: `_posixsubprocess.fork_exec` spawns processes without an
# audit event of its own (the loaded copy is disarmed in `disarm`); the others write files or run
# code outside the hook's view.
BLOCKED_IMPORTS = frozenset({
    "_posixsubprocess", "ctypes", "_ctypes", "_sqlite3", "_dbm", "_gdbm", "readline", "_posixshmem",
    "_xxsubinterpreters", "_xxinterpchannels", "_xxinterpqueues", "_interpreters", "_interpchannels",
})
BLOCKED_IMPORT_PREFIXES = ("_test", "_xx")
# Events that change the file system: event -> ((path index, dir_fd index or -1), ...).
PATH_EVENTS = {
    "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),), "os.rename": ((0, 2), (1, 3)),
    "os.chmod": ((0, 2),), "os.chown": ((0, 3),), "os.utime": ((0, 3),), "os.truncate": ((0, -1),),
    "os.chflags": ((0, -1),), "os.setxattr": ((0, -1),), "os.removexattr": ((0, -1),),
    "shutil.rmtree": ((0, 1),), "shutil.move": ((0, -1), (1, -1)), "shutil.chown": ((0, -1),),
}
# Of those, the ones that may act on an open descriptor: only truncation (writable descriptors all
# lie inside the sandbox); chmod, chown, utime and xattr calls on a read-only descriptor of an
# outside file would change it.
FD_EVENTS = frozenset({"os.truncate"})
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# The seccomp filter, per machine: the AUDIT_ARCH value and syscall numbers by name. Refused with
# EPERM: device nodes and FIFOs, links, chroot, mounts, namespaces, ptrace and reading or writing
# another process's memory, opening files by handle, exec, fork (clone without CLONE_THREAD) and
# process descriptors (pidfd_send_signal has no audit event); kill and friends only reach this
# process; ioctl may not type into a terminal (TIOCSTI) or set inode flags (FS_IOC_SETFLAGS,
# FS_IOC_FSSETXATTR). clone3 answers ENOSYS, so the C library falls back to clone, whose flags can be
# checked.
SECCOMP_TABLES = {
    "x86_64": (0xC000003E, {
        "mknod": 133, "mknodat": 259, "chroot": 161, "link": 86, "linkat": 265, "symlink": 88, "symlinkat": 266,
        "mount": 165, "umount2": 166, "pivot_root": 155, "setns": 308, "unshare": 272, "ptrace": 101,
        "process_vm_readv": 310, "process_vm_writev": 311, "open_by_handle_at": 304, "execve": 59,
        "execveat": 322, "fork": 57, "vfork": 58, "pidfd_open": 434, "pidfd_send_signal": 424,
        "pidfd_getfd": 438, "kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129,
        "rt_tgsigqueueinfo": 297, "clone": 56, "clone3": 435, "ioctl": 16,
    }),
    "aarch64": (0xC00000B7, {
        "mknodat": 33, "chroot": 51, "linkat": 37, "symlinkat": 36, "mount": 40, "umount2": 39, "pivot_root": 41,
        "setns": 268, "unshare": 97, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
        "open_by_handle_at": 265, "execve": 221, "execveat": 281, "pidfd_open": 434, "pidfd_send_signal": 424,
        "pidfd_getfd": 438, "kill": 129, "tkill": 130, "tgkill": 131, "rt_sigqueueinfo": 138,
        "rt_tgsigqueueinfo": 240, "clone": 220, "clone3": 435, "ioctl": 29,
    }),
}
OWN_PROCESS_ONLY = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
CLONE_THREAD = 0x00010000
REFUSED_IOCTLS = (0x5412, 0x40086602, 0x401C5820)  # TIOCSTI, FS_IOC_SETFLAGS, FS_IOC_FSSETXATTR


def set_limits(cpu_s: int, memory_mb: int, file_mb: int) -> None:
    """Hard limits equal to soft ones, so the program cannot raise them (and the hook stops root)."""
    for limit, value in (
        (resource.RLIMIT_CPU, cpu_s),
        (resource.RLIMIT_AS, memory_mb * 1024 * 1024),
        (resource.RLIMIT_FSIZE, file_mb * 1024 * 1024),
        (resource.RLIMIT_NPROC, 0),  # ignored for root; the audit hook covers that case
        (resource.RLIMIT_CORE, 0),
    ):
        try:
            resource.setrlimit(limit, (value, value))
        except (ValueError, OSError):
            pass


def seccomp_filter(machine: str, pid: int) -> bytes | None:
    """The classic-BPF program described at SECCOMP_TABLES (None on a machine without a table)."""
    import struct

    if machine not in SECCOMP_TABLES:
        return None
    arch, numbers = SECCOMP_TABLES[machine]
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    # (code, jump-if-true label, jump-if-false label, k); labels name the instructions below.
    program = [(ld, None, None, 4), (jeq, None, "deny", arch), (ld, None, None, 0), (jge, "deny", None, 0x40000000)]
    for name, number in numbers.items():
        if name == "clone":
            program.append((jeq, "clone", None, number))
        elif name == "clone3":
            program.append((jeq, "enosys", None, number))
        elif name == "ioctl":
            program.append((jeq, "ioctl", None, number))
        elif name in OWN_PROCESS_ONLY:
            program.append((jeq, "own", None, number))
        else:
            program.append((jeq, "deny", None, number))
    program.append((ret, None, None, allow))
    labels = {}
    for label, tail in (  # BPF jumps only forward
        ("own", [(ld, None, None, 16), (jeq, "allow", "deny", pid)]),  # the low word of the first argument
        ("clone", [(ld, None, None, 16), (jset, "allow", "deny", CLONE_THREAD)]),
        ("ioctl", [(ld, None, None, 24)]  # the low word of the second argument, the request
         + [(jeq, "deny", None, request) for request in REFUSED_IOCTLS] + [(ret, None, None, allow)]),
        ("enosys", [(ret, None, None, enosys)]),
        ("allow", [(ret, None, None, allow)]),
        ("deny", [(ret, None, None, eperm)]),
    ):
        labels[label] = len(program)
        program += tail

    def offset(label, at: int) -> int:
        return 0 if label is None else labels[label] - (at + 1)

    return b"".join(
        struct.pack("HBBI", code, offset(jt, at), offset(jf, at), k) for at, (code, jt, jf, k) in enumerate(program)
    )


def confine_with_ctypes() -> None:
    """Leave the network (when permitted) and install the seccomp filter; then deny ctypes."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.unshare(CLONE_NEWNET)  # needs root or CAP_SYS_ADMIN; the hook blocks sockets anyway
        bpf = seccomp_filter(os.uname().machine, os.getpid())
        if bpf is not None:
            class SockFprog(ctypes.Structure):
                _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

            buf = ctypes.create_string_buffer(bpf, len(bpf))
            prog = SockFprog(len(bpf) // 8, ctypes.cast(buf, ctypes.c_void_p))
            ulong = ctypes.c_ulong
            libc.prctl.argtypes = [ctypes.c_int, ulong, ulong, ulong, ulong]
            libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: lets a non-root process install a filter
            libc.prctl(22, 2, ctypes.addressof(prog), 0, 0)  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
    except Exception:
        pass  # the audit hook and the replaced functions below still refuse most of it
    for name in ("ctypes", "_ctypes"):  # not importable (as a fresh copy) by the program
        sys.modules[name] = None


def disarm() -> None:
    """Replace primitives that have no audit event: the process-spawning one (subprocess imports it
    later) and the file-system calls the seccomp filter also refuses (for a clearer message)."""
    import _posixsubprocess
    import posix

    def refuse(name):
        def refused(*args, **kwargs):
            raise PermissionError(f"sandbox: {name} is not allowed")

        return refused

    _posixsubprocess.fork_exec = refuse("starting processes")
    for name in ("mkfifo", "mknod", "chroot"):
        for module in (os, posix):
            if hasattr(module, name):
                setattr(module, name, refuse(f"os.{name}"))


def make_hook(root: str, verdict: str, judge_frame, last_line: int):
    """The audit hook: confines writes to `root` and guards the pass signal (see the module docstring).

    Everything it uses is bound here, as C functions or immutable values: global names would be
    looked up in this module's and the builtins' dictionaries, which the program can rewrite. Its
    own locals are immutable too, and it calls no code of the program's (no methods of the
    program's objects), because a signal handler or a finalizer that runs while it decides can read
    its frame's locals.
    """
    import _stat
    import posix

    lstat, stat, readlink = posix.lstat, posix.stat, posix.readlink
    is_link, is_dir = _stat.S_ISLNK, _stat.S_ISDIR
    encode, decode, split, rfind, startswith = str.encode, bytes.decode, str.split, str.rfind, str.startswith
    str_t, bytes_t, int_t, type_, issubclass_, len_, denied = str, bytes, int, type, issubclass, len, PermissionError
    as_int, repr_, tuple_ = int.__index__, repr, tuple
    blocked, prefixes = BLOCKED_EVENTS, BLOCKED_PREFIXES
    blocked_imports, blocked_import_prefixes = BLOCKED_IMPORTS, BLOCKED_IMPORT_PREFIXES
    path_names = frozenset(PATH_EVENTS)
    path_events = tuple(PATH_EVENTS.items())
    fd_events, write_flags = FD_EVENTS, WRITE_FLAGS
    inside_prefix = root.rstrip("/") + "/"
    os_error = OSError

    def hook(event: str, args: tuple) -> None:
        if event in blocked or startswith(event, prefixes):
            raise denied(f"sandbox: {event} is not allowed")
        if event == "import":
            name = args[0] if len_(args) and type_(args[0]) is str_t else ""
            if name in blocked_imports or startswith(name, blocked_import_prefixes):
                raise denied(f"sandbox: importing {name} is not allowed")
            return
        if event == "open":
            if len_(args) < 3:
                return
            path, mode, flags = args[0], args[1], args[2]
            if path is None or issubclass_(type_(path), int_t):
                return  # an already open descriptor
            writes = (issubclass_(type_(flags), int_t) and as_int(flags) & write_flags) or (
                type_(mode) is str_t and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)
            )
            directory_read = mode is None and not writes  # os.open: could yield a dir_fd
            if not writes and not directory_read:
                return
            checks = ((path, -1, True),)
        elif event == "os.chdir":
            # Moving out would let a relative name be checked against one directory and used in another.
            checks = ((args[0] if len_(args) else None, -1, False),)
            writes = directory_read = False
        elif event in path_names:
            checks = ()
            for name, layout in path_events:
                if name == event:
                    checks = tuple_(
                        (args[i] if i < len_(args) else None, args[d] if 0 <= d < len_(args) else -1, False)
                        for i, d in layout
                    )
            writes, directory_read = True, False
        else:
            return
        for path, dir_fd, via_open in checks:
            if path is None:
                continue
            kind = type_(path)
            if issubclass_(kind, int_t):
                if event in fd_events:
                    continue
                if event != "os.chdir":
                    raise denied(f"sandbox: {event} on a file descriptor is not allowed")
                text = readlink(f"/proc/self/fd/{as_int(path)}")  # fchdir: the descriptor's directory
            elif issubclass_(kind, str_t):
                text = decode(encode(path, "utf-8", "surrogateescape"), "utf-8", "surrogateescape")
            elif issubclass_(kind, bytes_t):
                text = decode(path, "utf-8", "surrogateescape")
            else:
                raise denied(f"sandbox: {event} with a path of type {kind.__name__} is not allowed")
            parts = tuple_(split(text, "/"))
            if ".." in parts:
                # A rename racing with the lookup could make "a/b/../.." leave the directory it checked
                # (and so hand out a descriptor of an outside directory).
                raise denied(f"sandbox: '..' in the path of {event} is not allowed: {repr_(text)}")
            if not startswith(text, "/"):
                # Relative: below the working directory or below dir_fd's directory, both inside the
                # sandbox (chdir and directory descriptors never leave it), unless dir_fd says otherwise.
                if dir_fd is None or not issubclass_(type_(dir_fd), int_t) or as_int(dir_fd) < 0:
                    continue
                base = readlink(f"/proc/self/fd/{as_int(dir_fd)}")
                if base != root and not startswith(base, inside_prefix):
                    raise denied(f"sandbox: {event} relative to a directory outside the sandbox")
                continue
            # Absolute: resolve symbolic links, component by component, in immutable values only
            # (a signal handler or finalizer can reach this frame's locals while it runs).
            resolved, pending, hops = "", tuple_(p for p in parts if p and p != "."), 0
            while pending:
                part, pending = pending[0], pending[1:]
                if part == "..":  # from a symbolic link's target
                    resolved = resolved[: rfind(resolved, "/")] if resolved else ""
                    continue
                candidate = resolved + "/" + part
                try:
                    link = is_link(lstat(candidate).st_mode)
                except os_error:
                    link = False
                if not link:
                    resolved = candidate
                    continue
                hops += 1
                if hops > 40:
                    raise denied(f"sandbox: too many symbolic links in {repr_(text)}")
                target = readlink(candidate)
                if startswith(target, "/"):
                    resolved = ""
                pending = tuple_(p for p in split(target, "/") if p and p != ".") + pending
            full = resolved or "/"
            if full == root or startswith(full, inside_prefix):
                continue
            if directory_read:
                try:
                    outside_directory = is_dir(stat(full).st_mode)
                except os_error:
                    outside_directory = False
                if outside_directory:
                    raise denied(f"sandbox: opening the directory {repr_(text)} outside the sandbox is not allowed")
                continue
            if via_open and full == verdict and judge_frame.f_lineno == last_line:
                continue  # the harness, after the program ran to its end
            if event == "os.chdir":
                raise denied(f"sandbox: os.chdir to {repr_(text)} outside the sandbox is not allowed")
            raise denied(f"sandbox: {event} on {repr_(text)} outside the sandbox directory")

    return hook


def describe(exc: BaseException, filename: str) -> str:
    """The exception and, when it came from the program, the program line that raised it."""
    try:
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
        if frames and not isinstance(exc, SyntaxError):
            last = frames[-1]
            text += f" (line {last.lineno}: {(last.line or '').strip()})"
    except BaseException:  # noqa: BLE001 - the program's exception may not even print
        text = "the program raised an exception that cannot be described"
    return text[:DETAIL_CHARS]


def detail_line(status: str, detail: str) -> bytes:
    """One line for the detail pipe: why the program did not pass (the parent never takes a pass from it)."""
    return (json.dumps({"status": status, "detail": detail}) + "\n").encode("utf-8", "replace")


def judge(code, namespace: dict, root: str, verdict: str, detail_fd: int, filename: str) -> None:
    """Install the hook, run the program, and on a normal return open `verdict` from the last line."""
    import posix

    open_, write, exit_, wronly, passed, size = posix.open, posix.write, posix._exit, os.O_WRONLY, PASSED, len(PASSED)
    plain_failure = detail_line("failed", "the program raised, and broke what describes the exception")
    last_line = max(line for _, _, line in judge.__code__.co_lines() if line is not None)
    sys.addaudithook(make_hook(root, os.path.realpath(verdict), sys._getframe(), last_line))
    try:
        exec(code, namespace)
    except BaseException as exc:  # noqa: BLE001 - every way a program can stop counts as a failure
        try:  # the program may have rebound builtins or this module's names that describing uses
            line = detail_line("failed", describe(exc, filename))
        except BaseException:  # noqa: BLE001
            line = plain_failure
        try:
            write(detail_fd, line)
        finally:
            exit_(1)  # now, before the program's threads or atexit handlers get another turn
    exit_(write(open_(verdict, wronly), passed) - size)  # the last line: see make_hook


def main(argv: list[str]) -> None:
    verdict, detail_fd = argv[1], int(argv[2])
    cpu_s, memory_mb, file_mb = (int(a) for a in argv[3:6])
    root = os.path.realpath(os.getcwd())
    filename = "program.py"
    with open(filename, encoding="utf-8") as f:
        source = f.read()
    try:
        code = compile(source, filename, "exec")
    except (SyntaxError, ValueError) as exc:
        os.write(detail_fd, detail_line("error", describe(exc, filename)))
        os._exit(1)
    set_limits(cpu_s, memory_mb, file_mb)
    confine_with_ctypes()
    disarm()
    namespace = {"__name__": "__main__", "__file__": os.path.join(root, filename), "__builtins__": __builtins__}
    judge(code, namespace, root, verdict, detail_fd, filename)
    os._exit(1)


if __name__ == "__main__":
    main(sys.argv)
