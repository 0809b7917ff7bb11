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
    jobs/<job_id>/inputs/<submission>/<name>    the decoded inputs of one submission
    jobs/<job_id>/work/<name>                   intermediates between stages
    jobs/_active/<job_id>                       index of jobs not yet final (ids never start with "_")
    jobs/_replicas/<replica_id>                 each ingress replica's liveness beat

Only `videos/` and `personas/` are ever served to clients (PUBLIC_PREFIXES).
"""
from __future__ import annotations

from core.ids import check_id

PUBLIC_PREFIXES = ("videos/", "personas/")
ACTIVE_PREFIX = "jobs/_active/"
REPLICAS_PREFIX = "jobs/_replicas/"


def _job(job_id: str) -> str:
    return f"jobs/{check_id(job_id, 'job_id')}"


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


def claim(job_id: str, attempt: int) -> str:
    return f"{_job(job_id)}/claims/{int(attempt)}"


def active(job_id: str) -> str:
    return ACTIVE_PREFIX + check_id(job_id, "job_id")


def replica(replica_id: str) -> str:
    return REPLICAS_PREFIX + check_id(replica_id, "replica_id")


# ---- inputs and intermediates ---------------------------------------------------------------
def input_folder(job_id: str, submission: str) -> str:
    """The folder of one submission's decoded inputs (a duplicate submission of the same id
    gets its own folder, so it can never overwrite the inputs of the job that won)."""
    return f"{_job(job_id)}/inputs/{check_id(submission, 'submission')}"


def input_file(folder: str, name: str) -> str:
    return f"{folder}/{check_id(name, 'input name')}"


def work(job_id: str, name: str) -> str:
    """An intermediate one stage hands to the next (lip-synced frames, face geometry, ...)."""
    return f"{_job(job_id)}/work/{check_id(name, 'work file name')}"
