"""The bucket holds what clients asked for. A video_render through the service on a real S3
server (rclone, 127.0.0.1): while it runs, its inputs and intermediates are in `scratch/`; once
it ends, the bucket lists only its outputs and its record (and the serving replica's liveness
beat), and after the record's lifetime only the outputs. With PF_SCRATCH_DIR, scratch never
touches the bucket at all."""
from __future__ import annotations

import time

import pytest
from pydantic import SecretStr

from core import housekeeping, keys
from core.jobs import JobStore
from core.storage import open_storage
from tests.support.media import b64, small_portrait, speechlike
from tests.support.s3server import BUCKET, KEY, SECRET
from tests.support.service import BASE, make_client, wait_final



class ListsTheBucketWhenCalled:
    """The real finisher; when the job reaches it, the bucket (and the scratch directory, if
    any) is listed: what the job keeps between its stages."""

    def __init__(self, stage, storage, scratch_dir):
        self.stage, self.storage, self.scratch_dir = stage, storage, scratch_dir
        self.bucket_mid_job: list[str] = []
        self.scratch_mid_job: list[str] = []

    def describe(self) -> dict:
        return self.stage.describe()

    def run(self, req):
        self.bucket_mid_job = self.storage.list("")
        if self.scratch_dir is not None:
            self.scratch_mid_job = sorted(p.relative_to(self.scratch_dir).as_posix()
                                          for p in self.scratch_dir.rglob("*") if p.is_file())
        return self.stage.run(req)


@pytest.mark.parametrize("node_scratch", [False, True], ids=["scratch-prefix", "scratch-dir"])
def test_after_a_video_render_the_bucket_lists_only_its_outputs(settings, s3, tmp_path,
                                                                 node_scratch):
    scratch_dir = tmp_path / "node-scratch" if node_scratch else None
    s = settings.model_copy(update=dict(
        storage="s3", r2_endpoint=s3.endpoint, r2_access_key=SecretStr(KEY),
        r2_secret_key=SecretStr(SECRET), r2_bucket=BUCKET, scratch_dir=scratch_dir,
        record_ttl_s=3600.0))
    bucket = open_storage(s.model_copy(update={"scratch_dir": None}))  # the bucket alone
    voice = speechlike(0.6, tmp_path / "voice.wav")
    job = {"job_type": "video_render", "job_id": "vr-1", "image": b64(small_portrait(96)),
           "audio": b64(voice.read_bytes()), "face_box": [20, 10, 76, 80], "quality": "draft",
           "captions": [{"text": "Hi", "start": 0.0, "end": 0.5}],
           "format": {"width": 96, "height": 160, "fps": 25}}
    spies = []

    def spy(stage):
        spies.append(ListsTheBucketWhenCalled(stage, bucket, scratch_dir))
        return spies[0]

    with make_client(s, wrap={"finisher": spy}) as c:
        assert c.post(f"{BASE}/run", json={"input": job}).status_code == 200
        st = wait_final(c, "vr-1", timeout=300)
        assert st["status"] == "COMPLETED", st
        # the end's cleanup follows the final record (a record that failed to save must leave
        # the inputs for the re-run): it lands moments after status says COMPLETED
        t0 = time.monotonic()
        while (after_job := bucket.list("")) and any(
                k.startswith(keys.SCRATCH_PREFIX) or "/claims/" in k or k.endswith("progress.json")
                for k in after_job) and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        replica_id = c.app.state.service.runner.replica_id
    outputs = {keys.final_video("vr-1"), keys.thumbnail("vr-1"), keys.audio_export("vr-1"),
               keys.captions_sidecar(keys.final_video("vr-1"))}
    assert {k.split("/")[-1] for k in outputs} == {"final.mp4", "thumbnail.jpg", "audio.m4a",
                                                   "final.srt"}

    # 1. mid-job the inputs and the intermediates were kept (where the settings say)
    spy_ = spies[0]
    mid_scratch = spy_.scratch_mid_job if node_scratch else [
        k for k in spy_.bucket_mid_job if k.startswith(keys.SCRATCH_PREFIX)]
    assert any("/inputs/" in k for k in mid_scratch), mid_scratch
    assert any("/work/" in k for k in mid_scratch), mid_scratch
    if node_scratch:
        assert not any(k.startswith(keys.SCRATCH_PREFIX) for k in spy_.bucket_mid_job)
        assert not any(p.is_file() for p in scratch_dir.rglob("*")), "scratch outlived the job"

    # 2. once it ended: its outputs, its record, and the liveness beat of the replica serving
    assert set(after_job) == outputs | {keys.record("vr-1"), keys.replica(replica_id)}, after_job
    assert st["output"]["output"]["video"].startswith(s3.endpoint)

    # 3. past the record's lifetime (and the gone replica's beat's): the outputs alone
    store = JobStore(bucket)
    report = housekeeping.sweep(store, s, time.time() + s.record_ttl_s + 1)
    assert report.records == 1 and report.beats == 1
    assert set(bucket.list("")) == outputs
