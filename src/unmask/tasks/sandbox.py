"""Run untrusted generated code (HumanEval, MBPP) so that nothing it does can hurt the runner.

Each program runs in its own `python -I` process, in a fresh temporary directory as its working
directory, as the leader of a new session (so one kill reaches everything it started), with
stdin/stdout/stderr on /dev/null. Limits: a wall-clock timeout that kills the whole process
group, RLIMIT_CPU / RLIMIT_AS / RLIMIT_FSIZE / RLIMIT_NPROC, a new network namespace when the
kernel permits it, a seccomp filter (no exec, fork, device nodes, FIFOs, links, chroot, mounts,
ptrace, or signals to other processes) and an audit hook in the child (`sandbox_child.py`) that
refuses process creation, signals, sockets, ctypes, tracing, sub-interpreters, and any write,
rename, deletion or metadata change outside the temporary directory, including through directory
descriptors (`dir_fd`) and `..` (root ignores RLIMIT_NPROC, so the hook and the filter are what stop
a fork bomb there). This is a guard against accidents, sloppy model output and programs that game
the verdict, not a security boundary against an attacker who corrupts the interpreter's memory
(hand-made bytecode, for one); run untrusted models in a container as well.

Verdicts: ``passed`` (ran to the end), ``failed`` (raised: a failing assert, a blocked
operation, MemoryError, sys.exit ...), ``timeout`` (wall clock or CPU limit), ``error`` (did not
compile, or the process died without a verdict, e.g. os._exit or a crash).

Where a pass comes from. The program and its tests run in one interpreter (the benchmark defines
them as one script), so nothing that process says or holds can be trusted: a program can walk the
stack, search the garbage collector, enumerate descriptors or write any exit status. The parent
therefore counts a pass only when the file `verdict` in a second temporary directory (outside the
program's) holds the pass line; the child's audit hook lets that file be opened for writing only
while the harness frame that ran the program stands on the line after `exec` returned, which the
program cannot fake (`sandbox_child.py` gives the argument). Everything else the child reports
(failure details on a pipe, the exit status) only explains a failure. As in the official HumanEval
and MBPP harnesses, a pass means "the program, tests included, ran to its end without raising":
a program that redefines `==` on what it returns, or rebinds a builtin the tests call, passes
exactly as it would there; the tests are part of the program and cannot be protected from it.

Executing generated code needs the user's consent: `require_opt_in` is the check.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

CHILD = Path(__file__).resolve().parent / "sandbox_child.py"
ENV_OPT_IN = "UNMASK_ALLOW_CODE_EXECUTION"
OPT_IN_HINT = f"set allow_code_execution=true or {ENV_OPT_IN}=1"
TRUE_VALUES = frozenset({"1", "true", "yes", "on"})
READ_LIMIT = 1 << 16
PASSED = b"passed\n"  # what the child writes to the verdict file, and only from the harness


class CodeExecutionNotAllowed(RuntimeError):
    """Raised when a task would run generated code but the user has not opted in."""


@dataclass(frozen=True)
class ExecResult:
    """The verdict on one program; `passed` is True exactly when `status == "passed"`."""

    passed: bool
    status: str  # "passed" | "failed" | "timeout" | "error"
    detail: str = ""

    @property
    def summary(self) -> str:
        """`status: detail` for a record (the status alone when there is no detail)."""
        return f"{self.status}: {self.detail}" if self.detail else self.status


def opted_in(flag: bool = False) -> bool:
    """True when the flag is set or the environment variable holds a true value."""
    return bool(flag) or os.environ.get(ENV_OPT_IN, "").strip().lower() in TRUE_VALUES


def require_opt_in(flag: bool) -> None:
    """Refuse to go on unless the user allowed executing model-generated code."""
    if not opted_in(flag):
        raise CodeExecutionNotAllowed(
            "this task executes model-generated code on this machine (in a sandboxed subprocess); "
            f"to allow it, {OPT_IN_HINT}"
        )


def _child_env(tmp: str) -> dict[str, str]:
    """A minimal environment: nothing of the runner's (tokens, paths) leaks into the program."""
    env = {"PATH": os.defpath, "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8"}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    return env


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_available(fd: int) -> bytes:
    """What the child wrote to the result pipe, without waiting on stray holders of its write end."""
    os.set_blocking(fd, False)
    chunks = []
    while sum(map(len, chunks)) < READ_LIMIT:
        try:
            chunk = os.read(fd, READ_LIMIT)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _verdict(passed: bool, details: bytes, returncode: int, timed_out: bool) -> ExecResult:
    """The pass comes only from the verdict file; the detail pipe and exit status explain failures."""
    if passed:
        return ExecResult(True, "passed", "")
    reported = None
    for line in details.decode("utf-8", "replace").splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("status") in ("failed", "error"):
            reported = msg  # the last one: the harness writes after the program
    if reported is not None and not timed_out:
        return ExecResult(False, reported["status"], str(reported.get("detail", "")))
    if timed_out:
        return ExecResult(False, "timeout", "wall-clock limit reached")
    if returncode == -signal.SIGXCPU:
        return ExecResult(False, "timeout", "CPU time limit reached")
    if returncode == -signal.SIGKILL:
        return ExecResult(False, "timeout", "killed (CPU time hard limit, or the system ran out of memory)")
    return ExecResult(False, "error", f"the program exited without a verdict (exit code {returncode})")


def _read_verdict(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(PASSED) + 1) == PASSED
    except OSError:
        return False


def run_program(code: str, timeout: float = 10.0, memory_mb: int = 1024, file_mb: int = 16) -> ExecResult:
    """Run `code` as a Python program in the sandbox and judge it (never raises for the program's faults)."""
    if timeout <= 0 or memory_mb <= 0 or file_mb <= 0:
        raise ValueError(f"timeout, memory_mb and file_mb must be positive, got {timeout}, {memory_mb}, {file_mb}")
    tmp = tempfile.mkdtemp(prefix="unmask-sandbox-")
    verdict_dir = tempfile.mkdtemp(prefix="unmask-verdict-")  # outside the program's directory
    verdict = Path(verdict_dir, "verdict")
    read_fd, write_fd = os.pipe()
    proc = None
    timed_out = False
    try:
        Path(tmp, "program.py").write_text(code, encoding="utf-8")
        verdict.touch(mode=0o600)
        cpu_s = math.ceil(timeout) + 1
        limits = (str(cpu_s), str(memory_mb), str(file_mb))
        argv = [sys.executable, "-I", "-B", str(CHILD), str(verdict), str(write_fd), *limits]
        proc = subprocess.Popen(
            argv, cwd=tmp, env=_child_env(tmp), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True, pass_fds=(write_fd,), close_fds=True,
        )
        os.close(write_fd)
        write_fd = -1
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
            proc.wait()
        _kill_group(proc.pid)  # anything the program left behind in its group
        return _verdict(_read_verdict(verdict), _read_available(read_fd), proc.returncode, timed_out)
    finally:
        if proc is not None and proc.returncode is None:
            _kill_group(proc.pid)
            proc.wait()
        for fd in (read_fd, write_fd):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(verdict_dir, ignore_errors=True)
