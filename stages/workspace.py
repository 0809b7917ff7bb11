"""A per-job scratch folder on the stage's machine (never a fixed temp/ dir: jobs run side by
side), removed when the stage call ends."""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from core.settings import Settings


@contextmanager
def scratch(settings: Settings, job_id: str, stage: str) -> Iterator[Path]:
    root = settings.work_dir
    root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{job_id}-{stage}-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
