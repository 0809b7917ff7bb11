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

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")


class DeviceThread:
    def __init__(self, stage: str, pinned: bool):
        self.stage = stage
        self._pool = (ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"pf-{stage}-device")
                      if pinned else None)
        self._ident = self._pool.submit(threading.get_ident).result() if pinned else None

    @property
    def pinned(self) -> bool:
        return self._pool is not None

    def call(self, fn: Callable[..., T], /, *args, **kwargs) -> T:
        """fn(*args, **kwargs) on the stage's thread (the caller's when not pinned, or when the
        caller is that thread already); its result or its exception, as a direct call gives."""
        if self._pool is None or threading.get_ident() == self._ident:
            return fn(*args, **kwargs)
        return self._pool.submit(fn, *args, **kwargs).result()

    def describe(self) -> str:
        return "pinned" if self.pinned else "caller's"

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
