"""The RunPod serverless worker: the official SDK's local test mode (`--test_input`) runs each job
type through our graphs on the embedded engines and returns the seed's output shape; progress is
reported while a job runs; refused inputs and a production replica without its models come back
as RunPod errors with our codes."""
from __future__ import annotations

import ast
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.jobs import JobStatus
from serve_app.inprocess import build_service
from serve_app.runpod_worker import handle
from tests.support.media import b64, small_portrait, speechlike

REPO = Path(__file__).resolve().parents[2]
FACE_BOX = [20, 10, 76, 80]  # the astronaut's face in the 96 px portrait
SEED_KEYS = {"success", "output", "metadata", "duration_ms"}


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    voice = speechlike(0.6, tmp_path_factory.mktemp("rp") / "voice.wav")
    return {"image": b64(small_portrait(96)), "audio": b64(voice.read_bytes())}


def jobs(media: dict) -> dict[str, dict]:
    return {
        "lipsync_only": {"job_type": "lipsync_only", "job_id": "rp-lipsync", "quality": "fast",
                         "image": media["image"], "audio": media["audio"], "face_box": FACE_BOX},
        "video_render": {"job_type": "video_render", "job_id": "rp-render", "quality": "draft",
                         "image": media["image"], "audio": media["audio"], "face_box": FACE_BOX,
                         "captions": [{"text": "Hello", "start": 0.0, "end": 0.5}],
                         "format": {"width": 180, "height": 320, "fps": 25}},
        "persona_build": {"job_type": "persona_build", "persona_id": "rp-persona",
                          "primary_image": media["image"], "face_box": FACE_BOX,
                          "archetype": "calm mentor",
                          "takes_to_generate": [{"emotion": "happy", "angle": "front",
                                                 "intensity": 0.6}]},
    }


def run_local(job_input: dict, home: Path) -> tuple[int, dict | None, str]:
    """`python -m serve_app.runpod_worker --test_input ...` as RunPod's SDK runs it locally."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PF_", "R2_", "RUNPOD_"))}
    env.update(PF_HOME=str(home), PF_PRODUCTION="0", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-m", "serve_app.runpod_worker", "--test_input",
                          json.dumps({"input": job_input})], cwd=home, env=env,
                         capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    marker = "Job result: "
    line = next((ln for ln in text.splitlines() if marker in ln), None)
    result = ast.literal_eval(line.split(marker, 1)[1]) if line else None  # the SDK logs a repr
    return out.returncode, result, text


@pytest.mark.slow
@pytest.mark.parametrize("job_type", ["lipsync_only", "video_render", "persona_build"])
def test_sdk_local_test_mode_runs_each_job_type(job_type, media, tmp_path):
    rc, result, text = run_local(jobs(media)[job_type], tmp_path)
    assert rc == 0, text[-3000:]
    out = result["output"]
    assert set(out) == SEED_KEYS and out["success"] is True
    assert out["duration_ms"] > 0 and "error" not in result
    meta = out["metadata"]
    if job_type == "persona_build":
        take = meta["base_takes"][0]
        assert take["id"] == "rp-persona_take_0" and take["duration"] > 0
        assert "reframer" in meta["engines"]["takes"]
    else:
        assert ".mp4" in out["output"]["video"]
        assert meta["job_id"] == jobs(media)[job_type]["job_id"]
        assert "embedded" in meta["engines"]["lipsync"]  # honest about the engine that ran
        if job_type == "video_render":
            assert out["output"]["thumbnail"] and meta["format"]["width"] == 180


def test_progress_is_reported_and_the_seed_shape_returned(settings, media):
    reports: list[dict] = []
    job = {"id": "rp-progress", "input": jobs(media)["lipsync_only"]}

    async def main():
        return await handle(job, build_service(settings), lambda j, u: reports.append(u))

    out = asyncio.run(main())
    assert set(out) == SEED_KEYS and out["success"] is True
    assert reports and all(0 <= r["progress"] <= 1 for r in reports)
    assert {r["status"] for r in reports} <= {JobStatus.IN_QUEUE.value, JobStatus.IN_PROGRESS.value}
    assert [r["progress"] for r in reports] == sorted(r["progress"] for r in reports)


def test_refused_input_and_production_without_models_are_runpod_errors(settings, media, tmp_path):
    bad = {"id": "rp-bad", "input": {**jobs(media)["lipsync_only"], "quality": "ultra"}}
    no_job_type = {"id": "rp-empty", "input": {"image": media["image"]}}
    production = settings.model_copy(update={"production": True})

    async def main():
        service = build_service(settings)
        return (await handle(bad, service), await handle(no_job_type, service),
                await handle({"id": "rp-prod", "input": jobs(media)["lipsync_only"]},
                             build_service(production)))

    bad_out, empty_out, prod_out = asyncio.run(main())
    assert bad_out["success"] is False and bad_out["error"].startswith("INVALID_INPUT")
    assert "quality" in bad_out["error"]
    assert empty_out["error"].startswith("INVALID_INPUT")
    assert prod_out["error"].startswith("NOT_READY")
    assert "latentsync-1.5/latentsync_unet.pt" in prod_out["error"]
    assert "python download_models.py" in prod_out["error"]
