"""bench/serve_load.py --embedded: the production Serve layout (declared GPU shares, autoscaling
config, HTTP proxy on 127.0.0.1) takes video_renders one, then two at once, then at a rate, and
the numbers it prints hang together. Never a wall-clock limit: the harness is what is tested
here; the GPU numbers come from a run on a GPU."""
from __future__ import annotations

import json

import pytest

from bench.serve_load import (Samples, deployment_shares, main, memory_check, memory_report,
                              nearest_rank, price_per_gpu_s, replica_timeline)
from serve_app.app import _GPUS


@pytest.mark.slow
def test_the_production_layout_serves_jobs_at_once_and_at_a_rate(tmp_path, ray_env):
    path = tmp_path / "serve.json"
    summary = main(["--embedded", "--concurrency", "1,2", "--rates", "20", "--rate-seconds", "5",
                    "--json", str(path)])
    assert json.loads(path.read_text()) == json.loads(json.dumps(summary))
    assert summary["engines"]["lipsync"].startswith("embedded")
    one, two = summary["closed_loop"]
    assert (one["jobs"], two["jobs"]) == (1, 2)
    assert one["statuses"] == ["COMPLETED"] and two["statuses"] == ["COMPLETED"] * 2
    assert (one["completed"], two["completed"]) == (1, 2)
    assert two["ratio"] == pytest.approx(two["wall_s"] / one["wall_s"], abs=0.01)
    for level in (one, two):
        assert max(level["job_s"]) <= level["wall_s"] + 0.5
        assert level["jobs_per_gpu_hour"] == pytest.approx(level["jobs"] / level["wall_s"] * 3600, rel=0.01)
        assert level["usd_per_job"] is None  # no card, no price
    [rate] = summary["open_loop"]
    assert rate["submitted"] >= 2 and rate["completed"] == rate["submitted"] - rate["refused_429"]
    # polled while the loop still submitted: a job's time is its own, not the window's
    assert rate["p95_s"] < 5 + max(one["wall_s"], two["wall_s"]) * 3
    assert rate["p50_s"] <= rate["p95_s"]
    # every deployment of the app was seen running, one replica each or more
    seen = {name for _, counts in summary["replicas"] for name, n in counts.items() if n >= 1}
    assert seen == {"Studio", "LipSync", "FaceRestore", "Upscale", "Finisher"}
    assert summary["memory"] == []  # no GPU: nothing to measure, and nothing claimed
    assert [c["check"] for c in summary["checks"]] == ["2 at once <= 1.4x one"]


def test_shares_prices_and_the_memory_verdict(monkeypatch):
    import bench.serve_load as sl

    shares = deployment_shares()
    assert {k: v for k, v in shares.items() if v} == _GPUS  # serve_config.yaml = the app's layout
    assert price_per_gpu_s("NVIDIA H100 80GB HBM3") == ("H100", 0.00116)
    assert price_per_gpu_s("NVIDIA L40S") == ("L40S", 0.00053)  # not L40's row by accident
    assert price_per_gpu_s("NVIDIA H200")[0] == "H200" and price_per_gpu_s("Tesla T4") is None
    assert price_per_gpu_s("NVIDIA RTX A4000") is None        # not the A40's price
    assert [nearest_rank(list(range(1, 21)), q) for q in (0.5, 0.95, 1.0)] == [10, 19, 20]
    monkeypatch.setattr(sl, "gpu_cards", lambda: {"GPU-a": (0, 80000.0)})
    samples = Samples(peak_mib={11: 39000.0, 12: 21000.0}, pid_gpu={11: "GPU-a", 12: "GPU-a"},
                      pid_deployment={11: "LipSync", 12: "FaceRestore"},
                      replicas=[(0.0, {"LipSync": 1}), (1.0, {"LipSync": 1}), (2.0, {"LipSync": 2}),
                                (3.0, {"LipSync": 1})])
    rows = {r["deployment"]: r for r in memory_report(samples, shares)}
    assert rows["LipSync"]["holds"] is True and rows["LipSync"]["share_mib"] == 40000
    assert rows["FaceRestore"]["holds"] is False  # 21000 MiB over a 0.25 share of 80000
    verdict = memory_check(memory_report(samples, shares), shares)
    assert verdict["holds"] is False and "not measured: ['Upscale']" in verdict["measured"]
    samples.peak_mib[13], samples.pid_gpu[13] = 5000.0, "GPU-a"   # a pid of no replica
    verdict = memory_check(memory_report(samples, shares), shares)
    assert "GPU pids of no replica: [13]" in verdict["measured"] and verdict["holds"] is False
    assert memory_check([], shares) is None
    assert replica_timeline(samples) == [(0.0, {"LipSync": 1}), (2.0, {"LipSync": 2}),
                                         (3.0, {"LipSync": 1})]
