"""cluster.yaml: a valid Ray cluster-launcher config that runs our image on every node (GPU and
the /workspace volume on the workers), installs nothing at boot and keeps what it did right
(the shared volume, secrets from SSM as an env file, the models download, auth mode)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler

from tests.deploy.helpers import ROOT, load_yaml


@pytest.fixture(scope="module")
def schema() -> dict:
    # The schema `ray up` validates against, from the Ray that requirements.txt pins.
    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


@pytest.fixture
def cluster() -> dict:
    return load_yaml(ROOT / "cluster.yaml")


def all_commands(cluster: dict) -> list[str]:
    keys = [k for k in cluster if k.endswith("_commands")]
    return [c for k in keys for c in cluster[k]]


def test_validates_against_rays_cluster_schema(cluster, schema):
    jsonschema.validate(cluster, schema)


def test_a_typo_in_the_docker_section_is_refused(cluster, schema):
    bad = copy.deepcopy(cluster)
    bad["docker"]["run_option"] = bad["docker"].pop("run_options")
    with pytest.raises(jsonschema.ValidationError, match="run_option"):
        jsonschema.validate(bad, schema)


def test_every_node_runs_our_image(cluster):
    docker = cluster["docker"]
    name, _, tag = docker["image"].rpartition(":")
    assert not name.startswith("rayproject/"), "the nodes must run the PersonaForge image"
    # A release tag: `latest` would let a node that joins later run different code.
    assert name == name.lower() and tag and tag != "latest" and "/" not in tag
    # One image: no per-role image that could differ from it.
    assert "head_image" not in docker and "worker_image" not in docker
    for node_type in cluster["available_node_types"].values():
        assert "docker" not in node_type or "worker_image" not in node_type["docker"]
    assert docker["container_name"]


def test_gpu_on_workers_volume_and_secrets_everywhere(cluster):
    docker = cluster["docker"]
    common = docker["run_options"]
    assert "-v /workspace:/workspace" in common
    assert any(o.startswith("--env-file ") for o in common)
    assert "--gpus all" in docker["worker_run_options"]
    # The CPU head has no NVIDIA device: a GPU flag there would stop its container starting.
    assert not any("--gpus" in o for o in common + docker.get("head_run_options", []))


def test_nothing_is_installed_at_boot(cluster):
    for command in all_commands(cluster):
        for installer in ("pip install", "install.sh", "system_deps", "conda install"):
            assert installer not in command, command
    # The code comes with the image, not from the laptop.
    assert "." not in cluster.get("file_mounts", {}).values()


def test_keeps_volume_models_and_ray_start(cluster):
    init = " ".join(cluster["initialization_commands"])
    assert "mount -t nfs4" in init and "/workspace" in init
    assert "personaforge.env" in init
    head_setup = " ".join(cluster["head_setup_commands"])
    assert "python download_models.py --models-dir /workspace/models" in head_setup
    dockerfile = (ROOT / "Dockerfile").read_text()
    workdir = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("WORKDIR ")][-1]
    assert f"cd {workdir}" in head_setup
    assert "torch.cuda.is_available()" in " ".join(cluster["worker_setup_commands"])
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(cluster[key])
        assert "RAY_AUTH_MODE=disabled" in start and "ulimit -n 65536" in start
    head = cluster["available_node_types"][cluster["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
