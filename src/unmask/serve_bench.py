"""`unmask bench mode=serve`: the server under load, with and without continuous batching.

Two servers run as subprocesses on the same command line (model, cache, generation and serve
settings), one with `continuous=true` and one with `continuous=false`. For each number of clients N,
each server in turn gets N concurrent clients; each client sends `requests` streamed chat requests,
one after another, waiting an exponential gap (mean 1/rate seconds: Poisson arrivals) before each.
Prompts are the bundled arith task's questions, in order, and each request's max_tokens is its
reference answer's length in tokens (plus EOS), so answer lengths vary as the task's do.

Measured per run: requests/s and output tokens/s over the run's wall time, p50/p99 latency (request
sent to stream end), and the median time to the first streamed token. Written to serve.csv,
serve.json and serve.png (throughput and p99 latency against N).
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import subprocess
import sys
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

CSV_COLUMNS = (
    "clients", "continuous", "requests", "errors", "seconds", "requests_per_s", "tokens_per_s",
    "p50_s", "p99_s", "ttft_s", "ttft_p99_s",
)
SERVER_KEYS = ("max_batch", "max_batch_tokens", "max_queue", "workers", "batch_wait_ms")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`unmask serve` in a subprocess on a free local port."""

    def __init__(self, args: list[str], threads: int | None = None):
        import httpx

        self.httpx = httpx
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "unmask", "serve", f"port={self.port}", "log_level=warning", *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )

    def wait(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {self.proc.stdout.read()}")
            try:
                if self.httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except self.httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server did not come up")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class ServerThread:
    """The same server in this process, on a uvicorn thread, serving an already loaded model (quick to
    start, used by the short test; the clients then share the interpreter with the engine)."""

    def __init__(self, args: list[str], model):
        import uvicorn

        from .serve import build_app

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app, _, _ = build_app([f"port={self.port}", *args], model=model)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="unmask-bench-server", daemon=True)
        self.thread.start()

    def wait(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the in-process server did not come up")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def arith_requests(model_path: str) -> list[tuple[str, int]]:
    """(question, max_tokens) of the bundled arith eval problems: the answer's tokens plus EOS."""
    from .models.tokenizer import Tokenizer
    from .tasks import arith

    folder = Path(str(resources.files("unmask") / "assets" / "tiny")) if model_path == "tiny" else Path(model_path)
    tokenizer = Tokenizer.from_dir(folder)
    return [(p["question"], len(tokenizer.encode(p["answer"])) + 1) for p in arith.eval_split()]


def one_request(client, url: str, question: str, max_tokens: int) -> dict:
    """Send one streamed chat request; its latency, time to first token and output tokens."""
    body = {"messages": [{"role": "user", "content": question}], "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    ttft, tokens, error = None, 0, None
    with client.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as response:
        if response.status_code != 200:
            response.read()
            return {"error": f"HTTP {response.status_code}: {response.text[:200]}"}
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                error = chunk["error"]["message"]
                continue
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                if ttft is None and choice.get("delta", {}).get("content"):
                    ttft = time.perf_counter() - start
    latency = time.perf_counter() - start
    return {"latency": latency, "ttft": latency if ttft is None else ttft, "tokens": tokens, "error": error}


def drive(url: str, clients: int, requests: int, rate: float, problems: list[tuple[str, int]], seed: int = 0) -> dict:
    """N clients, each sending `requests` requests after exponential gaps; the run's summary."""
    import httpx

    records: list[dict] = []
    lock = threading.Lock()
    counter = iter(range(clients * requests))

    def client_main(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        with httpx.Client() as client:
            for _ in range(requests):
                time.sleep(rng.expovariate(rate))
                with lock:
                    question, max_tokens = problems[next(counter) % len(problems)]
                try:
                    record = one_request(client, url, question, max_tokens)
                except httpx.HTTPError as exc:
                    record = {"error": f"{type(exc).__name__}: {exc}"}
                with lock:
                    records.append(record)

    threads = [threading.Thread(target=client_main, args=(i,), daemon=True) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    return summarize(records, seconds, clients)


def _quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile (p99 of a few requests is their maximum)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summarize(records: list[dict], seconds: float, clients: int) -> dict:
    done = [r for r in records if not r.get("error")]
    latencies = [r["latency"] for r in done]
    ttfts = [r["ttft"] for r in done]
    return {
        "clients": clients,
        "requests": len(done),
        "errors": len(records) - len(done),
        "seconds": seconds,
        "requests_per_s": len(done) / seconds,
        "tokens_per_s": sum(r["tokens"] for r in done) / seconds,
        "p50_s": _quantile(latencies, 0.5),
        "p99_s": _quantile(latencies, 0.99),
        "ttft_s": _quantile(ttfts, 0.5),
        "ttft_p99_s": _quantile(ttfts, 0.99),
    }


def split_server_args(rest: list[str]) -> tuple[list[str], str | None]:
    """The overrides the servers take, and output_dir= (the bench's own)."""
    output_dir, args = None, []
    for item in rest:
        key, _, value = item.partition("=")
        if key == "output_dir":
            output_dir = value
        elif key == "continuous":
            raise ValueError("continuous= is not a bench setting: mode=serve runs both continuous=true and continuous=false")
        else:
            args.append(item)
    return args, output_dir


def format_table(rows: list[dict]) -> str:
    head = f"{'clients':>7} {'continuous':>10} {'req/s':>8} {'tok/s':>8} {'p50 s':>7} {'p99 s':>7} {'ttft s':>7} {'errors':>6}"
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['clients']:>7} {str(r['continuous']).lower():>10} {r['requests_per_s']:>8.2f} {r['tokens_per_s']:>8.1f} "
            f"{r['p50_s']:>7.2f} {r['p99_s']:>7.2f} {r['ttft_s']:>7.2f} {r['errors']:>6}"
        )
    return "\n".join(lines)


def run_serve_bench(rest: list[str], clients: list[int], requests: int, rate: float, threads: int | None,
                    command: str, server: str = "subprocess") -> list[dict]:
    """Start both servers, drive each with every client count (servers taking turns), write the files.

    `server`: "subprocess" (the measurement: each server its own process) or "inprocess" (uvicorn
    threads in this process sharing one loaded model: quick to start, for tests)."""
    import csv

    from . import plots
    from .config import reject_eval_only, require_model_path, resolve_config, split_overrides
    from .machine_info import machine
    from .serve import SERVE_KEYS

    if server not in ("subprocess", "inprocess"):
        raise ValueError(f"server={server!r}; valid choices: ['subprocess', 'inprocess']")
    if not clients or min(clients) < 1:
        raise ValueError(f"clients={clients} must be one or more counts >= 1")
    if requests < 1 or rate <= 0:
        raise ValueError(f"requests={requests} must be >= 1 and rate={rate} > 0")
    args, output_dir = split_server_args(rest)
    _, config_args = split_overrides(args, SERVE_KEYS)
    cfg = resolve_config(config_args)  # a bad override fails here, before any server starts
    reject_eval_only(cfg, "unmask bench mode=serve")
    problems = arith_requests(require_model_path(cfg))
    out = Path(output_dir or Path("outputs") / "bench" / f"serve-{str(cfg.model['name']).replace(os.sep, '_')}")
    if server == "inprocess":
        from .config import load_model

        model = load_model(cfg)
        servers = {flag: ServerThread([f"continuous={str(flag).lower()}", *args], model) for flag in (True, False)}
    else:
        servers = {flag: ServerProcess([f"continuous={str(flag).lower()}", *args], threads) for flag in (True, False)}
    rows: list[dict] = []
    try:
        for running in servers.values():
            running.wait()
            drive(running.url, 1, 1, 1e6, problems, seed=99)  # warm-up
        for n in clients:
            for flag, running in servers.items():
                row = {**drive(running.url, n, requests, rate, problems), "continuous": flag}
                rows.append(row)
                print(format_table([row]).splitlines()[1], file=sys.stderr, flush=True)
    finally:
        for running in servers.values():
            running.stop()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "serve.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (str(r[k]).lower() if k == "continuous" else r[k]) for k in CSV_COLUMNS})
    info: dict[str, Any] = {**machine(), "threads": threads, "command": command, "server": server, "server_args": args,
                            "requests_per_client": requests, "rate_per_client": rate}
    (out / "serve.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=2))
    settings = " ".join(a for a in args if not a.startswith("model=")) or f"cache={cfg.cache_name}"
    title = f"{cfg.model['name']} {cfg.model['dtype']}, {settings}\n{requests} requests/client, rate {rate:g}/s per client"
    plots.serve_load(rows, out / "serve.png", title=title)
    print(format_table(rows))
    print(f"wrote {out / 'serve.csv'}, {out / 'serve.json'} and {out / 'serve.png'}")
    return rows
