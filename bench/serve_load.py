"""Jobs at once under Ray Serve: the production layout on this host, measured from outside.

The app runs as production deploys it (serve_app.app:build_app, profile production: LipSync 0.5
+ FaceRestore 0.25 + Upscale 0.25 of a GPU, a CPU Finisher, autoscaling 1..10, each GPU replica
capping its memory at its share), on a local Ray with this host's GPUs, behind Serve's HTTP
proxy on 127.0.0.1. A client submits video_render jobs over HTTP, as a user would:

* closed loop (`--concurrency 1,2,4`): that many jobs at once, after one warm-up job; per level
  the wall time until the last ends, its ratio to one job, jobs per GPU-hour and the cost per job
  at the card's RunPod price;
* open loop (`--rates 2,4,8`, jobs per minute, `--rate-seconds` each): arrivals at rising rates;
  p50 / p95 job time and 429s per rate (issue 22's load generator).

Meanwhile a sampler records, every second, the replicas of each deployment (Serve's own count,
so autoscaling up and down shows), and on a GPU every replica process's memory as nvidia-smi
counts it (the CUDA context included, which PyTorch's allocator cap does not see), against its
deployment's share of the card: the check that fractional GPUs, which do not isolate memory,
stay inside their shares.

    python bench/serve_load.py                                  # GPU: full-size random weights
    python bench/serve_load.py --rates 2,4,8 --rate-seconds 120  # open loop, autoscaling
    python bench/serve_load.py --embedded --concurrency 1,2      # CPU smoke: embedded engines

GPU mode writes (or reuses, --models-dir) the full-size random weights of bench/e2e.py in the
official layouts and runs in production mode (a missing model fails the start, never a silent
fallback). --embedded runs the no-weights engines on the CPU: it proves the harness, not speed.
The last line printed is the JSON of everything.
"""
from __future__ import annotations

import argparse
import os
import math
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.e2e import (b64, emit, portrait_face_box, portrait_png, speech_wav,  # noqa: E402
                       write_full_weights)

REPO = Path(__file__).resolve().parents[1]
APP = "pf"
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
# RunPod serverless, flex workers, USD per GPU-second (docs.runpod.io/serverless/pricing, read
# 2026-12). The seed product ran on RunPod, mostly on L40S.
PRICE_PER_GPU_S = {"H200": 0.00155, "H100": 0.00116, "A100": 0.00076, "L40S": 0.00053,
                   "L40": 0.00053, "A40": 0.00034, "L4": 0.00019}
# Issue 20's acceptance: n jobs at once finish within this many times one job.
CONCURRENCY_LIMITS = {2: 1.4, 4: 2.5}


def deployment_shares(config: Path = REPO / "serve_config.yaml") -> dict[str, float]:
    """GPU share of each deployment as serve_config.yaml (production) declares it."""
    app = yaml.safe_load(config.read_text())["applications"][0]
    return {d["name"]: float(d.get("ray_actor_options", {}).get("num_gpus", 0.0))
            for d in app["deployments"]}


def price_per_gpu_s(gpu_name: str | None) -> tuple[str, float] | None:
    """(card, USD per GPU-second) for a device name (the card's name as a word of it, so an
    "RTX A4000" is not an A40); None if unknown."""
    if not gpu_name:
        return None
    words = re.findall(r"[A-Z0-9]+", gpu_name.upper())
    for card in sorted(PRICE_PER_GPU_S, key=len, reverse=True):
        if card in words:
            return card, PRICE_PER_GPU_S[card]
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- the sampler --------------------------------------------------------------------------

@dataclass
class Samples:
    replicas: list[tuple[float, dict[str, int]]] = field(default_factory=list)  # (t, {dep: n})
    peak_mib: dict[int, float] = field(default_factory=dict)      # pid -> peak MiB (nvidia-smi)
    pid_gpu: dict[int, str] = field(default_factory=dict)         # pid -> GPU uuid
    pid_deployment: dict[int, str] = field(default_factory=dict)  # pid -> deployment


def _serve_replicas() -> dict[str, int]:
    from ray import serve

    status = serve.status().applications.get(APP)
    if status is None:
        return {}
    return {name: d.replica_states.get("RUNNING", 0) for name, d in status.deployments.items()}


def _replica_pids() -> dict[int, str]:
    """pid -> deployment of every live Serve replica actor (GCS actor table)."""
    from ray._private import state

    out = {}
    for info in state.actors().values():
        name = info.get("ActorClassName", "")
        if info.get("State") == "ALIVE" and name.startswith(f"ServeReplica:{APP}:"):
            out[int(info["Pid"])] = name.rsplit(":", 1)[1]
    return out


def gpu_processes() -> list[tuple[int, str, float]]:
    """(pid, GPU uuid, used MiB) of every compute process, or [] without nvidia-smi."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,gpu_uuid,used_memory",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit():
            rows.append((int(parts[0]), parts[1], float(parts[2])))
    return rows


def gpu_cards() -> dict[str, tuple[int, float]]:
    """GPU uuid -> (index, total MiB), or {} without nvidia-smi."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=uuid,index,memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    cards = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            cards[parts[0]] = (int(parts[1]), float(parts[2]))
    return cards


class Sampler(threading.Thread):
    def __init__(self, every_s: float = 1.0):
        super().__init__(daemon=True, name="bench-sampler")
        self.every_s, self.samples, self.t0 = every_s, Samples(), time.monotonic()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.every_s)

    def sample(self) -> None:
        s = self.samples
        try:
            s.replicas.append((round(time.monotonic() - self.t0, 1), _serve_replicas()))
            s.pid_deployment.update(_replica_pids())
        except Exception:  # noqa: BLE001 - a sample missed while Serve is busy is no failure
            pass
        for pid, uuid, mib in gpu_processes():
            s.peak_mib[pid] = max(s.peak_mib.get(pid, 0.0), mib)
            s.pid_gpu[pid] = uuid

    def stop(self) -> Samples:
        self._stop_event.set()
        self.join(timeout=30)
        self.sample()
        return self.samples


def memory_report(samples: Samples, shares: dict[str, float]) -> list[dict]:
    """Per GPU process: its card, deployment ("?" when no replica has its pid, e.g. nvidia-smi
    showing host pids in a container), share, peak MiB and whether it held (None: unknown)."""
    cards = gpu_cards()
    rows = []
    for pid, peak in sorted(samples.peak_mib.items()):
        dep = samples.pid_deployment.get(pid, "?")
        index, total = cards.get(samples.pid_gpu.get(pid, ""), (-1, 0.0))
        share = shares.get(dep, 0.0)
        limit = share * total if share and total else None
        rows.append({"pid": pid, "gpu": index, "deployment": dep, "share": share,
                     "peak_mib": round(peak), "share_mib": None if limit is None else round(limit),
                     "holds": None if limit is None else peak <= limit})
    return rows


def memory_check(memory: list[dict], shares: dict[str, float]) -> dict | None:
    """Every GPU deployment's replicas measured and inside their shares; None without a GPU
    process seen. Unmapped processes, or a GPU deployment with none measured, fail it."""
    if not memory:
        return None
    measured = [m for m in memory if m["holds"] is not None]
    unmeasured = sorted(d for d, share in shares.items() if share
                        and not any(m["deployment"] == d for m in measured))
    unmapped = [m["pid"] for m in memory if m["deployment"] == "?"]
    worst = max((m["peak_mib"] / m["share_mib"] for m in measured), default=None)
    text = (f"peak / share at most {worst:.3f}" if worst is not None else "nothing measured") + (
        f"; not measured: {unmeasured}" if unmeasured else "") + (
        f"; GPU pids of no replica: {unmapped}" if unmapped else "")
    return {"check": "every GPU replica inside its share", "measured": text,
            "holds": bool(measured) and not unmeasured and not unmapped
            and all(m["holds"] for m in measured)}


def replica_timeline(samples: Samples) -> list[tuple[float, dict[str, int]]]:
    """The samples where the replica counts changed (and the first)."""
    out, last = [], None
    for t, counts in samples.replicas:
        if counts and counts != last:
            out.append((t, counts))
            last = counts
    return out


# ---- the client ---------------------------------------------------------------------------

class Client:
    """Submits jobs, and polls every job it submitted from a thread of its own from then on, so
    a job's time is from its submission to its end (within a poll), whatever else the caller
    is doing (an open loop is still submitting)."""

    def __init__(self, port: int, body: dict, poll_s: float = 0.1):
        self.base = f"http://127.0.0.1:{port}/v2/bench"
        self.http = httpx.Client(timeout=120)
        self.body, self.poll_s, self.n = body, poll_s, 0
        self._pending: dict[str, float] = {}           # job id -> submit time
        self.done: dict[str, tuple[str, float]] = {}   # job id -> (status, seconds)
        self._lock = threading.Lock()
        self._poller = threading.Thread(target=self._poll, daemon=True, name="bench-poller")
        self._poller.start()

    def wait_ready(self, timeout_s: float) -> dict:
        t0 = time.monotonic()
        while True:
            try:
                health = self.http.get(f"{self.base}/health")
                if health.status_code == 200 and len(health.json().get("engines", {})) == 4:
                    return health.json()
            except httpx.HTTPError:
                pass
            if time.monotonic() - t0 > timeout_s:
                raise SystemExit(f"the app was not healthy within {timeout_s:.0f} s")
            time.sleep(1.0)

    def submit(self, tag: str) -> tuple[str | None, int]:
        """(job id, or None when refused; HTTP status). An accepted job is polled from now on."""
        self.n += 1
        job_id = f"bench-{tag}-{self.n}"
        t = time.monotonic()
        r = self.http.post(f"{self.base}/run", json={"input": {**self.body, "job_id": job_id}})
        if r.status_code != 200:
            return None, r.status_code
        with self._lock:
            self._pending[job_id] = t
        return job_id, r.status_code

    def _poll(self) -> None:
        http = httpx.Client(timeout=120)
        while True:
            with self._lock:
                pending = dict(self._pending)
            for job_id, t_submit in pending.items():
                try:
                    st = http.get(f"{self.base}/status/{job_id}").json()
                except (httpx.HTTPError, ValueError):
                    continue
                if st.get("status") in FINAL:
                    with self._lock:
                        self._pending.pop(job_id, None)
                        self.done[job_id] = (st["status"], time.monotonic() - t_submit)
            time.sleep(self.poll_s)

    def wait(self, job_ids: list[str], timeout_s: float) -> dict[str, tuple[str, float]]:
        """job id -> (final status, seconds from its submission to its end)."""
        t0 = time.monotonic()
        while True:
            with self._lock:
                if all(j in self.done for j in job_ids):
                    return {j: self.done[j] for j in job_ids}
            if time.monotonic() - t0 > timeout_s:
                raise SystemExit(f"jobs not final after {timeout_s:.0f} s: "
                                 f"{sorted(set(job_ids) - set(self.done))}")
            time.sleep(0.05)


def nearest_rank(sorted_values: list[float], q: float) -> float:
    """The q-quantile (0 < q <= 1) by nearest rank: the smallest value with at least q of the
    values at or below it."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


@dataclass
class Level:
    jobs: int
    wall_s: float
    job_s: list[float]
    statuses: list[str]
    completed: int = 0
    ratio: float | None = None            # wall / one job's wall (both all COMPLETED)
    jobs_per_gpu_hour: float | None = None  # completed jobs only
    usd_per_job: float | None = None


def closed_loop(client: Client, levels: list[int], gpus: int, price: float | None,
                timeout_s: float) -> list[Level]:
    """Each level: k jobs at once, until the last ends. One job always runs first (the ratios'
    base)."""
    levels = [1] + [k for k in levels if k != 1]
    out: list[Level] = []
    for k in levels:
        t0 = time.monotonic()
        ids = []
        for _ in range(k):
            job_id, code = client.submit(f"c{k}")
            if job_id is None:
                raise SystemExit(f"a job of the {k}-at-once level was refused ({code})")
            ids.append(job_id)
        done = client.wait(ids, timeout_s)
        wall = time.monotonic() - t0
        statuses = sorted(st for st, _ in done.values())
        completed = statuses.count("COMPLETED")
        level = Level(jobs=k, wall_s=round(wall, 3), completed=completed,
                      job_s=sorted(round(s, 3) for _, s in done.values()), statuses=statuses)
        if completed:
            per_gpu_hour = completed / wall * 3600 / max(gpus, 1)
            level.jobs_per_gpu_hour = round(per_gpu_hour, 1)
            if price is not None:
                level.usd_per_job = round(price * 3600 / per_gpu_hour, 5)
        one = out[0] if out else None
        if one is not None and one.completed == 1 and completed == k:
            level.ratio = round(wall / one.wall_s, 3)
        out.append(level)
        print(f"  {k} at once: {wall:7.2f} s" + (f" ({level.ratio:.2f}x one)" if level.ratio else "")
              + (f", {level.jobs_per_gpu_hour:g} jobs/GPU-hour" if level.jobs_per_gpu_hour else "")
              + (f", ${level.usd_per_job:.4f}/job" if level.usd_per_job is not None else "")
              + f", {statuses}", flush=True)
    return out


def open_loop(client: Client, rates: list[float], seconds: float, timeout_s: float) -> list[dict]:
    """Each rate: a job every 60/rate s for `seconds`; times of the completed jobs, refusals."""
    out = []
    for rate in rates:
        gap = 60.0 / rate
        ids, codes = [], []
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            job_id, code = client.submit(f"r{rate:g}")
            if job_id is None:
                codes.append(code)
            else:
                ids.append(job_id)
            time.sleep(max(0.0, t0 + (len(ids) + len(codes)) * gap - time.monotonic()))
        done = client.wait(ids, timeout_s)
        times = sorted(s for st, s in done.values() if st == "COMPLETED")
        row = {"rate_per_min": rate, "submitted": len(ids) + len(codes),
               "refused_429": codes.count(429), "refused_other": len(codes) - codes.count(429),
               "completed": len(times),
               "failed": sum(st != "COMPLETED" for st, _ in done.values()),
               "p50_s": round(nearest_rank(times, 0.5), 2) if times else None,
               "p95_s": round(nearest_rank(times, 0.95), 2) if times else None}
        out.append(row)
        print(f"  {rate:g}/min for {seconds:g} s: {row}", flush=True)
    return out


# ---- main ---------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embedded", action="store_true",
                   help="CPU smoke: no weights, the embedded engines, a small format")
    p.add_argument("--concurrency", default="1,2,4", help="closed loop: jobs at once, per level")
    p.add_argument("--rates", default="", help="open loop: jobs per minute, per step")
    p.add_argument("--rate-seconds", type=float, default=120.0)
    p.add_argument("--quality", default="standard")
    p.add_argument("--voice-seconds", type=float, default=None)
    p.add_argument("--models-dir", type=Path, default=None)
    p.add_argument("--gpus", type=int, default=None, help="GPUs for Ray (default: all visible)")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="pf-serve-load-", dir="/tmp"))
    try:
        return _run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path) -> dict:
    import ray
    import torch
    from ray import serve

    from serve_app.app import build_app

    gpus = args.gpus if args.gpus is not None else torch.cuda.device_count()
    if not args.embedded and gpus == 0:
        raise SystemExit("no CUDA device: run on a GPU, or pass --embedded (CPU smoke)")
    gpu_name = torch.cuda.get_device_name() if gpus else None
    priced = price_per_gpu_s(gpu_name)
    models_dir = args.models_dir or work / "models"
    if not args.embedded:
        write_full_weights(models_dir, "1.5")
    side, fmt = (256, {"width": 360, "height": 640, "fps": 25}) if args.embedded else \
        (None, {"width": 1080, "height": 1920, "fps": 30})
    voice = speech_wav(args.voice_seconds or (1.0 if args.embedded else 10.0), work / "voice.wav")
    png = portrait_png(side)
    body = {"job_type": "video_render", "image": b64(png), "audio": b64(voice.read_bytes()),
            "face_box": portrait_face_box(png), "quality": args.quality, "format": fmt}
    port = free_port()
    overrides = {"storage_dir": str(work / "store"), "cache_dir": str(work / "cache"),
                 "models_dir": str(models_dir), "personas_dir": str(work / "personas"),
                 "public_base_url": f"http://127.0.0.1:{port}", "production": not args.embedded,
                 "max_running_jobs": 32, "max_queued_jobs": 100}
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Ray's declared resources: the production layout's CPUs fit even on a small box (the
    # embedded smoke declares one GPU so the GPU shares schedule as they do on a card)
    ray.init(address="local", num_cpus=max(os.cpu_count() or 2, 8), num_gpus=gpus or 1,
             include_dashboard=False, log_to_driver=False)
    sampler = Sampler()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        t0 = time.monotonic()
        serve.run(build_app({"profile": "production", "settings": overrides}), name=APP,
                  route_prefix="/")
        client = Client(port, body)
        health = client.wait_ready(args.timeout)
        start_s = time.monotonic() - t0
        print(f"app up in {start_s:.1f} s on {gpus or 'no'} GPU(s) ({gpu_name or 'cpu'}); "
              f"engines: {health['engines']}", flush=True)
        sampler.start()
        # one job first: the replicas' first call (lazy imports, allocator growth) is not timed
        warm_id, code = client.submit("warm")
        if warm_id is None:
            raise SystemExit(f"the warm-up job was refused ({code})")
        print(f"warm-up job: {client.wait([warm_id], args.timeout)[warm_id]}", flush=True)
        levels = [int(k) for k in args.concurrency.split(",") if k]
        closed = closed_loop(client, levels, max(gpus, 1), priced[1] if priced else None,
                             args.timeout)
        rates = [float(r) for r in args.rates.split(",") if r]
        opened = open_loop(client, rates, args.rate_seconds, args.timeout) if rates else []
    finally:
        samples = sampler.stop() if sampler.is_alive() else sampler.samples
        serve.shutdown()
        ray.shutdown()
    shares = deployment_shares()
    memory = memory_report(samples, shares)
    # (a level with a failed job has no ratio: it fails its check)
    checks = [{"check": f"{k} at once <= {CONCURRENCY_LIMITS[k]:g}x one", "measured": lv.ratio,
               "holds": lv.ratio is not None and lv.ratio <= CONCURRENCY_LIMITS[k]}
              for lv in closed for k in [lv.jobs] if k in CONCURRENCY_LIMITS]
    if (held := memory_check(memory, shares)) is not None:
        checks.append(held)
    summary = {"gpus": gpus, "gpu": gpu_name, "price_per_gpu_s": priced,
               "engines": health["engines"], "start_s": round(start_s, 1),
               "closed_loop": [asdict(lv) for lv in closed], "open_loop": opened,
               "replicas": replica_timeline(samples), "memory": memory, "checks": checks}
    print("\nreplicas per deployment (when the count changed):")
    for t, counts in summary["replicas"]:
        print(f"  t={t:7.1f} s  {counts}")
    print("GPU memory per replica process (nvidia-smi peak vs its share):"
          + ("" if memory else " no GPU processes seen"))
    for m in memory:
        print(f"  gpu {m['gpu']} {m['deployment']:<12} pid {m['pid']:<8} {m['peak_mib']:>7} MiB"
              f" / share {m['share']:g} = {m['share_mib']} MiB: "
              f"{ {True: 'ok', False: 'OVER', None: 'unknown'}[m['holds']] }")
    emit(summary, args.json)
    return summary


if __name__ == "__main__":
    main()
