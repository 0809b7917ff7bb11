"""A client that hangs up while its inputs are being decoded leaves nothing behind: the decode
finishes in its worker, and what it stored is removed, since no job will own it."""
from __future__ import annotations

import asyncio
import threading

from serve_app.inprocess import build_service
from serve_app.schemas import RunRequest
from tests.support.media import b64, small_portrait, speechlike


def test_inputs_of_a_submit_whose_client_went_away_are_removed(settings, tmp_path):
    voice = speechlike(0.3, tmp_path / "v.wav")
    job = {"job_type": "lipsync_only", "job_id": "gone-1", "image": b64(small_portrait(96)),
           "audio": b64(voice.read_bytes())}
    service = build_service(settings)
    storing, release = threading.Event(), threading.Event()
    real_put = service.storage.put_file
    stored: list[str] = []

    def slow_put(key, path):             # the decode is done; storing the files is slow
        storing.set()
        release.wait(30)
        real_put(key, path)
        stored.append(key)

    service.storage.put_file = slow_put

    async def main():
        task = asyncio.create_task(service.submit(RunRequest.model_validate({"input": job})))
        await asyncio.to_thread(storing.wait, 30)
        task.cancel()                    # the client hangs up mid-submit
        try:
            await task
        except asyncio.CancelledError:
            pass
        release.set()
        inputs = settings.storage_dir / "jobs" / "gone-1" / "inputs"
        for _ in range(600):             # a hang guard: the worker stores both, then cleans up
            if len(stored) == 2 and not [p for p in inputs.rglob("*") if p.is_file()]:
                break
            await asyncio.sleep(0.05)

    asyncio.run(main())
    inputs = settings.storage_dir / "jobs" / "gone-1" / "inputs"
    assert len(stored) == 2                                  # both were stored...
    assert not [p for p in inputs.rglob("*") if p.is_file()]  # ...and removed
    assert service.runner.store.get("gone-1") is None       # and no job was created
