"""A LivePortrait take changes only the face's part of its framed still (the paste-back's
region), so persona_build hands that region on: face restore works on it, the finisher lays it
over the framed still once as it encodes the take. Measured against the same take through whole
frames: the same stored take. Tiny random LivePortrait networks (the face is noise: what is
measured is where the pixels land)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from core import keys
from core.storage import open_storage
from faces.track import FaceTrack
from media.ffmpeg import probe
from media.frames import read_frames
from media.options import FinishOptions
from personas.manifest import TAKE_FRAME_BOX
from stages.contracts import FinishRequest, RestoreRequest, TakeRequest
from stages.finish import FinishStage
from stages.lipsync import LipSyncStage
from stages.restore import FaceRestoreStage
from tests.personas.liveportrait.tiny_models import write_tiny_checkpoints
from tests.support.engines import tiny_restorer
from tests.support.portrait import portrait

SECONDS = 0.2  # 5 frames at 25 fps


def tall_still() -> tuple[np.ndarray, list[float]]:
    """A 540 x 960 textured frame with the portrait's face small in it (and its face box): the
    take frames it at 1080 x 1920, where the face is a small part of the frame."""
    rng = np.random.default_rng(1)
    h, w = 960, 540
    yy, xx = np.mgrid[0:h, 0:w]
    canvas = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (w + h)], -1)
    canvas = np.clip(canvas + rng.normal(0, 8, canvas.shape), 0, 255).astype(np.uint8)
    face = np.asarray(Image.fromarray(portrait()).resize((160, 160), Image.LANCZOS))
    canvas[300:460, 190:350] = face
    return canvas, [222.0, 325.0, 318.0, 450.0]


def test_a_take_hands_on_its_face_region_and_encodes_like_whole_frames(settings, tmp_path,
                                                                      one_torch_thread):
    write_tiny_checkpoints(settings.models_dir)
    s = settings.model_copy(update={"allow_cpu_takes": True})
    storage = open_storage(s)
    image, box = tall_still()
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    storage.put_bytes("scratch/t/inputs/s/image.png", buf.getvalue())
    lipsync, finisher = LipSyncStage(s, storage), FinishStage(s, storage)
    restore = FaceRestoreStage(s, storage, restorer=tiny_restorer())
    assert lipsync.take_engine is not None
    w, h = TAKE_FRAME_BOX
    takes, regions, backgrounds, restored, rendered = {}, {}, {}, {}, {}
    for region_ok in (False, True):
        job = f"t-{int(region_ok)}"
        take = lipsync.render_take(TakeRequest(
            job_id=job, persona_id=f"p{int(region_ok)}", index=0,
            image_key="scratch/t/inputs/s/image.png", face_box=box, emotion="happy",
            angle="three_quarter", intensity=0.8, seed=5, seconds=SECONDS, region_ok=region_ok))
        ref = take.frames
        assert (ref.width, ref.height, ref.n_frames) == (w, h, 5)
        stored = probe(storage.get_file(ref.key, tmp_path)).video
        rendered[region_ok] = np.stack(list(read_frames(storage.get_file(ref.key, tmp_path))))
        if region_ok:
            x0, y0, x1, y1 = ref.region
            assert (stored.width, stored.height) == (x1 - x0, y1 - y0)
            assert stored.width * stored.height < 0.3 * w * h, ref.region
            assert ref.background_key == keys.work(job, "take_0_background.png")
            # every frame's face (the track the take stores) lies inside the region
            track = FaceTrack.from_bytes(storage.get_bytes(take.track_key))
            marks = track.five_points()
            assert (marks[..., 0] > x0).all() and (marks[..., 0] < x1).all()
            assert (marks[..., 1] > y0).all() and (marks[..., 1] < y1).all()
        else:
            assert ref.region is None and (stored.width, stored.height) == (w, h)
        fixed = restore.run(RestoreRequest(job_id=job, frames=ref, faces_key=take.track_key,
                                           weight=0.5))
        assert fixed.frames.region == ref.region and fixed.restored_faces == 5
        regions[region_ok], backgrounds[region_ok] = ref.region, ref.background_key
        restored[region_ok] = np.stack(list(read_frames(storage.get_file(fixed.frames.key,
                                                                         tmp_path))))
        done = finisher.run(FinishRequest(
            job_id=job, kind="take", frames=fixed.frames, persona_id=f"p{int(region_ok)}",
            options=FinishOptions(quality="premium", fps=25.0, normalize_loudness=False,
                                  write_srt=False),
            video_key=keys.take_video(f"p{int(region_ok)}", 0)))
        assert (done.width, done.height) == (w, h)
        takes[region_ok] = np.stack(list(read_frames(storage.get_file(done.video_key, tmp_path))))
    whole, region = takes[False], takes[True]
    assert whole.shape == region.shape == (5, h, w, 3)
    x0, y0, x1, y1 = regions[True]
    inside = np.zeros((h, w), bool)
    inside[y0:y1, x0:x1] = True
    # before restore the region holds exactly the whole frames' pixels (the same renders, a
    # lossless intermediate); restored, nearly so: OpenCV's fixed-point warps round a crop
    # read at a shifted origin differently now and then
    rendered_diff = np.abs(rendered[False][:, y0:y1, x0:x1].astype(int) - rendered[True].astype(int))
    assert rendered_diff.max() == 0
    same = np.abs(restored[False][:, y0:y1, x0:x1].astype(int) - restored[True].astype(int))
    moved = (same.max(-1) > 0).mean()
    print(f"restored take frames, region vs whole: {moved:.3%} of pixels differ, max {same.max()}")
    assert moved < 0.005 and same.max() <= 8
    diff = np.abs(whole.astype(int) - region.astype(int))
    print(f"take, region vs whole frames inside the region: mean |diff| "
          f"{diff[:, inside].mean():.4f}, max {diff[:, inside].max()}")
    # encoded (x264 at CRF 12, noise faces of random networks): the encoder's own rounding
    assert diff[:, inside].mean() < 1.5
    # outside: the framed still as it is, where whole frames went through the intermediate's
    # RGB -> YUV -> RGB at each stage: at least as true to it
    canvas = np.asarray(Image.open(storage.get_file(backgrounds[True], tmp_path)).convert("RGB"))
    err = {k: np.abs(v[:, ~inside].astype(int) - canvas[~inside].astype(int)).mean()
           for k, v in takes.items()}
    print(f"outside the region, |take - framed still|: whole {err[False]:.4f}, region {err[True]:.4f}")
    assert err[True] <= err[False] + 1e-6
    # and the head moved (a frozen take would pass the comparison too)
    assert np.abs(whole[-1].astype(int) - whole[0].astype(int)).max() > 20
