"""One long-lived thread for a stage's GPU work, so what start-up tuned is what jobs use.

PyTorch keeps cuDNN's autotuning results (`torch.backends.cudnn.benchmark`) per thread: its
cuDNN v8 convolution path caches execution plans in `thread_local` storage. A Ray Serve replica
runs sync methods on a pool of threads (RAY_SERVE_RUN_SYNC_IN_THREADPOOL, on by default), and the
in-process service calls stages through `asyncio.to_thread`: a call that lands on a thread that
never ran a shape tunes it again, seconds for the VAE's large convolutions. That is the cost that
"came and went between runs" and made `fast` slower than `standard` (issue 20), and it would undo
the start-up warm-up for any job served by another thread.

So a stage that warms up (stages/startup.py) pins its warm-up and every job to one thread. A
stage that does not warm up (CPU engines) runs calls on the caller's thread, as before: pinning
would only serialise them. One job at a time per GPU replica (max_ongoing_requests=1) means the
pinned thread costs no concurrency there.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Callable, TypeVar

T = TypeVar("T")


class DeviceThread:
    """Runs calls on one daemon thread (pinned) or on the caller's (not pinned). A daemon: a
    job that hangs on the GPU never keeps the replica's process from exiting. A job that timed
    out or was cancelled runs on until its next progress check, as it did on Serve's threads;
    the next call waits behind it."""

    def __init__(self, stage: str, pinned: bool):
        self.stage = stage
        self._calls: queue.SimpleQueue | None = queue.SimpleQueue() if pinned else None
        self._thread: threading.Thread | None = None
        if pinned:
            self._thread = threading.Thread(target=self._serve, name=f"pf-{stage}-device",
                                            daemon=True)
            self._thread.start()

    @property
    def pinned(self) -> bool:
        return self._thread is not None

    def call(self, fn: Callable[..., T], /, *args, **kwargs) -> T:
        """fn(*args, **kwargs) on the stage's thread (the caller's when not pinned, or when the
        caller is that thread already); its result or its exception, as a direct call gives."""
        if self._thread is None or threading.current_thread() is self._thread:
            return fn(*args, **kwargs)
        done: Future = Future()
        self._calls.put((done, fn, args, kwargs))
        return done.result()

    def _serve(self) -> None:
        while True:
            done, fn, args, kwargs = self._calls.get()
            try:
                done.set_result(fn(*args, **kwargs))
            except BaseException as e:  # noqa: BLE001 - handed to the caller, raised there
                done.set_exception(e)

    def describe(self) -> str:
        return "pinned" if self.pinned else "caller's"
