"""Load test of `dgi serve`: N concurrent clients on loopback for a fixed time, latency and throughput.

    python benchmarks/load_test.py MODEL_DIR [--data DATA] [--clients 50] [--seconds 60] [--threads 2]

Starts `dgi serve MODEL_DIR` on a free port, sends each client's requests back to back (histories
drawn from the dataset's test split when --data is given, else random catalogue items; every fourth
request also carries a query), then writes benchmarks/results/load-test.json: p50/p90/p99 latency,
requests/s, the server's micro-batch sizes (from /metrics), errors, command, commit, machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from dgi.io import write_json
from dgi.provenance import git_commit, machine

RESULTS = Path(__file__).parent / "results" / "load-test.json"


def request_bodies(model_dir: Path, data: Path | None, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    ids = [json.loads(line)["id"] for line in (model_dir / "items.jsonl").read_text().splitlines()]
    texts = [json.loads(line)["text"] for line in (model_dir / "items.jsonl").read_text().splitlines()]
    if data is not None:
        rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
        histories = [row["history"] for row in rows if row["history"]]
    else:
        histories = [[rng.choice(ids) for _ in range(rng.randint(1, 8))] for _ in range(n)]
    bodies = []
    for i in range(n):
        body = {"history": rng.choice(histories), "k": 10}
        if i % 4 == 3:
            body["query"] = " ".join(rng.choice(texts).split()[:4])
        bodies.append(body)
    return bodies


async def client(http: httpx.AsyncClient, bodies: list[dict], stop: float, latencies: list[float],
                 errors: list[str]) -> None:
    i = 0
    while time.perf_counter() < stop:
        started = time.perf_counter()
        try:
            response = await http.post("/search", json=bodies[i % len(bodies)])
            if response.status_code != 200:
                errors.append(f"{response.status_code}: {response.text[:200]}")
        except httpx.HTTPError as error:
            errors.append(repr(error))
        latencies.append(time.perf_counter() - started)
        i += 1


async def drive(url: str, bodies: list[dict], clients: int, seconds: float) -> tuple[list[float], list[str], float]:
    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        for body in bodies[:8]:  # warm-up, queries included (the server loads its encoder at start)
            await http.post("/search", json=body)
        started = time.perf_counter()
        stop = started + seconds
        await asyncio.gather(*(client(http, bodies[c::clients] or bodies, stop, latencies, errors)
                               for c in range(clients)))
        return latencies, errors, time.perf_counter() - started


def batch_sizes(metrics: str) -> dict:
    buckets = {line.split('le="')[1].split('"')[0]: float(line.split()[-1]) for line in metrics.splitlines()
               if line.startswith("dgi_search_batch_size_bucket")}
    count = next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("dgi_search_batch_size_count"))
    total = next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("dgi_search_batch_size_sum"))
    return {"batches": count, "mean": total / max(count, 1), "cumulative_buckets": buckets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "dgi.cli", "serve", str(args.model_dir), "--port", str(port),
                               "--threads", str(args.threads)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        load_before = machine()["load_average_1min"]
        bodies = request_bodies(args.model_dir, args.data, 5000, seed=0)
        latencies, errors, wall = asyncio.run(drive(url, bodies, args.clients, args.seconds))
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    ms = np.array(latencies) * 1e3
    result = {
        "command": shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "git_commit": git_commit(),
        "machine": {**machine(), "load_average_1min_before": load_before}, "model_dir": str(args.model_dir),
        "clients": args.clients, "seconds": wall, "server_torch_threads": args.threads,
        "requests": len(latencies), "requests_per_second": len(latencies) / wall, "errors": len(errors),
        "error_examples": errors[:5],
        "latency_ms": {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
                       "p99": float(np.percentile(ms, 99)), "max": float(ms.max())},
        "server_batch_sizes": batch_sizes(metrics),
    }
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("requests", "requests_per_second", "errors", "latency_ms")}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
