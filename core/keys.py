"""Every storage key the service writes or reads, one function each: the bucket layout lives here
and nowhere else (no f-string keys in other modules, no key parsed back apart).

Ids are checked (core.ids) before they become part of a key, so a key is never a traversal.

    videos/<job_id>/lipsync.mp4                 lipsync_only's output
    videos/<job_id>/final.mp4                   video_render's output
    videos/<job_id>/final.srt                   its caption sidecar (when there are captions)
    videos/<job_id>/thumbnail.jpg               its thumbnail
    videos/<job_id>/audio.m4a                   its final mix alone (the video's AAC track)
    personas/<persona_id>/primary.png           the persona's still, upscaled once
    personas/<persona_id>/manifest.json         what a later video_render reads
    personas/<persona_id>/takes/take_<i>.mp4    a base take
    personas/<persona_id>/takes/take_<i>.track.npz   its per-frame face track
    jobs/<job_id>/record.json                   the job record (written by the owning replica)
    jobs/<job_id>/progress.json                 the running stage's progress (written by it)
    jobs/<job_id>/cancel                        marker: cancel asked (stages check it)
    jobs/<job_id>/claims/<n>                    who runs attempt n (create-if-absent)
    jobs/_active/<job_id>                       index of jobs not yet final (ids never start with "_")
    jobs/_replicas/<replica_id>                 each ingress replica's liveness beat
    scratch/<job_id>/inputs/<submission>/<name> the decoded inputs of one submission
    scratch/<job_id>/work/<name>                intermediates between stages

Only `videos/` and `personas/` are ever served to clients (PUBLIC_PREFIXES).

What stays: outputs (`videos/`, `personas/`) until the client deletes them; a job's record
until `record_ttl_s` after its last write. Everything else of a job goes when it ends: its
`scratch/` folder and its progress and claims right away (core/runner.py), a cancel marker and
anything a stopped stage wrote late at the next housekeeping pass (core/housekeeping.py). The
`scratch/` prefix can live on node-local disk instead (PF_SCRATCH_DIR, core/storage.py).
"""
from __future__ import annotations

from core.ids import check_id

PUBLIC_PREFIXES = ("videos/", "personas/")
JOBS_PREFIX = "jobs/"
SCRATCH_PREFIX = "scratch/"
ACTIVE_PREFIX = "jobs/_active/"
REPLICAS_PREFIX = "jobs/_replicas/"


def _job(job_id: str) -> str:
    return f"jobs/{check_id(job_id, 'job_id')}"


def _scratch(job_id: str) -> str:
    return f"{SCRATCH_PREFIX}{check_id(job_id, 'job_id')}"


def _persona(persona_id: str) -> str:
    return f"personas/{check_id(persona_id, 'persona_id')}"


# ---- outputs (public) ------------------------------------------------------------------------
def lipsync_video(job_id: str) -> str:
    return f"videos/{check_id(job_id, 'job_id')}/lipsync.mp4"


def final_video(job_id: str) -> str:
    return f"videos/{check_id(job_id, 'job_id')}/final.mp4"


def thumbnail(job_id: str) -> str:
    return f"videos/{check_id(job_id, 'job_id')}/thumbnail.jpg"


def audio_export(job_id: str) -> str:
    return f"videos/{check_id(job_id, 'job_id')}/audio.m4a"


def captions_sidecar(video_key: str) -> str:
    """The .srt beside a video key (same folder, same name)."""
    stem, dot, _ = video_key.rpartition(".")
    return f"{stem if dot else video_key}.srt"


def persona_primary(persona_id: str) -> str:
    return f"{_persona(persona_id)}/primary.png"


def persona_manifest(persona_id: str) -> str:
    return f"{_persona(persona_id)}/manifest.json"


def take_video(persona_id: str, index: int) -> str:
    return f"{_persona(persona_id)}/takes/take_{int(index)}.mp4"


def take_track(persona_id: str, index: int) -> str:
    return f"{_persona(persona_id)}/takes/take_{int(index)}.track.npz"


def is_public(key: str) -> bool:
    return key.startswith(PUBLIC_PREFIXES)


# ---- job bookkeeping ------------------------------------------------------------------------
def record(job_id: str) -> str:
    return f"{_job(job_id)}/record.json"


def progress(job_id: str) -> str:
    return f"{_job(job_id)}/progress.json"


def cancel_marker(job_id: str) -> str:
    return f"{_job(job_id)}/cancel"


def claims_folder(job_id: str) -> str:
    return f"{_job(job_id)}/claims"


def claim(job_id: str, attempt: int) -> str:
    return f"{claims_folder(job_id)}/{int(attempt)}"


def active(job_id: str) -> str:
    return ACTIVE_PREFIX + check_id(job_id, "job_id")


def replica(replica_id: str) -> str:
    return REPLICAS_PREFIX + check_id(replica_id, "replica_id")


def job_of(key: str) -> str | None:
    """The job a `jobs/<job_id>/...` or `scratch/<job_id>/...` key belongs to; None for the
    indexes (`jobs/_active/`, `jobs/_replicas/`) and for every other key."""
    for prefix in (JOBS_PREFIX, SCRATCH_PREFIX):
        if key.startswith(prefix):
            job_id, slash, _ = key[len(prefix):].partition("/")
            return job_id if slash and job_id and not job_id.startswith("_") else None
    return None


# ---- inputs and intermediates (scratch: gone when the job ends) -----------------------------
def scratch_folder(job_id: str) -> str:
    """The folder of a job's inputs and intermediates."""
    return _scratch(job_id)


def input_folder(job_id: str, submission: str) -> str:
    """The folder of one submission's decoded inputs (a duplicate submission of the same id
    gets its own folder, so it can never overwrite the inputs of the job that won)."""
    return f"{_scratch(job_id)}/inputs/{check_id(submission, 'submission')}"


def input_file(folder: str, name: str) -> str:
    return f"{folder}/{check_id(name, 'input name')}"


def work(job_id: str, name: str) -> str:
    """An intermediate one stage hands to the next (lip-synced frames, face geometry, ...)."""
    return f"{_scratch(job_id)}/work/{check_id(name, 'work file name')}"
