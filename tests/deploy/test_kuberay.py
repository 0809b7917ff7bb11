"""deploy/kuberay: the RayService against KubeRay v1.7.0's CRD schema, its serve config against
serve_config.yaml, and the PVC, Job and Secret example for what the RayService expects of them.
No Kubernetes cluster here: the CRD's OpenAPI schema (tests/fixtures/kuberay) stands in for the
API server."""
from __future__ import annotations

import copy
import importlib
import subprocess
import sys

import jsonschema
import pytest
import yaml

from tests.deploy.helpers import (KUBERAY, ROOT, SECRET_ENV, containers, load_yaml,
                                  pod_template_schema, ray_pin, rayservice_errors,
                                  rayservice_pod_templates, secret_env_problems,
                                  serve_config_differences, strict)

RAYSERVICE = KUBERAY / "rayservice.yaml"
PVC = KUBERAY / "pvc.yaml"
JOB = KUBERAY / "download-models-job.yaml"
SECRET = KUBERAY / "secret.example.yaml"


@pytest.fixture
def rayservice() -> dict:
    return load_yaml(RAYSERVICE)


def serve_config_v2(manifest: dict) -> dict:
    return yaml.safe_load(manifest["spec"]["serveConfigV2"])


# ---- the CRD schema -------------------------------------------------------------------------

def test_rayservice_validates_against_the_crd_schema(rayservice):
    assert rayservice["apiVersion"] == "ray.io/v1" and rayservice["kind"] == "RayService"
    assert rayservice_errors(rayservice) == []


def _set(doc: dict, path: tuple, value) -> dict:
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def _drop(doc: dict, path: tuple) -> dict:
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return doc


HEAD = ("spec", "rayClusterConfig", "headGroupSpec")
WORKER = ("spec", "rayClusterConfig", "workerGroupSpecs", 0)


@pytest.mark.parametrize("mutate, where", [
    (lambda m: _drop(m, ("spec", "rayClusterConfig", "headGroupSpec")), "rayClusterConfig"),
    (lambda m: _set(m, HEAD + ("rayStartParam",), {}), "headGroupSpec"),                 # typo
    (lambda m: _set(m, WORKER + ("replicas",), "one"), "replicas"),                      # type
    (lambda m: _set(m, ("spec", "serveConfigV2"), {"applications": []}), "serveConfigV2"),  # not a string
    (lambda m: _set(m, HEAD + ("template", "spec", "containers", 0, "imagee"), "x"), "containers/0"),
    (lambda m: _drop(m, WORKER + ("template", "spec", "containers", 0, "name")), "containers/0"),
    (lambda m: _set(m, HEAD + ("rayStartParams", "num-cpus"), 4), "num-cpus"),           # must be a string
], ids=["no-head", "typo", "replicas-type", "serve-config-type", "unknown-container-field",
        "container-without-name", "ray-start-param-int"])
def test_a_broken_rayservice_fails_validation(rayservice, mutate, where):
    errors = rayservice_errors(mutate(rayservice))
    assert errors, "the mutated manifest should not validate"
    assert any(where in e for e in errors), errors


def test_the_schema_is_strict_only_where_kubernetes_is():
    # Fields KubeRay keeps as free-form (x-kubernetes-preserve-unknown-fields) stay open.
    schema = {"type": "object", "properties": {
        "typed": {"type": "object", "properties": {"a": {"type": "string"}}},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                 "properties": {"a": {"type": "string"}}},
        "map": {"type": "object", "additionalProperties": {"type": "string"}}}}
    v = jsonschema.Draft7Validator(strict(schema))
    assert not v.is_valid({"typed": {"b": "x"}})
    assert v.is_valid({"free": {"b": 1}, "map": {"any": "thing"}})


# ---- serve config: one source ---------------------------------------------------------------

def test_serve_config_v2_equals_serve_config_yaml(rayservice):
    mine = load_yaml(ROOT / "serve_config.yaml")
    assert serve_config_differences(mine, serve_config_v2(rayservice)) == [], \
        "deploy/kuberay/rayservice.yaml drifted from serve_config.yaml: run python scripts/sync_rayservice.py"


def test_drift_is_caught(rayservice):
    mine = load_yaml(ROOT / "serve_config.yaml")
    theirs = serve_config_v2(rayservice)
    lipsync = next(d for d in theirs["applications"][0]["deployments"] if d["name"] == "LipSync")
    lipsync["ray_actor_options"]["num_gpus"] = 1
    assert serve_config_differences(mine, theirs) == ["application 'personaforge' differs"]
    theirs = serve_config_v2(rayservice)
    theirs["http_options"]["port"] = 9000
    assert serve_config_differences(mine, theirs) == ["http_options differs"]


def test_both_serve_configs_pass_serves_own_schema(rayservice):
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema
    for config in (load_yaml(ROOT / "serve_config.yaml"), serve_config_v2(rayservice)):
        ServeDeploySchema.model_validate(config)
    # The same check refuses what Serve would refuse at deploy time.
    broken = serve_config_v2(rayservice)
    broken["proxy_location"] = "Everywhere"
    with pytest.raises(ValidationError):
        ServeDeploySchema.model_validate(broken)


def test_sync_script_is_up_to_date_and_repairs_drift(tmp_path):
    check = subprocess.run([sys.executable, "scripts/sync_rayservice.py", "--check"], cwd=ROOT,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    # A changed serve config: --check fails, a sync makes the two equal again and keeps the rest.
    config = tmp_path / "serve_config.yaml"
    config.write_text((ROOT / "serve_config.yaml").read_text().replace('"1800"', '"3600"'))
    manifest = tmp_path / "rayservice.yaml"
    manifest.write_text(RAYSERVICE.read_text())
    args = [sys.executable, "scripts/sync_rayservice.py", "--serve-config", str(config), "--manifest", str(manifest)]
    assert subprocess.run(args + ["--check"], cwd=ROOT, capture_output=True).returncode == 1
    assert subprocess.run(args, cwd=ROOT, capture_output=True).returncode == 0
    synced = load_yaml(manifest)
    assert serve_config_differences(load_yaml(config), serve_config_v2(synced)) == []
    assert synced["spec"]["rayClusterConfig"] == load_yaml(RAYSERVICE)["spec"]["rayClusterConfig"]
    assert rayservice_errors(synced) == []


# ---- cluster shape --------------------------------------------------------------------------

def test_ray_version_and_image_match_the_rest(rayservice):
    assert rayservice["spec"]["rayClusterConfig"]["rayVersion"] == ray_pin()
    cluster_image = load_yaml(ROOT / "cluster.yaml")["docker"]["image"]
    images = {c["image"] for t in rayservice_pod_templates(rayservice).values() for c in containers(t)}
    images |= {c["image"] for c in containers(load_yaml(JOB)["spec"]["template"])}
    assert images == {cluster_image}


def _gpus(container: dict) -> float:
    limits = container.get("resources", {}).get("limits", {})
    return float(limits.get("nvidia.com/gpu", 0))


def test_cpu_head_and_gpu_workers_that_fit_the_gpu_stages(rayservice):
    templates = rayservice_pod_templates(rayservice)
    head = templates.pop("head")
    assert all(_gpus(c) == 0 for c in containers(head))
    assert rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    assert templates, "no worker group"
    gpu_groups = {name: max(_gpus(c) for c in containers(t)) for name, t in templates.items()}
    assert all(g >= 1 for g in gpu_groups.values()), gpu_groups
    # One replica of each GPU stage must fit on one worker's GPUs.
    deployments = serve_config_v2(rayservice)["applications"][0]["deployments"]
    per_worker = sum(d.get("ray_actor_options", {}).get("num_gpus", 0) for d in deployments)
    assert 0 < per_worker <= min(gpu_groups.values())
    for group in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert rayservice["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is True


# ---- secrets, volume, job -------------------------------------------------------------------

def test_credentials_come_from_the_secret_by_reference(rayservice):
    secret = load_yaml(SECRET)
    for name, template in rayservice_pod_templates(rayservice).items():
        for c in containers(template):
            assert secret_env_problems(c) == [], name
            refs = {v["name"]: v["valueFrom"]["secretKeyRef"] for v in c.get("env", [])
                    if "secretKeyRef" in v.get("valueFrom", {})}
            assert set(SECRET_ENV) <= refs.keys(), f"{name}: missing {set(SECRET_ENV) - refs.keys()}"
            for var, ref in refs.items():
                assert ref["name"] == secret["metadata"]["name"]
                assert ref["key"] in secret["stringData"], var


def test_a_literal_credential_is_refused(rayservice):
    container = copy.deepcopy(rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0])
    container["env"].append({"name": "PF_API_KEY", "value": "hunter2"})
    container["env"].append({"name": "R2_BUCKET", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}})
    assert secret_env_problems(container) == [
        "ray-head: PF_API_KEY has a literal value", "ray-head: R2_BUCKET is not from a secretKeyRef"]


def test_secret_example_is_a_secret_with_placeholders_only():
    secret = load_yaml(SECRET)
    assert (secret["apiVersion"], secret["kind"], secret["type"]) == ("v1", "Secret", "Opaque")
    assert set(SECRET_ENV) <= secret["stringData"].keys()
    for key in ("R2_ACCESS_KEY", "R2_SECRET_KEY", "PF_API_KEY"):
        assert secret["stringData"][key] == "replace-me"
    ignored = (KUBERAY / ".gitignore").read_text().split()
    assert "secret.yaml" in ignored


def _claims(template: dict) -> dict[str, str]:
    """mountPath -> PVC name for each volume mount backed by a claim."""
    volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
    out = {}
    for c in containers(template):
        for m in c.get("volumeMounts", []):
            claim = volumes[m["name"]].get("persistentVolumeClaim")
            if claim:
                out[m["mountPath"]] = claim["claimName"]
    return out


def test_every_pod_mounts_the_workspace_claim(rayservice):
    pvc = load_yaml(PVC)
    assert (pvc["apiVersion"], pvc["kind"]) == ("v1", "PersistentVolumeClaim")
    # Head, workers and the Job mount it at once, from different nodes.
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"].endswith("Gi")
    name = pvc["metadata"]["name"]
    templates = dict(rayservice_pod_templates(rayservice), job=load_yaml(JOB)["spec"]["template"])
    for group, template in templates.items():
        assert _claims(template) == {"/workspace": name}, group


def test_download_job_fills_the_volume_with_the_image_code():
    job = load_yaml(JOB)
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert job["metadata"]["name"]
    template = job["spec"]["template"]
    assert template["spec"]["restartPolicy"] in ("OnFailure", "Never")  # a Job may not use Always
    # Its pod is a valid pod (the same PodTemplateSpec schema KubeRay embeds), strictly.
    errors = list(jsonschema.Draft7Validator(pod_template_schema()).iter_errors(template))
    assert errors == []
    (container,) = template["spec"]["containers"]
    assert container["command"] == ["python", "download_models.py", "--models-dir", "/workspace/models"]
    workdir = [line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines()
               if line.startswith("WORKDIR ")][-1]
    assert container["workingDir"] == workdir
    assert (ROOT / "download_models.py").is_file()
    # The downloader accepts exactly these arguments.
    args = importlib.import_module("download_models").build_parser().parse_args(container["command"][2:])
    assert args.models_dir == "/workspace/models"
    assert secret_env_problems(container) == []


def test_a_broken_job_pod_fails_the_pod_schema():
    template = load_yaml(JOB)["spec"]["template"]
    template["spec"]["containers"][0]["volumeMount"] = template["spec"]["containers"][0].pop("volumeMounts")
    assert not jsonschema.Draft7Validator(pod_template_schema()).is_valid(template)


def test_pods_run_as_the_images_non_root_user(rayservice):
    templates = dict(rayservice_pod_templates(rayservice), job=load_yaml(JOB)["spec"]["template"])
    for group, template in templates.items():
        ctx = template["spec"]["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == 1000, group
