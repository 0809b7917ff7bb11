"""Issue 21, item 6 and its class: the finisher's caption layout is cancellable and its cost is
bounded by a limit set from its measured cost. Hundreds of long captions (each within the
limits) used to take minutes to lay out without ever checking for a cancel, holding the job's
slot. Now the layout calls the stage's progress report (which is the cancel check) all along,
the worst case per caption is cheaper (long words split by bisection, font-shrink search on
line counts), and the API bounds the captions' total text (serve_app.schemas)."""
from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest
from pydantic import ValidationError

from core.errors import JobCancelled
from core.jobs import JobStore
from core.storage import open_storage
from media.captions import layout_caption, write_ass
from media.options import MAX_CAPTION_CHARS, Caption, CaptionStyle, FinishOptions
from serve_app import schemas
from serve_app.schemas import VideoRenderInput
from stages.contracts import FinishRequest, FramesRef
from stages.finish import FinishStage
from tests.support.finishing import SR, solid_frames, write_audio, write_frames

W, H, FPS = 1080, 1920, 10
# The costliest style for the layout: the largest font on the frame shrinks step by step to
# the smallest, re-wrapping the whole text at each step.
WORST_STYLE = CaptionStyle(font_size=300, stroke_width=20)


def long_caption_text(rng: random.Random, chars: int = MAX_CAPTION_CHARS) -> str:
    """Text that is costly to lay out: mostly words too long for a line (split by width), some
    short words, combining marks, wide and narrow glyphs."""
    parts, n = [], 0
    while n < chars:
        k = rng.choice([1, 3, 8, 40, 120, 400])
        word = "".join(rng.choice("WMmil.é\u0301漢😀abcXYZ") for _ in range(k))
        parts.append(word)
        n += k + 1
    return " ".join(parts)[:chars]


def heavy_captions(n: int, seconds: float, seed: int = 0) -> tuple[Caption, ...]:
    rng, slot = random.Random(seed), seconds / n
    return tuple(Caption(long_caption_text(rng), i * slot, (i + 0.9) * slot) for i in range(n))


def test_caption_heavy_finish_is_cancelled_within_two_seconds(settings, tmp_path, figures):
    storage = open_storage(settings)
    store = JobStore(storage)
    job_id, seconds = "caption-cancel", 4.0
    frames = write_frames(tmp_path / "f.mp4", solid_frames(4, 64, 64), fps=FPS)
    voice = write_audio(tmp_path / "v.wav", np.zeros(int(seconds * SR), np.float32))
    storage.put_file("jobs/caption-cancel/frames.mp4", frames)
    storage.put_file("jobs/caption-cancel/voice.wav", voice)
    req = FinishRequest(
        job_id=job_id, kind="render", voice_key="jobs/caption-cancel/voice.wav",
        frames=FramesRef(key="jobs/caption-cancel/frames.mp4", width=64, height=64, fps=FPS,
                         n_frames=4),
        options=FinishOptions(width=W, height=H, fps=FPS, quality="draft",
                              normalize_loudness=False, captions=heavy_captions(400, seconds),
                              caption_style=WORST_STYLE),
        video_key="videos/caption-cancel/final.mp4")
    outcome: dict = {}

    def run():
        try:
            FinishStage(settings, storage).run(req)
            outcome["result"] = "finished"
        except BaseException as e:  # noqa: BLE001 - the test reads what it was
            outcome["result"] = e
        outcome["ended"] = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    # wait until the layout is under way (the finisher reports 0.25 once the mix is done),
    # then give it a moment more, then cancel
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60:
        p = store.get_progress(job_id)
        if p and p["fraction"] >= 0.25:
            break
        time.sleep(0.05)
    time.sleep(1.5)
    p = store.get_progress(job_id)
    assert p and 0.25 <= p["fraction"] < 0.3, p  # still laying captions out
    cancelled_at = time.monotonic()
    store.request_cancel(job_id)
    worker.join(timeout=6)
    assert not worker.is_alive(), "the caption layout did not stop within 6 s of the cancel"
    took = outcome["ended"] - cancelled_at
    figures.note("caption cancel", f"finisher stopped {took:.2f} s after the cancel "
                 "(400 captions of 2000 characters)")
    assert isinstance(outcome["result"], JobCancelled), outcome
    assert took <= 2.0, took


def test_write_ass_reports_progress_through_every_caption(tmp_path):
    seen: list[float] = []
    caps = heavy_captions(5, 5.0, seed=1)
    write_ass(str(tmp_path / "c.ass"), caps, WORST_STYLE, W, H, FPS, progress=seen.append)
    assert len(seen) > 5 * 10  # called inside each caption's layout, not only between them
    assert seen == sorted(seen) and 0 <= seen[0] and seen[-1] < 1


def test_caption_layout_cost_sets_the_total_text_limit(figures):
    """The worst case measured here, per character, times the total-text limit is the longest
    layout a request can ask for: it must stay within LAYOUT_BUDGET_S (on this 2-core box,
    with room for a loaded machine)."""
    LAYOUT_BUDGET_S = 30.0
    rng = random.Random(2)
    # the costliest text measured: one word as long as a caption may be, of the widest glyph
    texts = [long_caption_text(rng) for _ in range(2)] + ["W" * MAX_CAPTION_CHARS]
    t0 = time.perf_counter()
    for text in texts:
        layout_caption(text, WORST_STYLE, W, H)
    per_char = (time.perf_counter() - t0) / sum(len(t) for t in texts)
    worst_total = per_char * schemas.MAX_CAPTION_TEXT_TOTAL
    limit = schemas.MAX_CAPTION_TEXT_TOTAL
    figures.note("caption layout cost", f"{per_char * 1e6:.1f} us per character in the worst "
                 f"style: {per_char * MAX_CAPTION_CHARS:.2f} s per {MAX_CAPTION_CHARS}-character "
                 f"caption, {worst_total:.1f} s for the {limit}-character total limit")
    assert worst_total <= LAYOUT_BUDGET_S, worst_total


def test_api_refuses_captions_past_the_total_text_limit():
    per = MAX_CAPTION_CHARS
    n = schemas.MAX_CAPTION_TEXT_TOTAL // per + 1
    base = {"job_type": "video_render", "job_id": "t", "image": "aGk=", "audio": "aGk="}
    caps = [{"text": "x" * per, "start": i, "end": i + 0.5} for i in range(n)]
    with pytest.raises(ValidationError) as info:
        VideoRenderInput.model_validate({**base, "captions": caps})
    err = info.value.errors()[0]
    assert err["loc"] == ("captions",) and str(schemas.MAX_CAPTION_TEXT_TOTAL) in err["msg"]
    VideoRenderInput.model_validate({**base, "captions": caps[:-1]})  # at the limit: fine
