"""The child side of the sandbox: confine this interpreter, run one program, report a verdict.

Started by `sandbox.run_program` as `python -I -B sandbox_child.py RESULT_FD CPU_S MEMORY_MB FILE_MB`
in a fresh temporary directory holding `program.py` and `.nonce`. It deliberately imports
nothing from unmask (it runs isolated, outside the package's import path).

Order matters: read the nonce and the program, set resource limits, leave the network
namespace, then install an audit hook (which Python code cannot remove) that refuses process
creation, signals, sockets, ctypes, raising limits, and writes, deletions or renames outside
the temporary directory. Only then is the program executed. The verdict line carries the nonce,
which the program never sees, so a program cannot forge a pass by writing to the result pipe.
"""

import json
import os
import resource
import sys
import traceback

CLONE_NEWNET = 0x40000000
DETAIL_CHARS = 1000

# Events refused outright (prefix match for the families ending in ".").
BLOCKED_EVENTS = frozenset({
    "os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.startfile",
    "subprocess.Popen", "os.kill", "os.killpg", "os.link", "os.symlink",
    "resource.setrlimit", "resource.prlimit", "sys.remote_exec", "pty.spawn",
})
BLOCKED_PREFIXES = ("socket.", "ctypes.", "_ctypes.", "winreg.", "msvcrt.")
# Modules whose fresh import is refused: `_posixsubprocess.fork_exec` spawns processes without
# an audit event of its own (the loaded copy is disarmed in `disarm_spawn`).
BLOCKED_IMPORTS = frozenset({"_posixsubprocess", "ctypes", "_ctypes"})
# Events whose path arguments must lie inside the sandbox directory: event -> argument indices.
PATH_EVENTS = {
    "os.remove": (0,), "os.rmdir": (0,), "os.rename": (0, 1), "shutil.rmtree": (0,), "shutil.move": (0, 1),
    "os.truncate": (0,), "os.chmod": (0,), "os.chown": (0,), "os.chflags": (0,), "os.mkdir": (0,),
    "os.utime": (0,), "os.setxattr": (0,), "os.removexattr": (0,), "shutil.chown": (0,),
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


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


def leave_network() -> bool:
    """Move into a new, empty network namespace when permitted (root or CAP_SYS_ADMIN)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.unshare(CLONE_NEWNET) == 0
    except Exception:
        ok = False
    for name in ("ctypes", "_ctypes"):  # not importable (as a fresh copy) by the program
        sys.modules[name] = None
    return ok


def disarm_spawn() -> None:
    """Replace the process-spawning primitive that has no audit event (subprocess imports it later)."""
    import _posixsubprocess

    def fork_exec(*args, **kwargs):
        raise PermissionError("sandbox: starting processes is not allowed")

    _posixsubprocess.fork_exec = fork_exec


def make_hook(root: str):
    """An audit hook confining writes to `root`; it keeps everything it needs in its closure."""
    realpath, join, getcwd, fsdecode, sep = os.path.realpath, os.path.join, os.getcwd, os.fsdecode, os.sep
    blocked, prefixes, path_events, write_flags = BLOCKED_EVENTS, BLOCKED_PREFIXES, dict(PATH_EVENTS), WRITE_FLAGS
    blocked_imports = BLOCKED_IMPORTS
    inside_prefix = root.rstrip(sep) + sep

    def inside(path) -> bool:
        if isinstance(path, int):
            return True  # an already open descriptor
        text = fsdecode(path)
        full = realpath(text if text.startswith(sep) else join(getcwd(), text))
        return full == root or full.startswith(inside_prefix)

    def hook(event: str, args: tuple) -> None:
        if event in blocked or event.startswith(prefixes):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import":
            if args and args[0] in blocked_imports:
                raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
            return
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writes = (isinstance(flags, int) and flags & write_flags) or (
                isinstance(mode, str) and any(c in mode for c in "wax+")
            )
            if writes and path is not None and not inside(path):
                raise PermissionError(f"sandbox: writing {path!r} outside the sandbox directory")
            return
        indices = path_events.get(event)
        if indices is not None:
            for i in indices:
                if i < len(args) and args[i] is not None and not inside(args[i]):
                    raise PermissionError(f"sandbox: {event} on {args[i]!r} outside the sandbox directory")

    return hook


def describe(exc: BaseException, filename: str) -> str:
    """The exception and, when it came from the program, the program line that raised it."""
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    if frames and not isinstance(exc, SyntaxError):
        last = frames[-1]
        text += f" (line {last.lineno}: {(last.line or '').strip()})"
    return text[:DETAIL_CHARS]


def main(argv: list[str]) -> None:
    result_fd, cpu_s, memory_mb, file_mb = (int(a) for a in argv[1:5])
    root = os.path.realpath(os.getcwd())
    with open(".nonce", encoding="ascii") as f:
        nonce = f.read().strip()
    os.remove(".nonce")
    filename = "program.py"
    with open(filename, encoding="utf-8") as f:
        source = f.read()

    def report(status: str, detail: str) -> None:
        line = json.dumps({"nonce": nonce, "status": status, "detail": detail}) + "\n"
        try:
            os.write(result_fd, line.encode("utf-8", "replace"))
        finally:
            os._exit(0)

    try:
        code = compile(source, filename, "exec")
    except (SyntaxError, ValueError) as exc:
        report("error", describe(exc, filename))
        return
    set_limits(cpu_s, memory_mb, file_mb)
    leave_network()
    disarm_spawn()
    sys.addaudithook(make_hook(root))
    namespace = {"__name__": "__main__", "__file__": os.path.join(root, filename), "__builtins__": __builtins__}
    try:
        exec(code, namespace)
    except BaseException as exc:  # noqa: BLE001 - every way a program can stop counts as a failure
        report("failed", describe(exc, filename))
        return
    report("passed", "")


if __name__ == "__main__":
    main(sys.argv)
