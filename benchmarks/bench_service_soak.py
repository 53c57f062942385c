"""Soak test of ``unifashion serve`` on loopback: latency, errors and the server's memory under
many clients, with and without a generation running, and under concurrent large uploads.

    flock /tmp/unifashion-cpu.lock .venv/bin/python benchmarks/bench_service_soak.py \
        --out benchmarks/results/service_soak.json

The service runs as ``unifashion serve`` in its own process (1 torch thread, the default limits),
with the ``tiny`` preset saved to a folder first (so the index and the service share one model)
over an index of ``--items`` embedded-catalogue items. Clients are threads of this process, each
on its own keep-alive connection. Phases, one after the other, in one run:

1. ``--text-clients`` clients on text search and ``--composed-clients`` on composed search, for
   ``--duration`` seconds: p50 / p99 per kind, error counts, server RSS before and after;
2. the same while one more client generates (``--steps`` denoising steps, back to back);
3. one probe client on text search, one request at a time, while one client generates: the
   latency that a user sees while the model's generation lane is busy; then (3b) the same against
   the service with ``generation_lane=False``, i.e. generation under the model's lock as before;
4. ``--uploads`` concurrent uploads of a large image (the most pixels the service allows, a PNG
   of ~65 KB) to composed search: the server's peak RSS (sampled every 20 ms) and the answers
   (200, or the documented 503 of a full queue).

Errors are any answer other than 200, except 503 with Retry-After (counted apart).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data, content_type) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f"Content-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class Client:
    """One keep-alive connection; ``request`` returns (status, seconds, retry_after)."""

    def __init__(self, port: int):
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def request(self, path: str, body: bytes, content_type: str) -> tuple[int, float, str | None]:
        started = time.perf_counter()
        try:
            self.connection.request("POST", path, body=body, headers={"Content-Type": content_type})
            response = self.connection.getresponse()
            response.read()
            status, retry = response.status, response.getheader("Retry-After")
            if response.getheader("Connection", "").lower() == "close":
                self.connection.close()
        except (OSError, http.client.HTTPException):
            self.connection.close()
            status, retry = -1, None
        return status, time.perf_counter() - started, retry


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = {}
        self.statuses: dict[str, dict[str, int]] = {}

    def add(self, kind: str, status: int, seconds: float, retry: str | None) -> None:
        label = "503 (Retry-After)" if status == 503 and retry else str(status)
        with self.lock:
            if status == 200:
                self.latencies.setdefault(kind, []).append(seconds * 1000)
            counts = self.statuses.setdefault(kind, {})
            counts[label] = counts.get(label, 0) + 1

    def summary(self) -> dict[str, dict]:
        out = {}
        for kind, counts in self.statuses.items():
            ms = np.asarray(self.latencies.get(kind, [0.0]))
            errors = sum(n for label, n in counts.items() if label not in ("200", "503 (Retry-After)"))
            out[kind] = {"requests": sum(counts.values()), "ok": counts.get("200", 0),
                         "busy_503": counts.get("503 (Retry-After)", 0), "errors": errors, "statuses": counts,
                         "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                         "max_ms": float(ms.max())}
        return out


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every_s: float = 0.02):
        super().__init__(daemon=True)
        self.process, self.every_s = psutil.Process(pid), every_s
        self.peak, self.stop = 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.every_s)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def run_clients(port: int, duration: float, tally: Tally, workers: list[tuple[str, str, callable]]) -> None:
    """Each (kind, path, make_body) runs in its own thread, back to back, for ``duration`` s."""
    deadline = time.monotonic() + duration

    def loop(kind: str, path: str, make_body) -> None:
        client = Client(port)
        while time.monotonic() < deadline:
            body, content_type = make_body()
            status, seconds, retry = client.request(path, body, content_type)
            tally.add(kind, status, seconds, retry)
            if status == 503:
                time.sleep(float(retry or 1))

    threads = [threading.Thread(target=loop, args=worker) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def start_server(command: list[str], port_last: bool = False) -> tuple[subprocess.Popen, int, dict]:
    """Start the service (``--port`` appended, or the bare port number with ``port_last``) and
    wait for /health."""
    port = free_port()
    command = [*command, str(port)] if port_last else [*command, "--port", str(port)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            return server, port, json.loads(connection.getresponse().read())
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"the service did not start: {server.stderr.read()[-2000:]}") from None
            time.sleep(0.5)


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()


def probe_during_generation(port: int, text_body, generate_body) -> dict:
    """One client generates once; one probe client sends text searches, one at a time, until it
    is done: the latency a user sees while a generation runs."""
    tally = Tally()
    generating = threading.Event()

    def generate_once():
        client = Client(port)
        generating.set()
        status, seconds, retry = client.request("/generate", *generate_body())
        tally.add("generate", status, seconds, retry)
        generating.clear()

    generator = threading.Thread(target=generate_once)
    generator.start()
    generating.wait()
    time.sleep(0.2)
    probe = Client(port)
    while generating.is_set():
        tally.add("probe text", *probe.request("/search/text", *text_body()))
        time.sleep(0.05)
    generator.join()
    return tally.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/service_soak.json"))
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of phases 1 and 2")
    parser.add_argument("--text-clients", type=int, default=50)
    parser.add_argument("--composed-clients", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100, help="denoising steps of the generating client")
    parser.add_argument("--uploads", type=int, default=40)
    parser.add_argument("--work", help="folder for the model and index (default: a temporary one)")
    args = parser.parse_args()

    import torch

    from unifashion.data.synthetic.catalogue import CatalogueConfig, build_catalogue_files
    from unifashion.models import UniFashion
    from unifashion.pipelines import build_index

    torch.set_num_threads(1)
    work = Path(args.work or tempfile.mkdtemp(prefix="unifashion-soak-"))
    model_dir, index_dir = work / "model", work / "index"
    started = time.perf_counter()
    if not (index_dir / "catalogue.sqlite").is_file():
        model = UniFashion.from_pretrained("tiny")
        model.save_pretrained(model_dir)
        build_catalogue_files(work / "catalogue", CatalogueConfig(n_items=args.items), progress=False)
        build_index(model, work / "catalogue", index_dir, batch_size=16, progress=False)
        del model
    setup_s = time.perf_counter() - started

    serve_command = [sys.executable, "-m", "unifashion.cli", "serve", "--index", str(index_dir),
                     "--model", str(model_dir), "--threads", "1"]
    server, port, health = start_server(serve_command)
    results: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                 "load_average_at_start": list(os.getloadavg())},
                     "config": vars(args), "setup_s": setup_s}
    try:
        results["limits"] = health["limits"]
        rss = lambda: psutil.Process(server.pid).memory_info().rss  # noqa: E731
        rng = np.random.default_rng(0)
        reference = png(Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)))

        def text_body():
            return json.dumps({"text": "a red floral dress", "top_k": 10}).encode(), "application/json"

        def composed_body():
            return multipart({"text": "is blue with longer sleeves", "top_k": "10"},
                             {"image": ("ref.png", reference, "image/png")})

        def generate_body():
            return multipart({"text": "a light pink floral mini dress", "steps": str(args.steps)}, {})

        load = ([("text", "/search/text", text_body)] * args.text_clients
                + [("composed", "/search/composed", composed_body)] * args.composed_clients)

        for name, extra in (("1 searches", []), ("2 searches + one generating", [("generate", "/generate",
                                                                                   generate_body)])):
            tally, before = Tally(), rss()
            run_clients(port, args.duration, tally, load + extra)
            results[name] = {"rss_before_mb": before / 2**20, "rss_after_mb": rss() / 2**20, **tally.summary()}
            print(name, json.dumps(results[name], indent=1))

        # 3. one probe client while one client generates.
        results["3 probe during a generation"] = probe_during_generation(port, text_body, generate_body)
        print(json.dumps(results["3 probe during a generation"], indent=1))

        # 4. concurrent large uploads: a 4096 x 4096 PNG, all white but for a corner (~65 KB).
        side = int(min(health["limits"]["max_image_side"], health["limits"]["max_image_pixels"] ** 0.5))
        big = Image.new("RGB", (side, side), "white")
        big.paste(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), (0, 0))
        upload = multipart({"text": "is red", "top_k": "5"}, {"image": ("big.png", png(big), "image/png")})
        tally, before = Tally(), rss()
        sampler = RssSampler(server.pid)
        sampler.start()
        barrier = threading.Barrier(args.uploads)

        def upload_once():
            client = Client(port)
            barrier.wait()
            tally.add("large upload", *client.request("/search/composed", *upload))

        threads = [threading.Thread(target=upload_once) for _ in range(args.uploads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        time.sleep(1.0)
        sampler.stop.set()
        sampler.join()
        results["4 concurrent large uploads"] = {
            "upload_bytes": len(upload[0]), "image": f"{side} x {side} PNG", "rss_before_mb": before / 2**20,
            "rss_peak_mb": sampler.peak / 2**20, "rss_after_mb": rss() / 2**20, **tally.summary()}
        print(json.dumps(results["4 concurrent large uploads"], indent=1))
    finally:
        stop_server(server)

    # 3b. the same probe against the service as it was: generation under the model's lock.
    baseline = ("import sys; from unifashion.serving.app import ServiceSettings, serve; "
                "serve(sys.argv[1], sys.argv[2], port=int(sys.argv[3]), threads=1, "
                "settings=ServiceSettings(generation_lane=False))")
    server, port, _ = start_server([sys.executable, "-c", baseline, str(index_dir), str(model_dir)], port_last=True)
    try:
        results["3b probe, generation under the model lock"] = probe_during_generation(port, text_body,
                                                                                       generate_body)
        print(json.dumps(results["3b probe, generation under the model lock"], indent=1))
    finally:
        stop_server(server)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    out.with_suffix(".md").write_text(markdown(results))
    print(f"wrote {out} and {out.with_suffix('.md')}")


def mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def markdown(results: dict) -> str:
    config = results["config"]
    lines = [
        "# Service soak (loopback, `unifashion serve`, the tiny preset)",
        "",
        f"{results['machine']['cpus']} CPU cores, load average at start "
        f"{[round(x, 2) for x in results['machine']['load_average_at_start']]}; the service on 1 torch thread "
        f"with its default limits, over {config['items']} items; clients in one other process. "
        f"Phases 1-2: {config['text_clients']} text-search and {config['composed_clients']} composed-search "
        f"clients, back to back, {config['duration']:g} s each; generation {config['steps']} steps. "
        "Errors: answers other than 200 and the documented 503 + Retry-After.",
        "",
        "| phase | kind | requests | ok | 503 | errors | p50 ms | p99 ms | RSS before MB | RSS after MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for phase in ("1 searches", "2 searches + one generating", "3 probe during a generation",
                  "3b probe, generation under the model lock", "4 concurrent large uploads"):
        data = results[phase]
        for kind, row in data.items():
            if not isinstance(row, dict):
                continue
            lines.append(f"| {phase} | {kind} | {row['requests']} | {row['ok']} | {row['busy_503']} | "
                         f"{row['errors']} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
                         f"{mb(data.get('rss_before_mb'))} | {mb(data.get('rss_after_mb'))} |")
    uploads = results["4 concurrent large uploads"]
    lines += ["", f"Concurrent large uploads: {config['uploads']} at once of a {uploads['image']} "
                  f"({uploads['upload_bytes']:,} bytes each): server RSS {uploads['rss_before_mb']:.0f} MB "
                  f"before, peak {uploads['rss_peak_mb']:.0f} MB (sampled every 20 ms), "
                  f"{uploads['rss_after_mb']:.0f} MB after.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
