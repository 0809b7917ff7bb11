"""`make demo`: start the real Ray Serve app on 127.0.0.1 with the embedded CPU engines, run
all three job types on the shipped samples over HTTP, check the outputs with ffprobe, and
print where they are.

The demo's settings are the defaults with its own folders under var/demo, whatever the shell
holds: R2_*, PF_API_KEY, PF_STORAGE_DIR, proxies etc. are for `make serve`, never the demo.

    python -m serve_app.demo [--port 8000] [--keep-serving]
"""
from __future__ import annotations

import argparse
import base64
import os
import sys
import threading
import time
from pathlib import Path

import httpx

from core.settings import REPO_ROOT, Settings

SAMPLES = REPO_ROOT / "samples"
DEMO_HOME = REPO_ROOT / "var" / "demo"
ENDPOINT = "local"


def demo_settings(port: int) -> dict:
    """Every setting, as overrides every replica applies over its environment: local storage,
    no API key, no endpoint pin, no model weights (the embedded engines), default limits."""
    return Settings(storage="local", storage_dir=DEMO_HOME / "store",
                    models_dir=DEMO_HOME / "models", personas_dir=DEMO_HOME / "personas",
                    cache_dir=DEMO_HOME / "cache",
                    public_base_url=f"http://127.0.0.1:{port}").model_dump(mode="json")


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def jobs(run_tag: str) -> list[dict]:
    portrait, voice = b64(SAMPLES / "portrait.png"), b64(SAMPLES / "voice.wav")
    return [
        {"job_type": "lipsync_only", "job_id": f"demo-lipsync-{run_tag}", "image": portrait,
         "audio": voice, "quality": "fast"},
        {"job_type": "video_render", "job_id": f"demo-render-{run_tag}", "image": portrait,
         "audio": voice, "music_url": b64(SAMPLES / "music.wav"),
         "sfx_tracks": [{"url": b64(SAMPLES / "click.wav"), "start_time": 1.0, "volume": 0.8}],
         "captions": [{"text": "Hi! I'm your new persona.", "start": 0.3, "end": 2.5},
                      {"text": "Rendered on a CPU, honestly labelled.", "start": 2.8, "end": 5.5}],
         "format": {"width": 720, "height": 1280, "fps": 30}, "quality": "draft"},
        {"job_type": "persona_build", "persona_id": f"demo-persona-{run_tag}",
         "primary_image": portrait, "archetype": "friendly astronaut",
         "takes_to_generate": [{"emotion": "happy", "angle": "front", "intensity": 0.5},
                               {"emotion": "neutral", "angle": "closeup", "intensity": 0.3}]},
    ]


class PeakMemory(threading.Thread):
    """Peak memory of this process and all its descendants (the whole local Ray cluster),
    sampled every SAMPLE_S. Each process counts its PSS (shared pages split between the processes
    that map them), so libraries and Ray's shared object store are not counted once per worker.
    (Reading PSS costs the kernel a page-table walk per process: hence not more often.)"""

    SAMPLE_S = 1.0

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = 0
        self._done = threading.Event()

    def run(self):
        import psutil

        me = psutil.Process()
        while not self._done.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_full_info().pss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._done.wait(self.SAMPLE_S)

    def stop(self):
        self._done.set()


def poll(client: httpx.Client, base: str, ids: list, final: dict, t_start: float) -> float | None:
    """Poll until every job in `ids` is final; returns the time the first one completed."""
    first_done, shown = None, {}
    while len(final) < len(ids):
        time.sleep(0.5)
        for job_type, job_id in ids:
            if job_id in final:
                continue
            st = client.get(f"{base}/status/{job_id}").json()
            if st["status"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"):
                final[job_id] = st
                if st["status"] == "COMPLETED" and first_done is None:
                    first_done = time.monotonic() - t_start
                print(f"  {job_type:<14} {job_id:<28} {st['status']}", flush=True)
                continue
            line = (f"  {job_type:<14} {job_id:<28} {st['status']:<11} "
                    f"{st.get('stage') or '':<20} {100 * st.get('progress', 0):3.0f}%")
            if shown.get(job_id) != line:
                shown[job_id] = line
                print(line, flush=True)
    return first_done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--keep-serving", action="store_true", help="leave the service up at the end")
    args = ap.parse_args(argv)

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TMPDIR", "/tmp/pf-ray")
    memory = PeakMemory()
    memory.start()
    t_start = time.monotonic()

    import ray
    from ray import serve

    from media.ffmpeg import probe
    from serve_app.app import build_app

    # 1. A local Ray (isolated: never attach to another cluster on this machine) + the app.
    print("starting Ray and the Serve app on 127.0.0.1 (embedded CPU engines)...", flush=True)
    ray.init(address="local", num_cpus=os.cpu_count() or 2, include_dashboard=False,
             log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(build_app({"profile": "local", "settings": demo_settings(args.port)}),
              name="personaforge", route_prefix="/")
    base = f"http://127.0.0.1:{args.port}/v2/{ENDPOINT}"
    print(f"up in {time.monotonic() - t_start:.1f}s: {base}", flush=True)

    # 2. Submit: lipsync_only + persona_build + video_render, all at once.
    tag = time.strftime("%H%M%S")
    client = httpx.Client(timeout=120, trust_env=False)  # 127.0.0.1 never goes via a proxy
    ids, asked = [], {}
    for job in jobs(tag):
        r = client.post(f"{base}/run", json={"input": job})
        r.raise_for_status()
        ids.append((job["job_type"], r.json()["id"]))
        asked[ids[-1][1]] = job.get("format")
        print(f"  submitted {job['job_type']:<14} id={ids[-1][1]}", flush=True)

    # 3. Poll until every job is final, printing stage and progress as they change.
    final: dict[str, dict] = {}
    first_done = poll(client, base, ids, final, t_start)
    # 4. A render on the persona's first take: only the face is redone (no upscale).
    persona = next(job_id for job_type, job_id in ids if job_type == "persona_build")
    if final[persona]["status"] == "COMPLETED":
        meta = final[persona]["output"]["metadata"]
        take_id = meta["base_takes"][0]["id"]
        job = {"job_type": "video_render", "job_id": f"demo-take-render-{tag}",
               "persona_id": meta["persona_id"], "take_id": take_id,
               "audio": b64(SAMPLES / "voice.wav"), "quality": "draft",
               "format": {"width": 720, "height": 1280, "fps": 25}}
        r = client.post(f"{base}/run", json={"input": job})
        r.raise_for_status()
        ids.append(("video_render", r.json()["id"]))
        asked[ids[-1][1]] = job["format"]
        print(f"  submitted video_render   id={ids[-1][1]} (on persona take {take_id})", flush=True)
        poll(client, base, ids, final, t_start)

    # 5. Check the media and say where it is.
    voice_s = probe(SAMPLES / "voice.wav").duration_s
    store = DEMO_HOME / "store"
    ok = True
    print("\nresults:")
    for job_type, job_id in ids:
        st = final[job_id]
        if st["status"] != "COMPLETED":
            ok = False
            print(f"  {job_type}: {st['status']}: {st.get('error')}")
            continue
        res = st["output"]
        meta = res["metadata"]
        print(f"  {job_type} ({res['duration_ms'] / 1000:.1f}s) engines={meta.get('engines')}")
        urls = list(res["output"].values()) + [t["video_url"] for t in meta.get("base_takes", [])]
        for url in urls:
            key = url.split("/files/", 1)[1].split("?", 1)[0]
            path = store / key
            line = f"    {url}\n      -> {path}"
            if path.suffix == ".mp4":
                info = probe(path)
                v = info.video
                line += f"  [{v.width}x{v.height} {v.fps:g}fps {info.duration_s:.2f}s]"
                if job_type != "persona_build" and abs(info.duration_s - voice_s) > 1 / v.fps + 1e-3:
                    ok = False
                    line += f"  DURATION MISMATCH vs voice {voice_s:.2f}s"
                fmt = asked.get(job_id)
                if fmt and (v.width, v.height, round(v.fps, 3)) != (
                        fmt["width"], fmt["height"], round(fmt["fps"], 3)):
                    ok = False
                    line += f"  FORMAT MISMATCH vs {fmt}"
            print(line)
    memory.stop()
    print(f"\ntime to first COMPLETED job from a cold start (Ray not running; measured by "
          f"polling every 0.5 s): {first_done or float('nan'):.1f}s")
    print(f"peak memory (this process + the local Ray cluster, PSS sampled every "
          f"{PeakMemory.SAMPLE_S:g} s): {memory.peak / 2**30:.2f} GiB")
    if args.keep_serving:
        print("serving until Ctrl-C")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    serve.shutdown()
    ray.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
