"""The rollout files are valid for the Ray they ship with and agree with the code."""
from __future__ import annotations

import time
from pathlib import Path

import yaml

from serve_app.app import AppArgs, build_app

ROOT = Path(__file__).resolve().parents[2]
GPU = {"LipSync": 0.5, "FaceRestore": 0.25, "Upscale": 0.25}


def app_deployments(args: dict) -> dict:
    app = build_app(args)
    found, stack = {}, [app._bound_deployment]
    while stack:
        d = stack.pop()
        found[d.name] = d
        stack += [a._bound_deployment if hasattr(a, "_bound_deployment") else a
                  for a in d.init_args if hasattr(a, "_bound_deployment")]
    return found


def test_serve_config_is_valid_and_matches_the_app():
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(raw) if hasattr(ServeDeploySchema, "model_validate") \
        else ServeDeploySchema.parse_obj(raw)
    app = schema.applications[0]
    assert app.import_path == "serve_app.app:build_app"
    AppArgs.model_validate(app.args)
    by_name = {d["name"]: d for d in raw["applications"][0]["deployments"]}
    assert set(by_name) == set(app_deployments(app.args)) == {
        "Studio", "LipSync", "FaceRestore", "Upscale", "Finisher"}
    for name, d in by_name.items():
        auto = d["autoscaling_config"]
        assert (auto["min_replicas"], auto["max_replicas"]) == (1, 10)
        assert d["ray_actor_options"].get("num_gpus", 0) == GPU.get(name, 0)
        if name in GPU:
            assert d["max_ongoing_requests"] == 1
        # a rollout must never cut a running job short (Studio drains its job tasks itself)
        assert d["graceful_shutdown_timeout_s"] > float(app.runtime_env["env_vars"]["PF_JOB_TIMEOUT_S"])
    running = int(app.runtime_env["env_vars"]["PF_MAX_RUNNING_JOBS"])
    # one Studio replica keeps every GPU stage's 10 replicas busy
    assert running >= max(by_name[n]["autoscaling_config"]["max_replicas"] for n in GPU)
    assert sum(GPU.values()) == 1.0


def test_decorator_defaults_equal_serve_config():
    """`serve run serve_app.app:build_app` without the file gets the same resources."""
    raw = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    by_name = {d["name"]: d for d in raw["applications"][0]["deployments"]}
    for name, dep in app_deployments({"profile": "production"}).items():
        opts = dep._deployment_config
        assert dep.ray_actor_options.get("num_gpus", 0) == by_name[name]["ray_actor_options"].get("num_gpus", 0)
        assert opts.max_ongoing_requests == by_name[name]["max_ongoing_requests"]
        assert opts.graceful_shutdown_timeout_s == by_name[name]["graceful_shutdown_timeout_s"]


def test_local_profile_requests_no_gpu_and_fits_two_cores():
    raw = yaml.safe_load((ROOT / "serve_config.local.yaml").read_text())
    assert raw["http_options"]["host"] == "127.0.0.1"
    deps = app_deployments(raw["applications"][0]["args"])
    assert all(d.ray_actor_options.get("num_gpus", 0) == 0 for d in deps.values())
    assert sum(d.ray_actor_options["num_cpus"] for d in deps.values()) <= 2


def test_cluster_yaml_validates_against_ray_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(cfg))  # fills Ray's defaults, then the JSON schema
    gpu = cfg["available_node_types"]["gpu_l40s"]
    assert gpu["max_workers"] == 10 and gpu["node_config"]["InstanceType"].startswith("g6e")
    assert any("/workspace" in o for o in cfg["docker"]["run_options"])


def test_every_wait_of_a_request_is_ordered_inside_the_proxy_limit():
    """Serve's request_timeout_s and PF_REQUEST_TIMEOUT_S agree in each rollout file, and the
    input-fetch budget and runsync's wait both end, with the margin to spare, inside it: the
    client gets our JSON answer, never the proxy's plain-text 408."""
    from core.settings import Settings
    from serve_app.service import RESPONSE_MARGIN_S, StudioService

    for name in ("serve_config.yaml", "serve_config.local.yaml"):
        raw = yaml.safe_load((ROOT / name).read_text())
        proxy = raw["http_options"]["request_timeout_s"]
        env = raw["applications"][0].get("runtime_env", {}).get("env_vars", {})
        ours = float(env.get("PF_REQUEST_TIMEOUT_S", Settings().request_timeout_s))
        assert ours == proxy, name
        settings = Settings(request_timeout_s=ours)
        service = StudioService(settings, call=None)
        assert service.fetch_budget_s + RESPONSE_MARGIN_S < proxy
        assert service.runsync_wait(None, started=time.monotonic()) + RESPONSE_MARGIN_S <= proxy
