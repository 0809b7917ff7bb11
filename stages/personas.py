"""Where persona takes live (SPEC.md §1): the bucket under personas/<persona_id>/ and the
personas volume (/workspace/personas/<persona_id>/), with a manifest a later render reads."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from serve_app.ids import check_id
from serve_app.storage import Storage

TAKE_FRAME_BOX = (1080, 1920)  # takes are framed for the 9:16 format most renders ask for
TAKE_SECONDS = 5.0


def scale_box(box: list[float] | None, scale: float) -> list[float] | None:
    """A client face_box (input-image pixels) in the pixels of the upscaled image."""
    return None if box is None else [v * scale for v in box]


def take_key(persona_id: str, index: int) -> str:
    return f"personas/{check_id(persona_id, 'persona_id')}/takes/take_{int(index)}.mp4"


def track_key(persona_id: str, index: int) -> str:
    return f"personas/{check_id(persona_id, 'persona_id')}/takes/take_{int(index)}.track.npz"


def manifest_key(persona_id: str) -> str:
    return f"personas/{check_id(persona_id, 'persona_id')}/manifest.json"


def load_manifest(storage: Storage, persona_id: str) -> dict | None:
    raw = storage.get_bytes(manifest_key(persona_id))
    return json.loads(raw) if raw else None


def write_manifest(storage: Storage, personas_dir: Path, persona_id: str, manifest: dict) -> dict:
    manifest = dict(manifest, manifest_url=storage.url(manifest_key(persona_id)))
    data = json.dumps(manifest, indent=2).encode()
    storage.put_bytes(manifest_key(persona_id), data)
    local = volume_dir(personas_dir, persona_id)
    (local / "manifest.json").write_bytes(data)
    return manifest


def volume_dir(personas_dir: Path, persona_id: str) -> Path:
    d = Path(personas_dir) / check_id(persona_id, "persona_id")
    d.mkdir(parents=True, exist_ok=True)
    return d


def copy_to_volume(personas_dir: Path, persona_id: str, path: str | os.PathLike, name: str) -> Path:
    """Keep a copy of a take on the personas volume (atomic: no half files for readers)."""
    dest = volume_dir(personas_dir, persona_id) / Path(name).name
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(path, tmp)
    os.replace(tmp, dest)
    return dest
