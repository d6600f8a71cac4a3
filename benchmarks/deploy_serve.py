"""`mmcore serve` on loopback: the server's own cost per request, micro-batching throughput, malformed requests.

    python benchmarks/deploy_serve.py --path runs/demo            # the demo run (eager); or an export folder

The server runs as ``python -m mmcore serve PATH`` in its own process; requests carry a demo test
record as an upload (PNG + WAV + text). The clients are cheap on purpose (they share the server's
cores): each body is encoded once, and sent over keep-alive connections of the standard library's
``http.client``, one thread per client (~0.2-0.5 ms of client CPU per request, printed). Measured:

* overhead at batch 1: the HTTP round trip (one client, keep-alive) against the same work done in
  this process without HTTP (the record's checks, decoding, preprocessing and forward pass:
  ``backend.prepare`` + ``backend.predict``, under the server's OpenMP wait policy), interleaved
  request by request; p50 difference; the server process's CPU time per request against this
  process's for the same work; and the server's own stages (its ``Server-Timing`` header: read,
  parse, prepare, queue, model);
* throughput, ``--rounds`` times alternated: one request at a time vs ``--clients`` concurrent
  clients (micro-batching), the ratio per round, p50 and p95 latency, failures and requests lost
  (answered vs predicted by the server's /healthz), the batch sizes (/healthz), the server's stages,
  and the CPU time per request of the server and of the clients -- with the rate that CPU time
  allows on this machine's cores (what the clients and the server can reach together at best);
* 100 malformed requests (wrong types, missing fields, unknown slots, corrupt or oversized files,
  wrong content types): each must be a 4xx, and the server healthy afterwards.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """:func:`cpu_seconds` of ``pid`` and every process below it (``--workers N``: uvicorn's supervisor and its N
    worker processes), from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += cpu.get(p, 0.0)
        todo += children.get(p, [])
    return total


def parse_server_timing(header: str) -> dict[str, float]:
    """The stages of the server's ``Server-Timing`` header: {"read": ms, ..., "batch": records in the batch}."""
    out = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";")
        if rest.startswith("dur="):
            out[name] = float(rest[4:])
        elif rest.startswith("desc="):
            out[name] = float(rest[5:].strip('"').split()[0])
    return out


def stage_summary(timings: list[dict[str, float]]) -> str:
    """Mean and p50 of each stage over ``timings`` (ms; batch: records)."""
    names = [n for n in ("read", "parse", "prepare", "queue", "model", "batch") if any(n in t for t in timings)]
    parts = []
    for n in names:
        values = [t[n] for t in timings if n in t]
        parts.append(f"{n} {statistics.mean(values):.2f}/{statistics.median(values):.2f}")
    return f"mean/p50 per request (ms; batch: records): {', '.join(parts)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_records(run: Path, count: int) -> list[dict]:
    """Test records of the run's own data: {"image": bytes, "audio": bytes, "text": str}."""
    import mmcore
    from mmcore.engine.datasets import load_datasets
    from mmcore.engine.rundir import RunDir

    config = RunDir.open(run).read_config()
    test = load_datasets(config, mmcore.get_plugin_manager(), splits=("test",))["test"]
    out = []
    for i in range(min(count, len(test))):
        inputs = test[i]["inputs"]
        record = {}
        for slot, value in inputs.items():
            if value is None:
                continue
            if isinstance(value, str) and os.path.isfile(value):
                record[slot] = Path(value).read_bytes()
            else:
                record[slot] = value
        out.append(record)
    return out


def as_request(record: dict) -> dict:
    files = {k: (k, v, "application/octet-stream") for k, v in record.items() if isinstance(v, bytes)}
    data = {k: v for k, v in record.items() if isinstance(v, str)}
    return {"files": files, "data": data}


def malformed(record: dict) -> list[dict]:
    from PIL import Image

    bomb = io.BytesIO()
    Image.new("L", (12000, 12000)).save(bomb, format="PNG")
    image = next((k for k, v in record.items() if isinstance(v, bytes) and v[:4] == b"\x89PNG"), "image")
    cases = [{"json": {"records": [{image: "/etc/passwd"}]}}, {"json": {"records": []}}, {"json": {}}, {"json": []},
             {"json": {"records": [{}]}}, {"json": {"records": [{"no_such_slot": 1}]}}, {"json": {"records": "x"}},
             {"content": b"{broken", "headers": {"content-type": "application/json"}},
             {"content": b"plain", "headers": {"content-type": "text/plain"}},
             {"content": b"--b\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=b"}},
             {"files": {image: ("x.png", b"not an image", "image/png")}},
             {"files": {image: ("x.png", bomb.getvalue(), "image/png")}},
             {"files": {image: ("x.png", b"\x89PNG" + b"\x00" * 40_000_000, "image/png")}},  # over the body limit
             {"data": {"no_such_slot": "x"}}, {"json": {"records": [{"text": 5}]}}, {"json": {"records": [None]}}]
    cases += [{"files": {image: (f"{i}.png", bytes([i]) * (i + 3), "image/png")}} for i in range(40)]
    cases += [{"content": json.dumps({"records": [{"text": "seven"}]}).encode()[: 3 + i],
               "headers": {"content-type": "application/json"}} for i in range(20)]
    cases += [{"json": {"records": [{"text": ["a"] * i}]}} for i in range(1, 25)]
    return cases[:100]


class Connection:
    """One keep-alive HTTP/1.1 connection (the standard library's ``http.client``) posting pre-encoded bodies.

    The load generator shares the server's 2 cores, so it is kept cheap: each request body is encoded
    once (:func:`encode`), and a request costs ~0.2 ms of client CPU. (httpx's async client with 32
    connections cost 6.8 ms of CPU per request here, as much as the server's whole work, and made the
    clients the bottleneck of the throughput measured.)
    """

    def __init__(self, port: int, timeout: float = 120.0) -> None:
        self.port, self.timeout = port, timeout
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, dict[str, float]]:
        try:
            self.http.request("POST", "/predict", body=body, headers=headers)
            answer = self.http.getresponse()
            content = answer.read()
        except (OSError, http.client.HTTPException):
            self.http.close()  # the next request opens a new connection
            self.http = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            raise
        return answer.status, content, parse_server_timing(answer.getheader("server-timing", ""))

    def close(self) -> None:
        self.http.close()


def encode(request: dict) -> tuple[bytes, dict[str, str]]:
    """A request's body and headers (multipart or JSON, encoded by httpx once)."""
    built = httpx.Request("POST", "http://127.0.0.1/predict", **request)
    return built.read(), {k: v for k, v in built.headers.items() if k.lower() in ("content-type", "content-length")}


def concurrent(port: int, requests: list[tuple[bytes, dict]], clients: int
               ) -> tuple[list[float], list[int], list[str], float, list[dict[str, float]]]:
    """``clients`` threads, each with its own keep-alive connection, send ``requests`` between them."""
    latencies, codes, errors, timings = [], [], [], []
    jobs = iter(range(len(requests)))
    lock = threading.Lock()

    def client() -> None:
        connection = Connection(port)
        try:
            while True:
                with lock:
                    i = next(jobs, None)
                if i is None:
                    return
                start = time.perf_counter()
                try:
                    status, _, timing = connection.post(*requests[i])
                except (OSError, http.client.HTTPException) as exc:  # a failed request is a result: counted, named
                    with lock:
                        errors.append(f"{type(exc).__name__} after {time.perf_counter() - start:.1f} s")
                        codes.append(0)
                    continue
                with lock:
                    latencies.append(time.perf_counter() - start)
                    codes.append(status)
                    timings.append(timing)
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, codes, errors, time.perf_counter() - start, timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="runs/demo", help="a run directory or an export folder (default runs/demo)")
    parser.add_argument("--run", help="the run whose test split gives the records (default: --path, or the export's source run)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=320, help="requests sent by the concurrent clients together")
    parser.add_argument("--sequential", type=int, default=100, help="requests sent one at a time (overhead, rate)")
    parser.add_argument("--rounds", type=int, default=3, help="one-at-a-time and concurrent phases, alternated (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of the server and of this process")
    parser.add_argument("--workers", type=int, default=1,
                        help="server processes (default 1 with --threads 2: the single-process layout every session "
                             "measured; `mmcore serve`'s own default, --workers auto, is --workers 2 --threads 1 on 2 cores)")
    parser.add_argument("--prepare-threads", type=int, help="the server's --prepare-threads (default: its own)")
    parser.add_argument("--batch-threads", type=int, help="the server's --batch-threads (default: its own; 1: one model "
                                                          "call per batch)")
    parser.add_argument("--window-ms", type=float, help="the server's --window-ms (default: its own)")
    parser.add_argument("--server-log", default="runs/deploy_serve_server.log", help="the server's stderr (default %(default)s)")
    args = parser.parse_args()
    # The server (the `mmcore` command) loads OpenMP with passive waits (mmcore.threads); the same work done in this
    # process for comparison runs the same way, so the difference measured is what serving adds.
    from mmcore.threads import WAIT_POLICY, prefer_passive_waits

    prefer_passive_waits()
    import torch

    torch.set_num_threads(args.threads)
    from mmcore_plugins.deploy.backends import open_backend

    path = Path(args.path)
    run = Path(args.run) if args.run else path
    if args.run is None and (path / "manifest.json").is_file():
        run = Path(json.loads((path / "manifest.json").read_text())["source"]["run"])
    records = demo_records(run, 64)
    requests = [as_request(r) for r in records]
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {args.path}; threads {args.threads}; "
          f"workers {args.workers}; {WAIT_POLICY}={os.environ.get(WAIT_POLICY)}; {len(records)} test records as uploads ({', '.join(sorted(records[0]))})", flush=True)
    port = free_port()
    Path(args.server_log).parent.mkdir(parents=True, exist_ok=True)
    log = open(args.server_log, "w")  # noqa: SIM115 - open while the server runs
    server = subprocess.Popen([sys.executable, "-m", "mmcore", "serve", str(path), "--port", str(port), "--threads",
                               str(args.threads), "--workers", str(args.workers), "--log-level", "warning"]
                              + (["--prepare-threads", str(args.prepare_threads)] if args.prepare_threads else [])
                              + (["--batch-threads", str(args.batch_threads)] if args.batch_threads else [])
                              + (["--window-ms", str(args.window_ms)] if args.window_ms is not None else []),
                              stdout=subprocess.DEVNULL, stderr=log, text=True)
    url = f"http://127.0.0.1:{port}"

    def server_cpu() -> float:  # every server process's CPU: the supervisor alone does no serving with --workers N
        return tree_cpu_seconds(server.pid) if args.workers > 1 else cpu_seconds(server.pid)

    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            raise SystemExit(f"the server did not start: see {log.name}")
        from mmcore_plugins.deploy.serve import ORT_SPINNING

        backend = open_backend(path, threads=args.threads, spinning=ORT_SPINNING)  # the server's session options

        def local(record: dict) -> None:
            backend.predict([backend.prepare(backend.check(record))])

        encoded = [encode(r) for r in requests]
        connection = Connection(port)
        try:
            for i in range(10):  # warm both paths
                connection.post(*encoded[i % len(encoded)])
                local(records[i % len(records)])
            in_process, over_http, cpu_local, cpu_server, timings = [], [], 0.0, 0.0, []
            for i in range(args.sequential):
                j = i % len(records)
                pair = [("local", lambda j=j: local(records[j])), ("http", lambda j=j: connection.post(*encoded[j]))]
                for name, call in (pair if i % 2 else pair[::-1]):
                    cpu = server_cpu() if name == "http" else time.process_time()
                    start = time.perf_counter()
                    result = call()
                    spent = time.perf_counter() - start
                    if name == "http":
                        cpu_server += server_cpu() - cpu
                        assert result[0] == 200, result[1]
                        over_http.append(spent)
                        timings.append(result[2])
                    else:
                        cpu_local += time.process_time() - cpu
                        in_process.append(spent)
        finally:
            connection.close()
        p50_local, p50_http = statistics.median(in_process) * 1000, statistics.median(over_http) * 1000
        print(f"\nbatch 1 ({args.sequential} requests, interleaved): in process {p50_local:.2f} ms p50; over HTTP "
              f"{p50_http:.2f} ms p50 (p95 {percentile(over_http, 0.95) * 1000:.2f}); serving adds {p50_http - p50_local:.2f} ms p50")
        n = args.sequential
        print(f"CPU time per request (load-independent): the server process {1000 * cpu_server / n:.2f} ms, the same work in "
              f"process {1000 * cpu_local / n:.2f} ms: serving costs {1000 * (cpu_server - cpu_local) / n:.2f} ms of CPU "
              f"(clock ticks of {1000 / os.sysconf('SC_CLK_TCK'):.0f} ms: meaningful over many requests)")
        print(f"server stages at batch 1, {stage_summary(timings)}")
        # throughput: one request at a time and `--clients` at once, alternated `--rounds` times (a ratio per round
        # survives a machine whose load changes between rounds)
        jobs = [encoded[i % len(encoded)] for i in range(args.requests)]
        ratios, rounds = [], []
        for r in range(args.rounds):
            connection = Connection(port)
            try:
                cpu, client_cpu = server_cpu(), time.process_time()
                start = time.perf_counter()
                for i in range(args.sequential):
                    assert connection.post(*encoded[i % len(encoded)])[0] == 200
                sequential_rate = args.sequential / (time.perf_counter() - start)
                sequential_cpu = (server_cpu() - cpu) / args.sequential
                sequential_client_cpu = (time.process_time() - client_cpu) / args.sequential
            finally:
                connection.close()
            before = httpx.get(f"{url}/healthz").json()
            cpu, client_cpu = server_cpu(), time.process_time()
            latencies, codes, errors, spent, timings = concurrent(port, jobs, args.clients)
            concurrent_cpu = (server_cpu() - cpu) / len(jobs)
            concurrent_client_cpu = (time.process_time() - client_cpu) / len(jobs)
            after = httpx.get(f"{url}/healthz").json()
            rate = len(codes) / spent
            failed = sum(c != 200 for c in codes)
            # /healthz counts one process's predictions: with --workers N the answering process's alone
            lost = len(jobs) - (after["predicted"] - before["predicted"]) - failed if args.workers == 1 else None
            ratios.append(rate / sequential_rate)
            rounds.append((failed, lost))
            print(f"\nround {r + 1} (load {os.getloadavg()[0]:.1f}): one at a time {sequential_rate:.1f} requests/s; "
                  f"{args.clients} concurrent clients, {len(jobs)} requests: {rate:.1f} requests/s (**{rate / sequential_rate:.2f}x**), "
                  f"latency p50 {statistics.median(latencies) * 1000:.1f} ms, p95 {percentile(latencies, 0.95) * 1000:.1f} ms; "
                  f"{failed} failed, " + (f"{lost} lost; batches {after['batches'] - before['batches']}" if lost is not None else
                                          f"lost not counted ({args.workers} server processes; /healthz answers for one)"))
            sizes = {int(k): v - before.get("batch_sizes", {}).get(k, 0) for k, v in after.get("batch_sizes", {}).items()}
            if sizes and args.workers == 1:
                print(f"  batch sizes (records: batches): {', '.join(f'{k}: {v}' for k, v in sorted(sizes.items()) if v)}")
            print(f"  server stages, {stage_summary(timings)}")
            if errors:
                print(f"  failed without an answer: {len(errors)} ({'; '.join(errors[:5])}); server "
                      f"{'alive' if server.poll() is None else f'exited {server.returncode}'}; its log: {args.server_log}")
            # the server's CPU time per request in each phase: what micro-batching saves, whatever else the machine
            # runs; the clients' CPU (this process) shares the same cores and is part of what the wall-clock rates pay
            print(f"  server CPU time per request: one at a time {1000 * sequential_cpu:.2f} ms, {args.clients} clients "
                  f"{1000 * concurrent_cpu:.2f} ms ({sequential_cpu / max(concurrent_cpu, 1e-9):.2f}x less); the clients' "
                  f"CPU time per request: one at a time {1000 * sequential_client_cpu:.2f} ms, {args.clients} clients "
                  f"{1000 * concurrent_client_cpu:.2f} ms")
            total = concurrent_cpu + concurrent_client_cpu
            print(f"  CPU bound of the {args.clients}-client rate on {os.cpu_count()} cores: {os.cpu_count() / total:.1f} "
                  f"requests/s (server + clients {1000 * total:.2f} ms CPU per request) = "
                  f"{os.cpu_count() / total / sequential_rate:.2f}x the one-at-a-time rate")
        print(f"\n{args.clients} clients vs one at a time over {args.rounds} rounds: median {statistics.median(ratios):.2f}x "
              f"(rounds {', '.join(f'{x:.2f}' for x in ratios)}); {sum(f for f, _ in rounds)} failed, "
              + (f"{sum(lost for _, lost in rounds)} lost" if args.workers == 1 else "lost not counted (every request was answered or failed)"))
        bad = malformed(records[0])
        answers = [httpx.post(f"{url}/predict", timeout=60, **case) for case in bad]
        codes4 = [a.status_code for a in answers]
        fields = sum(1 for a in answers if "error" in a.json())
        health = httpx.get(f"{url}/healthz").json()
        print(f"{len(bad)} malformed requests: {sum(400 <= c < 500 for c in codes4)} answered 4xx "
              f"({', '.join(f'{c}: {codes4.count(c)}' for c in sorted(set(codes4)))}), {fields} with a JSON error; "
              f"server afterwards: {health['status']}")
        assert httpx.post(f"{url}/predict", **requests[0]).status_code == 200
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
