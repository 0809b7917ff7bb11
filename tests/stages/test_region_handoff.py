"""A lip-synced still hands only its face region to the finisher, which lays it over the still:
the renderers' promise (nothing outside the region they report changes) is measured on their
own full frames, and the finished video matches the one made from whole frames. The LatentSync
here is a tiny random instance (its faces are noise: what is measured is where they land)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core import keys
from core.storage import open_storage
from lipsync.animator import MouthAnimator
from lipsync.source import still_frames
from media.ffmpeg import probe
from media.frames import load_audio, read_frames
from media.options import FinishOptions
from stages.contracts import FinishRequest, LipSyncRequest, RestoreRequest
from stages.finish import FinishStage
from stages.lipsync import LipSyncStage
from stages.restore import FaceRestoreStage
from tests.support.engines import tiny_engine, tiny_restorer
from tests.support.media import speechlike
from tests.support.portrait import portrait

W, H = 640, 480
FACE_BOX = [236, 92, 408, 292]  # the astronaut's face where still() puts the portrait


def still() -> np.ndarray:
    """The portrait (256 px) on a wider textured canvas: the face is a small part of the frame."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    canvas = np.stack([xx * 255 // W, yy * 255 // H, (xx + yy) * 127 // (W + H)], -1)
    canvas = np.clip(canvas + rng.normal(0, 8, canvas.shape), 0, 255).astype(np.uint8)
    face = np.asarray(Image.fromarray(portrait()).resize((256, 256), Image.LANCZOS))
    canvas[60:316, 200:456] = face
    return canvas


def changed_box(frames, image) -> tuple[int, int, int, int] | None:
    ys, xs = [], []
    for f in frames:
        diff = np.any(f != image, axis=-1)
        if diff.any():
            y, x = np.nonzero(diff)
            ys += [y.min(), y.max()]
            xs += [x.min(), x.max()]
    return None if not ys else (min(xs), min(ys), max(xs) + 1, max(ys) + 1)


@pytest.mark.parametrize("engine", ["latentsync-tiny", "animator"])
def test_renderers_change_nothing_outside_the_region_they_report(engine, tmp_path,
                                                                 one_torch_thread):
    renderer = tiny_engine() if engine == "latentsync-tiny" else MouthAnimator(None)
    image = still()
    track = renderer.prepare(image, FACE_BOX)
    region = renderer.changed_region(image.shape[:2], track)
    assert region is not None
    x0, y0, x1, y1 = region
    assert (x1 - x0) * (y1 - y0) < 0.5 * W * H       # a face, not the frame
    voice = load_audio(speechlike(1.2, tmp_path / "v.wav"))
    frames = []
    renderer.render(still_frames(image, 31), track, voice, 25.0, frames.append,
                    **({"quality": "draft"} if engine != "animator" else {}))
    changed = changed_box(frames, image)
    assert changed is not None, "the render changed nothing: the test would prove nothing"
    cx0, cy0, cx1, cy1 = changed
    assert x0 <= cx0 and y0 <= cy0 and cx1 <= x1 and cy1 <= y1, (changed, region)


def test_region_handoff_finishes_like_whole_frames(settings, tmp_path):
    storage = open_storage(settings)
    buf = io.BytesIO()
    Image.fromarray(still()).save(buf, format="PNG")
    storage.put_bytes("scratch/r1/inputs/s/image.png", buf.getvalue())
    storage.put_file("scratch/r1/inputs/s/audio.wav", speechlike(1.5, tmp_path / "v.wav"))
    lipsync, finisher = LipSyncStage(settings, storage), FinishStage(settings, storage)
    videos = {}
    for region_ok in (False, True):
        job = f"r-{int(region_ok)}"
        synced = lipsync.run(LipSyncRequest(
            job_id=job, source_key="scratch/r1/inputs/s/image.png",
            audio_key="scratch/r1/inputs/s/audio.wav", face_box=FACE_BOX, region_ok=region_ok))
        ref = synced.frames
        assert (ref.width, ref.height) == (W, H)
        stored = probe(storage.get_file(ref.key, tmp_path)).video
        if region_ok:
            # the hand-off is the face region alone, the still once beside it
            x0, y0, x1, y1 = ref.region
            assert (stored.width, stored.height) == (x1 - x0, y1 - y0)
            assert stored.width * stored.height < 0.25 * W * H
            assert ref.background_key == keys.work(job, "background.png")
        else:
            assert ref.region is None and (stored.width, stored.height) == (W, H)
        done = finisher.run(FinishRequest(
            job_id=job, kind="lipsync", frames=ref, voice_key="scratch/r1/inputs/s/audio.wav",
            options=FinishOptions(quality="standard", fps=25.0, normalize_loudness=False,
                                  write_srt=False),
            video_key=keys.lipsync_video(job)))
        assert (done.width, done.height) == (W, H)
        videos[region_ok] = np.stack(list(read_frames(storage.get_file(done.video_key, tmp_path))))
    whole, region = videos[False], videos[True]
    assert whole.shape == region.shape
    diff = np.abs(whole.astype(int) - region.astype(int))
    # the same picture through the same encoder: equal up to the encoder's rounding
    print(f"region vs whole frames: mean |diff| {diff.mean():.4f}, max {diff.max()}")
    assert diff.mean() < 0.5 and np.percentile(diff, 99.9) <= 3, (diff.mean(), diff.max())
    # and the mouth moved in both (a still would pass the comparison too)
    assert np.abs(whole[::5].astype(int) - whole[:1].astype(int)).max() > 20


def test_region_through_face_restore_matches_whole_frames(settings, tmp_path):
    """video_render's hand-off: the region also holds the face restore's aligned crop and
    restore works on the region. Its restored faces are the whole-frame ones (up to the
    intermediate's colour rounding), and the finished picture is at least as true to the still
    outside the face: there the still is used as it is, where whole frames went through the
    intermediate's RGB -> YUV -> RGB twice."""
    storage = open_storage(settings)
    buf = io.BytesIO()
    image = still()
    Image.fromarray(image).save(buf, format="PNG")
    storage.put_bytes("scratch/r3/inputs/s/image.png", buf.getvalue())
    storage.put_file("scratch/r3/inputs/s/audio.wav", speechlike(1.0, tmp_path / "v.wav"))
    lipsync, finisher = LipSyncStage(settings, storage), FinishStage(settings, storage)
    restore = FaceRestoreStage(settings, storage, restorer=tiny_restorer())
    restored_frames, videos, region = {}, {}, None
    for region_ok in (False, True):
        job = f"rr-{int(region_ok)}"
        synced = lipsync.run(LipSyncRequest(
            job_id=job, source_key="scratch/r3/inputs/s/image.png",
            audio_key="scratch/r3/inputs/s/audio.wav", face_box=FACE_BOX, region_ok=region_ok,
            restore_follows=True))
        assert (synced.frames.region is not None) == region_ok
        region = synced.frames.region or region
        restored = restore.run(RestoreRequest(job_id=job, frames=synced.frames,
                                              faces_key=synced.faces_key, weight=0.8))
        assert restored.frames.region == synced.frames.region and restored.restored_faces > 0
        restored_frames[region_ok] = np.stack(list(read_frames(
            storage.get_file(restored.frames.key, tmp_path)))).astype(int)
        done = finisher.run(FinishRequest(
            job_id=job, kind="render", frames=restored.frames,
            voice_key="scratch/r3/inputs/s/audio.wav",
            options=FinishOptions(quality="standard", fps=25.0, width=W, height=H),
            video_key=keys.final_video(job)))
        videos[region_ok] = np.stack(list(read_frames(
            storage.get_file(done.video_key, tmp_path)))).astype(int)
    x0, y0, x1, y1 = region
    # 1. the restored faces: the same, up to the intermediate's rounding
    inside = np.abs(restored_frames[False][:, y0:y1, x0:x1] - restored_frames[True])
    assert inside.max() <= 3 and inside.mean() < 0.01, (inside.max(), inside.mean())
    # 2. the finished picture outside the face, against the still itself
    outside = np.ones((H, W), bool)
    outside[y0:y1, x0:x1] = False
    err = {k: np.abs(v - image.astype(int))[:, outside].mean() for k, v in videos.items()}
    print(f"restored faces, region vs whole: max {inside.max()}, mean {inside.mean():.5f}; "
          f"finished picture off the face vs the still: whole frames {err[False]:.3f}, "
          f"region {err[True]:.3f}")
    assert err[True] <= err[False] + 0.05, err


def test_a_renderer_breaking_its_promise_fails_the_job(settings, tmp_path, monkeypatch):
    """The region writer checks the pixels outside the region: a wrong region is an error."""
    from core.errors import StageError

    storage = open_storage(settings)
    buf = io.BytesIO()
    Image.fromarray(still()).save(buf, format="PNG")
    storage.put_bytes("scratch/r2/inputs/s/image.png", buf.getvalue())
    storage.put_file("scratch/r2/inputs/s/audio.wav", speechlike(1.0, tmp_path / "v.wav"))
    stage = LipSyncStage(settings, storage)
    monkeypatch.setattr(stage.renderer, "changed_region", lambda hw, track: (0, 0, 40, 40))
    with pytest.raises(StageError, match="outside the face region"):
        stage.run(LipSyncRequest(job_id="r2", source_key="scratch/r2/inputs/s/image.png",
                                 audio_key="scratch/r2/inputs/s/audio.wav", face_box=FACE_BOX,
                                 region_ok=True))
