"""The sandbox: honest programs get the right verdict, hostile ones fail cleanly and quickly, and
neither the runner process nor files outside the sandbox are touched."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from unmask.tasks.sandbox import ENV_OPT_IN, CodeExecutionNotAllowed, ExecResult, opted_in, require_opt_in, run_program

SHORT = 2.0  # seconds: every hostile program below must be settled well within this


def run(code: str, timeout: float = SHORT, **kwargs) -> tuple[ExecResult, float]:
    start = time.monotonic()
    result = run_program(code, timeout=timeout, **kwargs)
    return result, time.monotonic() - start


def test_passing_program():
    result, _ = run("def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\nprint('noise on stdout')\n")
    assert result == ExecResult(True, "passed", "")


def test_failing_assert_names_the_line():
    result, _ = run("x = 3\nassert x == 4, 'x is wrong'\n")
    assert not result.passed and result.status == "failed"
    assert "AssertionError: x is wrong" in result.detail and "line 2" in result.detail


def test_syntax_error():
    result, _ = run("def f(:\n    pass\n")
    assert not result.passed and result.status == "error"
    assert "SyntaxError" in result.detail


def test_infinite_loop_times_out_quickly():
    result, elapsed = run("while True:\n    pass\n", timeout=1.0)
    assert result.status == "timeout" and not result.passed
    assert elapsed < 2.5


def test_sleeping_program_times_out():
    result, elapsed = run("import time\ntime.sleep(60)\n", timeout=1.0)
    assert result.status == "timeout" and elapsed < 2.5


@pytest.mark.parametrize(
    "code",
    [
        "import os\nwhile True:\n    os.fork()\n",
        "import subprocess\nwhile True:\n    subprocess.Popen(['sleep', '100'])\n",
        "import multiprocessing\nps = [multiprocessing.Process(target=print) for _ in range(100)]\n[p.start() for p in ps]\n",
        # the spawn primitive without an audit event of its own, called directly
        "import _posixsubprocess, os\nr, w = os.pipe()\n"
        "_posixsubprocess.fork_exec([b'/bin/sleep', b'100'], [b'/bin/sleep'], True, (w,), None, None, -1, -1, -1, -1, -1,"
        " -1, r, w, False, False, -1, None, None, None, -1, None, False)\n",
    ],
    ids=["os.fork", "subprocess", "multiprocessing", "_posixsubprocess"],
)
def test_fork_bombs_fail_fast(code):
    result, elapsed = run(code)
    assert not result.passed and result.status == "failed"
    assert "not allowed" in result.detail
    assert elapsed < SHORT


def test_huge_allocation_fails():
    result, elapsed = run("x = bytearray(10 ** 12)\n", memory_mb=512)
    assert result.status == "failed" and "MemoryError" in result.detail
    result, _ = run("chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 2 ** 20))\n", memory_mb=256)
    assert result.status == "failed" and "MemoryError" in result.detail


def test_os_system_is_refused(tmp_path):
    marker = tmp_path / "marker"
    result, _ = run(f"import os\nos.system('touch {marker}')\nassert os.path.exists({str(marker)!r})\n")
    assert not result.passed and "os.system is not allowed" in result.detail
    assert not marker.exists()


@pytest.mark.parametrize(
    "attack",
    [
        "import os\nos.remove(CANARY)",
        "import os\nos.unlink(CANARY)",
        "import pathlib\npathlib.Path(CANARY).unlink()",
        "import shutil\nshutil.rmtree(os.path.dirname(CANARY))",
        "import os\nos.rename(CANARY, CANARY + '.moved')",
        "open(CANARY, 'w').write('overwritten')",
        "import os\nos.truncate(CANARY, 0)",
        "import os\nos.link(CANARY, 'here')\nopen('here', 'w').write('overwritten')",
        "import os\nos.symlink(CANARY, 'here')\nopen('here', 'w').write('overwritten')",
        "import os\nos.chmod(CANARY, 0)",
    ],
)
def test_files_outside_the_sandbox_survive(tmp_path, attack):
    canary = tmp_path / "canary.txt"
    canary.write_text("alive")
    result, _ = run(f"import os\nCANARY = {str(canary)!r}\n{attack}\n")
    assert not result.passed and result.status == "failed"
    assert canary.read_text() == "alive"
    assert os.access(canary, os.R_OK | os.W_OK)


def test_network_connect_is_refused():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.3)
    port = server.getsockname()[1]
    try:
        code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\ns.sendall(b'hi')\n"
        result, _ = run(code)
        assert not result.passed and "not allowed" in result.detail
        with pytest.raises(socket.timeout):
            server.accept()  # nothing ever connected
    finally:
        server.close()


def _can_unshare_network() -> bool:
    probe = "import ctypes, sys\nsys.exit(0 if ctypes.CDLL(None, use_errno=True).unshare(0x40000000) == 0 else 1)"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def test_program_runs_in_its_own_network_namespace():
    if not _can_unshare_network():
        pytest.skip("this machine does not permit new network namespaces (the audit hook still blocks sockets)")
    ours = os.readlink("/proc/self/ns/net")
    result, _ = run(f"import os\nassert os.readlink('/proc/self/ns/net') != {ours!r}\n")
    assert result.passed, result.detail


def test_runner_is_unharmed(tmp_path, monkeypatch):
    root = tmp_path / "tmproot"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    cwd, env = os.getcwd(), dict(os.environ)
    kill, _ = run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n")
    killpg, _ = run("import os, signal\nos.killpg(os.getpgid(os.getppid()), signal.SIGKILL)\n")
    assert kill.status == killpg.status == "failed"
    rlimit, _ = run("import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))\n")
    assert rlimit.status == "failed"
    # The program works in its own temporary directory, which is removed afterwards.
    local, _ = run("open('scratch.txt', 'w').write('x' * 100)\nimport os\nos.remove('scratch.txt')\nassert os.getcwd() != " + repr(cwd))
    assert local.passed, local.detail
    looping, _ = run("open('big.txt', 'w').write('x')\nwhile True:\n    pass\n", timeout=0.5)
    assert looping.status == "timeout"
    assert os.getcwd() == cwd and dict(os.environ) == env
    assert list(root.iterdir()) == []  # every temporary directory removed, the timed-out one too
    assert run("assert True")[0].passed  # still working


def test_program_cannot_forge_a_pass():
    # Writes fake verdicts to every descriptor it can find, then exits before failing.
    code = (
        "import json, os\n"
        "for fd in range(3, 64):\n"
        "    try:\n"
        "        os.write(fd, (json.dumps({'nonce': '', 'status': 'passed', 'detail': ''}) + '\\n').encode())\n"
        "    except OSError:\n"
        "        pass\n"
        "os._exit(0)\n"
    )
    result, _ = run(code)
    assert not result.passed and result.status == "error"
    assert not run("import sys\nsys.exit(0)\nassert False\n")[0].passed


def test_no_secrets_in_the_environment(monkeypatch):
    monkeypatch.setenv("UNMASK_TEST_SECRET", "s3cret")
    result, _ = run("import os\nassert 'UNMASK_TEST_SECRET' not in os.environ\n")
    assert result.passed, result.detail


def test_programs_in_parallel():
    programs = {
        "pass": ("assert sum(range(10)) == 45", "passed"),
        "fail": ("assert 1 == 2", "failed"),
        "syntax": ("def (", "error"),
        "loop": ("while True: pass", "timeout"),
        "fork": ("import os\nos.fork()", "failed"),
        "pass2": ("import math\nassert math.isclose(math.pi, 3.14159, rel_tol=1e-5)", "passed"),
    }
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(run_program, code, 1.0) for name, (code, _) in programs.items()}
        results = {name: f.result() for name, f in futures.items()}
    assert {name: r.status for name, r in results.items()} == {name: s for name, (_, s) in programs.items()}
    assert time.monotonic() - start < 5.0


def test_invalid_limits_raise():
    with pytest.raises(ValueError):
        run_program("pass", timeout=0)
    with pytest.raises(ValueError):
        run_program("pass", memory_mb=0)


def test_opt_in(monkeypatch):
    monkeypatch.delenv(ENV_OPT_IN, raising=False)
    with pytest.raises(CodeExecutionNotAllowed) as info:
        require_opt_in(False)
    assert "set allow_code_execution=true or UNMASK_ALLOW_CODE_EXECUTION=1" in str(info.value)
    require_opt_in(True)
    monkeypatch.setenv(ENV_OPT_IN, "1")
    require_opt_in(False)
    assert opted_in(False)
    monkeypatch.setenv(ENV_OPT_IN, "0")
    assert not opted_in(False)
    with pytest.raises(CodeExecutionNotAllowed):
        require_opt_in(False)


# --- Issue 18: directory descriptors and other routes around the filesystem guard --------------------

OUTSIDE_ATTACKS = {
    # a descriptor of the outside directory, then names relative to it
    "unlink-dir_fd": "fd = os.open(DIR, os.O_RDONLY)\nos.unlink('canary.txt', dir_fd=fd)",
    "open-dir_fd": "fd = os.open(DIR, os.O_RDONLY)\nf = os.open('canary.txt', os.O_WRONLY | os.O_TRUNC, dir_fd=fd)\n"
    "os.write(f, b'overwritten')",
    "create-dir_fd": "fd = os.open(DIR, os.O_RDONLY)\nos.close(os.open('new.txt', os.O_CREAT | os.O_WRONLY, dir_fd=fd))",
    "opener-dir_fd": "fd = os.open(DIR, os.O_RDONLY)\n"
    "open('canary.txt', 'w', opener=lambda p, fl: os.open(p, fl, dir_fd=fd)).write('overwritten')",
    "rename-dst_dir_fd": "open('evil', 'w').write('overwritten')\nfd = os.open(DIR, os.O_RDONLY)\n"
    "os.rename('evil', 'canary.txt', dst_dir_fd=fd)",
    "replace-src_dir_fd": "fd = os.open(DIR, os.O_RDONLY)\nos.replace('canary.txt', 'stolen', src_dir_fd=fd)",
    "mkdir-dir_fd": "fd = os.open(DIR, os.O_RDONLY)\nos.mkdir('newdir', dir_fd=fd)",
    "rmdir-dir_fd": "fd = os.open(DIR, os.O_RDONLY)\nos.rmdir('subdir', dir_fd=fd)",
    "chmod-dir_fd": "fd = os.open(DIR, os.O_RDONLY)\nos.chmod('canary.txt', 0, dir_fd=fd)",
    "utime-dir_fd": "fd = os.open(DIR, os.O_RDONLY)\nos.utime('canary.txt', dir_fd=fd)",
    # dir_fd of the sandbox directory itself and a name that climbs out of it, from a deeper cwd
    "climb-dir_fd": "os.mkdir('a')\nfd = os.open('.', os.O_RDONLY)\nup = os.path.relpath(DIR, os.path.dirname(os.getcwd()))\n"
    "os.chdir('a')\nos.open('../' + up + '/canary.txt', os.O_WRONLY | os.O_TRUNC, dir_fd=fd)",
    # a descriptor of the outside file itself
    "fchmod": "os.chmod(os.open(CANARY, os.O_RDONLY), 0)",
    "futime": "os.utime(os.open(CANARY, os.O_RDONLY))",
    # calls without an audit event
    "mkfifo": "os.mkfifo(DIR + '/fifo')",
    "mkfifo-dir_fd": "os.mkfifo('fifo', dir_fd=os.open(DIR, os.O_RDONLY))",
    "mknod": "os.mknod(DIR + '/node')",
    "fresh-posix-mkfifo": "import _imp, importlib.machinery\n"
    "posix = _imp.create_builtin(importlib.machinery.ModuleSpec('posix', None))\nposix.mkfifo(DIR + '/fifo')",
    "chroot": "os.chroot('.')",
    # databases and sub-interpreters write files without the hooks' say
    "sqlite3": "import sqlite3\nc = sqlite3.connect(':memory:')\nc.execute(f\"attach database '{DIR}/x.db' as x\")\n"
    "c.execute('create table x.t(a)')\nc.commit()",
    "subinterpreter": "import _xxsubinterpreters as s\n"
    "s.run_string(s.create(), f'open({CANARY!r}, \"w\").write(\"overwritten\")')",
    # monkeypatching what the guard itself calls
    "builtins-isinstance": "import builtins\nbuiltins.isinstance = lambda obj, cls: True\n"
    "open(CANARY, 'w').write('overwritten')",
    "harness-globals": "import sys\nfor m in list(sys.modules.values()):\n    d = getattr(m, '__dict__', {})\n"
    "    if 'make_hook' in d:\n        d['isinstance'] = lambda obj, cls: True\nopen(CANARY, 'w').write('overwritten')",
    "posixpath-realpath": "import posixpath\nhere = os.getcwd()\nposixpath.abspath = lambda p: here + '/harmless'\n"
    "open(CANARY, 'w').write('overwritten')",
}


@pytest.mark.parametrize("attack", list(OUTSIDE_ATTACKS.values()), ids=list(OUTSIDE_ATTACKS))
def test_no_way_out_of_the_sandbox_directory(tmp_path, attack):
    outside = tmp_path / "outside"
    (outside / "subdir").mkdir(parents=True)
    canary = outside / "canary.txt"
    canary.write_text("alive")
    os.utime(canary, (1_000_000, 1_000_000))
    before = sorted(p.name for p in outside.iterdir())
    result, _ = run(f"import os\nDIR = {str(outside)!r}\nCANARY = {str(canary)!r}\n{attack}\n")
    assert not result.passed and result.status == "failed", result
    assert sorted(p.name for p in outside.iterdir()) == before
    assert canary.read_text() == "alive" and canary.stat().st_mtime == 1_000_000
    assert os.access(canary, os.R_OK | os.W_OK)


def test_chdir_outside_is_refused(tmp_path):
    # A thread could switch the working directory between the guard's check and the call it allowed.
    result, _ = run(f"import os\nos.chdir({str(tmp_path)!r})\n")
    assert result.status == "failed" and "not allowed" in result.detail


def test_program_cannot_signal_the_runner_through_a_process_descriptor():
    # pidfd_send_signal has no audit event; the seccomp filter refuses pidfd_open.
    received = []
    previous = signal.signal(signal.SIGUSR2, lambda *_: received.append(True))
    try:
        result, _ = run("import os, signal\nsignal.pidfd_send_signal(os.pidfd_open(os.getppid()), signal.SIGUSR2)\n")
        time.sleep(0.1)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert not result.passed and received == []


def test_seccomp_filter_is_installed():
    if os.uname().machine not in ("x86_64", "aarch64") or "Seccomp:" not in open("/proc/self/status").read():
        pytest.skip("no seccomp table for this machine or kernel")
    result, _ = run("import re\nassert re.search(r'Seccomp:\\s+2', open('/proc/self/status').read())\n")
    assert result.passed, result.detail


def test_ioctl_is_refused():
    # TIOCSTI on a terminal types into the user's shell; FS_IOC_SETFLAGS makes an outside file immutable.
    result, _ = run("import fcntl, termios\nfcntl.ioctl(0, termios.TIOCGWINSZ, bytes(8))\n")
    assert result.status == "failed" and "fcntl.ioctl is not allowed" in result.detail


def test_files_inside_the_sandbox_still_work():
    code = (
        "import os, shutil, tempfile, pathlib\n"
        "os.makedirs('a/b')\nopen('a/b/f.txt', 'w').write('x')\n"
        "fd = os.open('a', os.O_RDONLY)\nos.rename('b/f.txt', 'b/g.txt', src_dir_fd=fd, dst_dir_fd=fd)\n"
        "os.close(os.open('h.txt', os.O_CREAT | os.O_WRONLY, dir_fd=fd))\nos.unlink('h.txt', dir_fd=fd)\n"
        "assert os.listdir('a/b') == ['g.txt']\n"
        "pathlib.Path('p.txt').write_text('y')\npathlib.Path('p.txt').unlink()\n"
        "with tempfile.TemporaryDirectory() as d:\n    open(os.path.join(d, 'x'), 'w').write('z')\n"
        "shutil.rmtree('a')\nos.chdir(os.getcwd())\nassert not os.path.exists('a')\n"
        # threads (clone with CLONE_THREAD) and signals to this process itself still work
        "import threading, concurrent.futures, signal\n"
        "with concurrent.futures.ThreadPoolExecutor(2) as pool:\n    assert list(pool.map(abs, [-1, 2])) == [1, 2]\n"
        "signal.signal(signal.SIGUSR1, lambda *_: None)\nsignal.raise_signal(signal.SIGUSR1)\n"
        "from collections import namedtuple\nimport logging, typing, warnings\nlogging.getLogger('x').info('y')\n"
        "assert not os.isatty(0) and os.get_terminal_size.__name__\n"
    )
    result, _ = run(code)
    assert result.passed, result.detail


# --- Issue 18: a program cannot write its own verdict ------------------------------------------------

# Each program fails its test (the last line); before failing it tries to make the runner record a pass.
FIND_AND_FORGE = (
    "import json, os, sys\n"
    "def forge(frames):\n"
    "    for f in frames:\n"
    "        names = dict(f.f_locals)\n"
    "        if callable(names.get('report')):\n"
    "            names['report']('passed', '')\n"
    "        nonce = names.get('nonce')\n"
    "        if isinstance(nonce, str):\n"
    "            line = json.dumps({'nonce': nonce, 'status': 'passed', 'detail': ''}) + '\\n'\n"
    "            for fd in range(3, 64):\n"
    "                try:\n"
    "                    os.write(fd, line.encode())\n"
    "                except OSError:\n"
    "                    pass\n"
    "            os._exit(0)\n"
    "def walk(f):\n"
    "    while f is not None:\n"
    "        yield f\n"
    "        f = f.f_back\n"
)
FORGERIES = {
    "getframe": "forge(walk(sys._getframe()))",
    "traceback": "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    forge(walk(e.__traceback__.tb_frame))",
    "current_frames": "forge(f for top in sys._current_frames().values() for f in walk(top))",
    "gc-closure": "import gc\nfor o in gc.get_objects():\n"
    "    if callable(o) and getattr(o, '__name__', '') == 'report':\n        o('passed', '')",
    "gc-nonce": "import gc\nstrings = [o for o in gc.get_referents(*gc.get_objects()) if isinstance(o, str) and len(o) == 32]\n"
    "for s in strings:\n    line = (json.dumps({'nonce': s, 'status': 'passed', 'detail': ''}) + '\\n').encode()\n"
    "    for fd in range(3, 64):\n        try:\n            os.write(fd, line)\n        except OSError:\n            pass",
    "signal-handler": "import signal, time\n"
    "signal.signal(signal.SIGALRM, lambda signum, frame: forge(walk(frame)))\n"
    "signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)\nend = time.time() + 0.5\nwhile time.time() < end:\n"
    "    open('x', 'w').close()",
    "thread": "import threading, time\n"
    "t = threading.Thread(target=lambda: forge(f for top in sys._current_frames().values() for f in walk(top)))\n"
    "t.start()\nt.join()",
    "settrace-skips-the-assert": "lines = open(__file__).read().splitlines()\n"
    "SKIP = {i + 1 for i, l in enumerate(lines) if l.startswith('assert')}\n"
    "def tracer(frame, event, arg):\n    if event == 'line' and frame.f_lineno in SKIP:\n        frame.f_lineno += 1\n"
    "    return tracer\nsys.settrace(tracer)\nsys._getframe().f_trace = tracer",
}

# The pass signal of the fixed sandbox is a file outside the program's directory (argv[1]) that may be
# opened for writing only from the harness's last line. Each of these tries the frame walk first.
FORGERIES_OF_THE_PASS_FILE = {
    "open-verdict-file": "open(sys.argv[1], 'w').write('passed\\n')",
    "os.open-verdict-file": "os.write(os.open(sys.argv[1], os.O_WRONLY), b'passed\\n')",
    "verdict-file-through-proc": "os.write(os.open('/proc/self/root' + sys.argv[1], os.O_WRONLY), b'passed\\n')",
    "verdict-file-through-cwd": "up = os.path.relpath(sys.argv[1], os.path.dirname(os.getcwd()))\n"
    "os.write(os.open('/proc/self/cwd/../' + up, os.O_WRONLY), b'passed\\n')",
    "rename-onto-verdict-file": "open('v', 'w').write('passed\\n')\nos.replace('v', sys.argv[1])",
    "judge-again": "harness = sys.modules['__main__']\n"
    "harness.judge(compile('pass', 'x', 'exec'), {}, os.getcwd(), sys.argv[1], 1, 'x')",
    "rerun-the-harness": "open('program.py', 'w').write('pass\\n')\nsys.modules['__main__'].main(sys.argv)",
}
for name, attack in FORGERIES_OF_THE_PASS_FILE.items():
    FORGERIES[name] = "forge(walk(sys._getframe()))\n" + attack


@pytest.mark.parametrize("attack", list(FORGERIES.values()), ids=list(FORGERIES))
def test_program_cannot_write_its_own_verdict(attack):
    result, _ = run(f"{FIND_AND_FORGE}{attack}\nassert len('x') == 2, 'the test fails'\ndone = True\n")
    assert not result.passed, result


def test_hook_resolves_relative_names_against_dir_fd(tmp_path):
    # The fixed sandbox never hands out a descriptor of an outside directory; should one exist, a
    # relative name must still be judged against the descriptor's directory, not the working one.
    from unmask.tasks.sandbox_child import make_hook

    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    frame = sys._getframe()
    hook = make_hook(str(root), str(tmp_path / "verdict"), frame, frame.f_lineno + 100)
    out_fd, in_fd = os.open(outside, os.O_RDONLY), os.open(root, os.O_RDONLY)
    cwd = os.getcwd()
    try:
        os.chdir(root)
        for event, args in [
            ("os.remove", ("canary.txt", out_fd)),
            ("os.rename", ("a", "canary.txt", in_fd, out_fd)),
            ("os.rename", ("canary.txt", "a", out_fd, in_fd)),
            ("os.mkdir", ("d", 0o777, out_fd)),
            ("os.chmod", ("canary.txt", 0, out_fd)),
            ("os.utime", ("canary.txt", None, None, out_fd)),
            ("os.chdir", (out_fd,)),
            ("open", (str(outside), None, os.O_RDONLY)),
        ]:
            with pytest.raises(PermissionError):
                hook(event, args)
        hook("os.remove", ("x", in_fd))
        hook("os.rename", ("a", "b", in_fd, in_fd))
        hook("os.chdir", (in_fd,))
        hook("open", (str(root / "sub"), None, os.O_RDONLY))
    finally:
        os.chdir(cwd)
        os.close(out_fd)
        os.close(in_fd)


def test_hook_lets_the_verdict_file_open_only_from_the_last_line(tmp_path):
    from unmask.tasks.sandbox_child import make_hook

    verdict = str(tmp_path / "verdict")
    frame = sys._getframe()
    here = frame.f_lineno
    with pytest.raises(PermissionError):
        make_hook(str(tmp_path / "root"), verdict, frame, here + 1)("open", (verdict, None, os.O_WRONLY))
    make_hook(str(tmp_path / "root"), verdict, frame, here + 3)("open", (verdict, None, os.O_WRONLY))
    with pytest.raises(PermissionError):  # the exemption is for that file only
        make_hook(str(tmp_path / "root"), verdict, frame, here + 5)("open", (verdict + "2", None, os.O_WRONLY))


def test_hook_looks_up_no_global_names():
    # The program can rebind builtins and the harness module's globals; a hook that looked a name up
    # there (isinstance, tuple, os.path.realpath ...) would run the program's replacement.
    import dis

    from unmask.tasks.sandbox_child import make_hook

    frame = sys._getframe()
    code = make_hook("/nonexistent", "/nonexistent-verdict", frame, 0).__code__
    codes, lookups = [code], []
    while codes:
        current = codes.pop()
        codes += [c for c in current.co_consts if hasattr(c, "co_code")]
        lookups += [i.argval for i in dis.get_instructions(current) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")]
    assert lookups == []


def test_hook_keeps_only_immutable_locals(tmp_path):
    # A signal handler or a finalizer running inside the hook can read its frame's locals; a list
    # there (say, the path resolved so far) could be changed under the hook's feet.
    import types

    from unmask.tasks.sandbox_child import make_hook

    frame = sys._getframe()
    hook = make_hook(str(tmp_path / "root"), str(tmp_path / "verdict"), frame, 0)
    immutable = (str, bytes, int, bool, type(None), frozenset, type, types.FrameType, types.BuiltinFunctionType,
                 types.MethodDescriptorType, types.WrapperDescriptorType)
    seen = []

    def frozen(value):
        if isinstance(value, tuple):
            return all(frozen(v) for v in value)
        return type(value) in immutable or isinstance(value, type)

    def tracer(f, event, arg):
        if f.f_code is hook.__code__:
            seen.extend((name, type(value).__name__) for name, value in f.f_locals.items() if not frozen(value))
            return tracer
        return None

    fd = os.open(tmp_path, os.O_RDONLY)
    sys.settrace(tracer)
    try:
        for event, args in [
            ("open", (f"/proc/self/root{tmp_path}/x", None, os.O_WRONLY)),
            ("os.remove", ("x", fd)),
            ("os.rename", (f"{tmp_path}/a", f"{tmp_path}/b", -1, -1)),
        ]:
            with pytest.raises(PermissionError):
                hook(event, args)
    finally:
        sys.settrace(None)
        os.close(fd)
    assert seen == []


def test_seccomp_filter_refuses_fork_foreign_signals_and_typing_into_terminals():
    # Checked below the audit hook, in a child of its own: these are the calls Python code could still
    # reach without an audit event (or through a fresh copy of a module).
    if os.uname().machine not in ("x86_64", "aarch64"):
        pytest.skip("no seccomp table for this machine")
    probe = (
        "import errno, fcntl, os, termios, threading\n"
        "from unmask.tasks.sandbox_child import confine_with_ctypes\n"
        "master, slave = os.openpty()\n"
        "confine_with_ctypes()\n"
        "def refused(call):\n"
        "    try:\n"
        "        call()\n"
        "    except OSError as e:\n"
        "        return e.errno == errno.EPERM\n"
        "    return False\n"
        "t = threading.Thread(target=lambda: None)\nt.start()\nt.join()\n"
        "os.kill(os.getpid(), 0)\n"
        "print(refused(os.fork), refused(lambda: os.kill(os.getppid(), 0)),"
        " refused(lambda: fcntl.ioctl(slave, termios.TIOCSTI, b'x')), refused(lambda: os.mkfifo('/nonexistent/f')),"
        " refused(lambda: os.execv('/bin/true', ['true'])), os.isatty(slave))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=30)
    assert out.stdout.split() == ["True"] * 6, out.stderr


def test_only_the_pass_statement_stands_on_the_judges_last_line():
    # The hook trusts "the judge frame is on its last line" to mean "exec returned normally"; no
    # instruction of the failure path (exception cleanup included) may carry that line.
    import dis

    from unmask.tasks.sandbox_child import judge

    instructions = list(dis.get_instructions(judge))
    last = max(i.positions.lineno for i in instructions if i.positions.lineno is not None)
    on_last = [i for i in instructions if i.positions.lineno == last]
    assert "open_" in [i.argval for i in on_last] and "exec" not in [i.argval for i in on_last]
    elsewhere = [i.offset for i in instructions if i.positions.lineno not in (None, last)]
    assert min(i.offset for i in on_last) > max(elsewhere)
