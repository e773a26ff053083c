"""The sandbox: honest programs get the right verdict, hostile ones fail cleanly and quickly, and
neither the runner process nor files outside the sandbox are touched."""

from __future__ import annotations

import os
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
