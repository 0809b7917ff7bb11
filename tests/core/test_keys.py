"""The bucket layout: every key comes from core.keys, from checked ids only, matching the layout
its docstring draws."""
from __future__ import annotations

import inspect
import re

import pytest

from core import keys
from core.storage import _check_key

SAMPLES = {
    "lipsync_video": ("j1",), "final_video": ("j1",), "thumbnail": ("j1",),
    "captions_sidecar": ("videos/j1/final.mp4",), "persona_primary": ("p1",),
    "persona_manifest": ("p1",), "take_video": ("p1", 2), "take_track": ("p1", 2),
    "audio_export": ("j1",), "record": ("j1",), "progress": ("j1",), "cancel_marker": ("j1",), "claim": ("j1", 3),
    "active": ("j1",), "replica": ("r1",), "input_folder": ("j1", "abc123"),
    "input_file": ("scratch/j1/inputs/abc123", "image.png"), "work": ("j1", "faces.npz"),
    "scratch_folder": ("j1",), "claims_folder": ("j1",),
}


def _layout(folders: bool = False) -> list[re.Pattern]:
    """The docstring's layout lines as patterns (<name> matches one path segment); with
    `folders`, every leading run of a line's segments too (what a folder key may be)."""
    lines = [ln.split()[0] for ln in keys.__doc__.splitlines()
             if ln.startswith("    ") and "/" in ln.split()[0]]
    if folders:
        lines = ["/".join(ln.split("/")[:n]) for ln in lines for n in range(1, ln.count("/") + 1)]
    return [re.compile("^" + re.sub(r"<[^>]+>", r"[^/]+", re.escape(ln).replace(r"\<", "<")
                                    .replace(r"\>", ">")) + "$") for ln in lines]


def test_every_key_function_is_sampled_and_matches_the_documented_layout():
    functions = {name for name, fn in inspect.getmembers(keys, inspect.isfunction)
                 if fn.__module__ == "core.keys" and not name.startswith("_")
                 and name not in ("is_public", "job_of")}
    assert functions == set(SAMPLES)
    layout = _layout(folders=False)
    folders = _layout(folders=True)
    for name, args in SAMPLES.items():
        key = getattr(keys, name)(*args)
        assert _check_key(key) == key
        # a folder key (input_folder, scratch_folder, ...) is the start of a documented key
        found = folders if name.endswith("_folder") else layout
        assert any(p.match(key) for p in found), f"{name} -> {key}"


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "..", "_active", "x" * 200, "a b"])
def test_ids_are_checked_before_they_become_keys(bad):
    with pytest.raises(ValueError):
        keys.final_video(bad)
    with pytest.raises(ValueError):
        keys.take_video(bad, 0)


def test_only_outputs_are_public():
    assert keys.is_public(keys.final_video("j1")) and keys.is_public(keys.take_video("p", 0))
    assert not keys.is_public(keys.record("j1")) and not keys.is_public(keys.work("j1", "a.mp4"))
    assert keys.captions_sidecar("videos/j1/final.mp4") == "videos/j1/final.srt"


def test_job_of_finds_the_job_of_its_bookkeeping_and_scratch_keys_only():
    for name, args in SAMPLES.items():
        key = getattr(keys, name)(*args)
        if name in ("active", "replica"):
            assert keys.job_of(key) is None, key      # indexes, not a job's own keys
        elif key.startswith(("jobs/", "scratch/")):
            assert keys.job_of(key) == "j1" or keys.job_of(f"{key}/x") == "j1", key
        else:
            assert keys.job_of(key) is None, key      # outputs belong to the client
    assert keys.job_of("jobs/j1") is None and keys.job_of("scratch/") is None
