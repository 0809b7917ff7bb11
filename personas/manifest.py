"""Where persona takes live: the bucket (keys in core.keys) and the personas volume
(/workspace/personas/<persona_id>/), with a manifest a later render reads."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from core import keys
from core.ids import check_id
from core.storage import Storage

TAKE_FRAME_BOX = (1080, 1920)  # takes are framed for the 9:16 format most renders ask for
TAKE_SECONDS = 5.0


def load_manifest(storage: Storage, persona_id: str) -> dict | None:
    raw = storage.get_bytes(keys.persona_manifest(persona_id))
    return json.loads(raw) if raw else None


def write_manifest(storage: Storage, personas_dir: Path, persona_id: str, manifest: dict) -> dict:
    key = keys.persona_manifest(persona_id)
    # keys only (take videos, tracks, the primary image): a link written here would expire
    data = json.dumps(manifest, indent=2).encode()
    storage.put_bytes(key, data)
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
