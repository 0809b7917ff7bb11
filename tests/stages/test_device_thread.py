"""A stage that warms up runs its warm-up and every job on one thread (cuDNN keeps its tuning per
thread, so a job on another thread would tune again); a stage that does not warm up runs calls
on the caller's thread. The model's forwards are recorded by a hook on the real network."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from core.storage import open_storage
from stages.contracts import UpscaleRequest
from stages.device_thread import DeviceThread
from stages.upscale import UpscaleStage
from tests.support.media import small_portrait
from tests.support.engines import tiny_upscalers


def test_a_pinned_thread_runs_every_call_on_one_thread_and_passes_results_and_errors():
    worker = DeviceThread("t", pinned=True)
    with ThreadPoolExecutor(4) as callers:
        idents = set(callers.map(lambda _: worker.call(threading.get_ident), range(16)))
    assert len(idents) == 1 and threading.get_ident() not in idents
    assert worker.call(lambda a, b=0: a + b, 2, b=3) == 5
    with pytest.raises(ValueError, match="bad frame"):
        worker.call(_raise, ValueError("bad frame"))
    # a call from the thread itself runs in place instead of waiting on itself
    assert worker.call(lambda: worker.call(threading.get_ident)) in idents
    # a daemon: a hung job never holds the process at exit
    assert worker.describe() == "pinned" and worker._thread.daemon


def test_an_unpinned_thread_runs_on_the_caller():
    worker = DeviceThread("t", pinned=False)
    assert worker.call(threading.get_ident) == threading.get_ident()
    assert worker.describe() == "caller's"


def _raise(e):
    raise e


def _forward_threads(net: torch.nn.Module) -> list[int]:
    seen: list[int] = []
    net.register_forward_pre_hook(lambda *_: seen.append(threading.get_ident()))
    return seen


def _upscale(stage: UpscaleStage, n: int):
    return stage.run(UpscaleRequest(job_id="u1", image_key="scratch/u1/inputs/image.png",
                                    max_width=400, max_height=400, out_key=f"scratch/u1/work/{n}.png"))


@pytest.mark.parametrize("warmup", ["on", "off"])
def test_jobs_on_any_caller_thread_run_where_the_warm_up_ran(settings, warmup, one_torch_thread):
    s = settings.model_copy(update={"warmup": warmup})
    storage = open_storage(s)
    storage.put_bytes("scratch/u1/inputs/image.png", small_portrait(200))
    models = tiny_upscalers()
    seen = _forward_threads(models["x4"].net)
    stage = UpscaleStage(s, storage, models=models)
    warmed = list(seen)
    assert bool(warmed) == (warmup == "on")
    # jobs arrive as Ray Serve sends them: on whichever thread of its pool is free
    callers = []
    for n in range(3):
        t = threading.Thread(target=lambda n=n: callers.append((threading.get_ident(), _upscale(stage, n))))
        t.start()
        t.join()
    assert all(result.runs == 1 for _, result in callers)
    ran = set(seen[len(warmed):])
    if warmup == "on":
        assert stage.describe()["thread"] == "pinned"
        assert ran == set(warmed) and len(ran) == 1
    else:
        assert stage.describe()["thread"] == "caller's"
        assert ran == {ident for ident, _ in callers}
