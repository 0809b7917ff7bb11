"""Errors a stage raises on purpose: they end the job FAILED with a code and a readable reason."""
from __future__ import annotations


class StageError(Exception):
    """A job-level failure with a stable code (e.g. NO_FACE) and a message for the client."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def __reduce__(self):  # keep code/message across Ray's pickling
        return (type(self), (self.code, self.message))


class JobCancelled(StageError):
    def __init__(self, code: str = "CANCELLED", message: str = "the job was cancelled"):
        super().__init__(code, message)
