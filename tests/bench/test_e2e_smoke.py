"""bench/e2e.py --tiny, in process: every job type runs end to end through the in-process
service with the tiny injected engines, and each row's numbers hang together (stage seconds
from the job metadata, model seconds inside them, job / model at least 1). Never a wall-clock
limit: the numbers are checked against each other only."""
from __future__ import annotations

import json

import pytest

from bench.e2e import main

TINY_ENGINES = {"lipsync": "latentsync-tiny-random (float32, cpu)",
                "face_restore": "tiny-gfpgan (random)", "upscale": "tiny-x4",
                "takes": "liveportrait", "finisher": "ffmpeg (libx264, aac)"}
STAGES = {"lipsync_only": {"lipsync", "finisher"},
          "video_render": {"upscale", "lipsync", "face_restore", "finisher"},
          "persona_build": {"upscale", "lipsync", "face_restore", "finisher"}}
MODEL_STAGES = {"lipsync", "face_restore", "upscale"}
SLACK_S = 0.01   # stage seconds are rounded to ms, model seconds to 0.1 ms

pytestmark = pytest.mark.slow   # about a minute on 2 cores: it encodes every job's media


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    path = tmp_path_factory.mktemp("e2e") / "rows.json"
    rows = main(["--tiny", "--json", str(path)])
    return rows, json.loads(path.read_text())


def test_every_job_type_completes_with_the_tiny_engines(bench):
    rows, saved = bench
    assert saved["rows"] == rows and saved["device"] == "cpu"
    assert {r["job"] for r in rows} == set(STAGES)
    assert [(r["quality"], r["run"]) for r in rows if r["job"] == "lipsync_only"] == [
        ("fast", "cold"), ("fast", "warm"), ("standard", "cold"), ("standard", "warm")]
    for r in rows:
        assert r["status"] == "COMPLETED", r
        assert r["error"] is None
        assert set(r["stage_s"]) == STAGES[r["job"]], r
        # the engines the job's metadata names: the injected tiny ones, never a fallback
        assert r["engines"], r
        for stage, engine in r["engines"].items():
            assert engine == TINY_ENGINES[stage], (r["job"], stage, engine)
    persona = next(r for r in rows if r["job"] == "persona_build")
    assert persona["engines"]["takes"] == "liveportrait"


def test_model_seconds_sit_inside_their_stages(bench):
    rows, _ = bench
    for r in rows:
        assert all(s > 0 for s in r["stage_s"].values()), r
        # every network stage of the job was timed, and only those
        assert set(r["model_s"]) == set(r["stage_s"]) & MODEL_STAGES, r
        for stage, model in r["model_s"].items():
            assert 0 < model <= r["stage_s"][stage] + SLACK_S, (r["job"], stage, r)
        assert r["ratio"] >= 1.0, r
        assert r["ratio"] == pytest.approx(r["wall_s"] / sum(r["model_s"].values()), abs=0.01)
        assert r["peak_gib"] is None       # CPU: no GPU memory to report


def test_the_checks_judge_the_rows_they_are_given(bench):
    rows, saved = bench
    names = [c["check"] for c in saved["checks"]]
    # tiny: no targets, the first job against its warm run, lipsync_only's presets (warm)
    assert names == ["first job (lipsync_only fast) / warm", "lipsync_only presets in order (warm)"]
    first = saved["checks"][0]
    assert float(first["measured"]) == pytest.approx(rows[0]["wall_s"] / rows[1]["wall_s"], abs=0.01)


def test_checks_fail_what_is_out_of_order_or_over_target():
    from bench.e2e import Row, acceptance

    def row(job, quality, run, wall):
        return Row(job=job, quality=quality, run=run, status="COMPLETED", wall_s=wall)

    rows = [row("lipsync_only", "fast", "cold", 9.0), row("lipsync_only", "fast", "warm", 4.0),
            row("lipsync_only", "standard", "warm", 3.0), row("lipsync_only", "high", "warm", 6.0),
            row("video_render", "standard", "warm", 7.5), row("video_render", "premium", "warm", 12.5)]
    got = {name: holds for name, _, holds in acceptance(rows, targets=True)}
    # a first job that failed fast is no start-up measure at all
    failed_first = [Row(**{**vars(rows[0]), "status": "FAILED"}), *rows[1:]]
    assert not any(n.startswith("first job") for n, _, _ in acceptance(failed_first, targets=False))
    assert got == {"first job (lipsync_only fast) / warm": False,         # 2.25 > 1.5
                   "lipsync_only presets in order (warm)": False,          # fast 4.0 > standard 3.0
                   "video_render presets in order (warm)": True,
                   "lipsync_only standard warm <= 3.5 s": True,
                   "video_render standard warm <= 8 s": True,
                   "video_render premium warm <= 12 s": False}
