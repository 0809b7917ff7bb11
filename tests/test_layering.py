"""The house rules of the code layout (README, "How the code is laid out"), checked by the same
`git grep`s the README gives, so a change that breaks a rule fails here, not in review."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BELOW_SERVE_APP = ["core", "stages", "graphs", "deployments", "lipsync", "enhance", "faces",
                   "personas", "media", "weights"]
LIBRARIES = ["lipsync", "enhance", "faces", "personas", "media", "weights"]

pytestmark = pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                                reason="needs a git checkout of the repo")


def git_grep(pattern: str, paths: list[str]) -> list[str]:
    """`git grep -nE pattern -- paths` as lines; none found is an empty list."""
    out = subprocess.run(["git", "grep", "-nE", pattern, "--", *paths], cwd=REPO,
                         capture_output=True, text=True)
    if out.returncode not in (0, 1):
        raise RuntimeError(f"git grep failed: {out.stderr}")
    return out.stdout.splitlines()


def test_nothing_below_serve_app_imports_it():
    assert git_grep(r"^\s*(from|import) serve_app\b", BELOW_SERVE_APP) == []


def test_the_foundation_imports_no_layer_above_it_and_no_ray():
    assert git_grep(r"^\s*(from|import) (serve_app|stages|graphs|deployments|ray)\b",
                    ["core"]) == []


def test_libraries_never_reach_up_into_the_service():
    assert git_grep(r"^\s*(from|import) (serve_app|stages|graphs|deployments)\b",
                    LIBRARIES) == []


def test_only_the_deployments_and_the_serve_app_import_ray():
    hits = git_grep(r"^\s*(from|import) ray\b", ["*.py", ":!tests", ":!bench"])
    assert all(h.startswith(("deployments/", "serve_app/")) for h in hits), hits


def test_storage_keys_are_spelt_only_in_core_keys():
    """No module but core/keys.py writes a key of the bucket layout as a string."""
    hits = git_grep(r"[\"'](jobs|videos|personas|scratch)/", ["*.py", ":!tests", ":!bench",
                                                       ":!core/keys.py"])
    # (the /files route asks keys.is_public instead of naming prefixes)
    assert hits == [], hits


def test_the_readme_gives_these_greps():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## How the code is laid out", 1)[-1]
    assert re.search(r"git grep .*serve_app", section), "README lost the layering greps"
