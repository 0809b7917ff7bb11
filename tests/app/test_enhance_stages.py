"""Wiring of the model engines into the stages, with tiny random-weight instances of the real
architectures (they are not restorers or upscalers: these tests check plumbing and counts).

Acceptance (issue 6): a still-image video_render runs Upscale exactly once and FaceRestore once
per generated frame, aligned from the lip-sync stage's landmarks (no second detection)."""
from __future__ import annotations

import time

import numpy as np
import torch
from fastapi.testclient import TestClient

from enhance.gfpgan import GFPGANv1Clean
from enhance.registry import resample_upscaler
from enhance.restore import FaceRestorer
from enhance.rrdbnet import RRDBNet
from enhance.upscale import Upscaler
from media.ffmpeg import probe
from media.frames import read_frames
from serve_app.api import build_api
from serve_app.inprocess import build_service, build_stages
from serve_app.storage import open_storage
from stages.restore import FaceRestoreStage
from stages.upscale import UpscaleStage
from tests.app.helpers import b64, small_portrait, speechlike

TINY_GFPGAN = dict(out_size=512, num_style_feat=16, channel_multiplier=1, num_mlp=1, narrow=0.0625)


class Counting:
    """Wraps a model object and counts calls of one method and the items passed."""

    def __init__(self, inner, method: str):
        self.inner, self.method, self.calls, self.items = inner, method, 0, 0
        self.engine = inner.engine

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name != self.method:
            return attr

        def counted(x, *a, **kw):
            self.calls += 1
            self.items += len(x) if name == "restore" else 1
            return attr(x, *a, **kw)
        return counted


def test_still_render_upscales_once_and_restores_every_frame(settings, tmp_path):
    torch.manual_seed(0)
    restorer = Counting(FaceRestorer(GFPGANv1Clean(**TINY_GFPGAN).eval(), "tiny-gfpgan (random)",
                                     "cpu"), "restore")
    x2 = Counting(Upscaler(RRDBNet(scale=2, num_feat=8, num_block=1, num_grow_ch=4).eval(),
                           "tiny-rrdbnet-x2 (random)", "cpu", scale=2), "upscale_to")
    storage = open_storage(settings)
    stages = build_stages(settings, storage)
    stages["face_restore"] = FaceRestoreStage(settings, storage, restorer=restorer)
    stages["upscale"] = UpscaleStage(settings, storage, models={
        "x4": None, "x2": x2, "resample": resample_upscaler()})
    app = build_api()
    app.state.service = build_service(settings, stages=stages)
    voice = speechlike(1.0, tmp_path / "v.wav")
    job = {"job_type": "video_render", "job_id": "vr-enh", "image": b64(small_portrait(200)),
           "audio": b64(voice.read_bytes()), "quality": "draft",
           # random upscaler weights scramble the picture: the face_box (in the client's
           # 200 px image) must follow the upscale to stay on the face
           "face_box": [70, 23, 104, 68],
           "format": {"width": 360, "height": 640, "fps": 25}}
    with TestClient(app) as c:
        assert c.post("/v2/t/run", json={"input": job}).status_code == 200
        t0 = time.monotonic()
        while (st := c.get("/v2/t/status/vr-enh").json())["status"] not in (
                "COMPLETED", "FAILED") and time.monotonic() - t0 < 300:
            time.sleep(0.3)
    assert st["status"] == "COMPLETED", st.get("error")
    meta = st["output"]["metadata"]
    n_frames = 25  # 1.0 s of voice at 25 fps
    # Upscale: exactly one model run, on the still, 200 -> 360 wide (a <=2x enlargement: x2)
    assert x2.calls == 1 and meta["counts"]["upscale_runs"] == 1
    assert meta["engines"]["upscale"] == "tiny-rrdbnet-x2 (random)"
    # FaceRestore: every generated frame, batched
    assert restorer.items == n_frames and meta["counts"]["restored_faces"] == n_frames
    assert restorer.calls == 2  # batches of 16
    assert meta["engines"]["face_restore"] == "tiny-gfpgan (random)"
    final = probe(settings.storage_dir / "videos/vr-enh/final.mp4")
    assert (final.video.width, final.video.height) == (360, 640)


def test_restore_changes_only_the_face_region(settings, tmp_path):
    """Paste-back is feathered into the face box from the recorded landmarks; the rest of the
    frame is the lip-sync output untouched."""
    torch.manual_seed(0)
    storage = open_storage(settings)
    stages = build_stages(settings, storage)
    restore = FaceRestoreStage(settings, storage, restorer=FaceRestorer(
        GFPGANv1Clean(**TINY_GFPGAN).eval(), "tiny", "cpu"))
    from stages.contracts import LipSyncRequest, RestoreRequest

    img_key, audio_key = "jobs/r1/inputs/image.png", "jobs/r1/inputs/audio.wav"
    storage.put_bytes(img_key, small_portrait(256))
    storage.put_file(audio_key, speechlike(0.6, tmp_path / "a.wav"))
    synced = stages["lipsync"].run(LipSyncRequest(job_id="r1", source_key=img_key,
                                                  audio_key=audio_key))
    restored = restore.run(RestoreRequest(job_id="r1", frames=synced.frames,
                                          faces_key=synced.faces_key))
    assert restored.restored_faces == synced.frames.n_frames == 15
    before = np.stack(list(read_frames(storage.get_file(synced.frames.key, tmp_path))))
    after = np.stack(list(read_frames(storage.get_file(restored.frames.key, tmp_path))))
    diff = np.abs(before.astype(int) - after.astype(int)).max(axis=(0, 3))
    face = np.load(storage.get_file(synced.faces_key, tmp_path))["boxes"][0]
    x0, y0, x1, y1 = face
    w, h = x1 - x0, y1 - y0
    outside = np.ones_like(diff, bool)
    outside[int(max(0, y0 - h)):int(y1 + h), int(max(0, x0 - w)):int(x1 + w)] = False
    # untouched away from the face (1 level: the rgb->yuv444->rgb round trip of re-encoding)
    assert diff[outside].max() <= 1
    assert diff[int(y0):int(y1), int(x0):int(x1)].max() > 20  # the face was restored
