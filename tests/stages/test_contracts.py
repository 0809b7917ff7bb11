"""Every stage method a graph may call is declared once (stages.contracts) and exists, with the
declared request and result types, on the Ray-free stage and on its Serve deployment; and a
graph calling a method with the wrong request type fails before anything runs."""
from __future__ import annotations

import asyncio
import importlib
import inspect
import typing

import pytest

from core.runner import JobContext
from stages.contracts import LIPSYNC, STAGE_METHODS, LipSyncRequest, UpscaleRequest

DEPLOYMENTS = {"lipsync": ("deployments.lipsync", "LipSync"),
               "face_restore": ("deployments.face_restore", "FaceRestore"),
               "upscale": ("deployments.upscale", "Upscale"),
               "finisher": ("deployments.finisher", "Finisher")}


def _resolve(dotted: str):
    module, cls, method = dotted.rsplit(".", 2)
    return getattr(getattr(importlib.import_module(module), cls), method)


@pytest.mark.parametrize("target", STAGE_METHODS, ids=lambda m: f"{m.stage}.{m.method}")
def test_declared_method_exists_with_its_types(target):
    impl = _resolve(target.implementation)
    hints = typing.get_type_hints(impl)
    assert impl.__name__ == target.method
    assert hints["req"] is target.request and hints["return"] is target.result
    module, cls = DEPLOYMENTS[target.stage]
    deployment = importlib.import_module(module).__dict__[cls].func_or_class
    shell = getattr(deployment, target.method)
    shell_hints = typing.get_type_hints(shell)
    assert shell_hints["req"] is target.request and shell_hints["return"] is target.result


def test_every_stage_method_of_a_deployment_is_declared():
    declared = {(m.stage, m.method) for m in STAGE_METHODS}
    for stage, (module, cls) in DEPLOYMENTS.items():
        deployment = importlib.import_module(module).__dict__[cls].func_or_class
        public = {name for name, fn in inspect.getmembers(deployment, inspect.isfunction)
                  if not name.startswith("_") and name not in ("describe", "check_health")}
        assert {(stage, name) for name in public} <= declared, (stage, public)


def test_a_wrong_request_type_fails_before_any_stage_call(settings):
    calls = []

    async def call(stage, method, req):
        calls.append((stage, method))

    ctx = JobContext(record=None, settings=settings, storage=None, store=None, _call=call,
                     stage_log=[])
    wrong = UpscaleRequest(job_id="j", image_key="k", max_width=2, max_height=2, out_key="o")
    with pytest.raises(TypeError, match="lipsync.run takes a LipSyncRequest"):
        asyncio.run(ctx.call(LIPSYNC.run, wrong))
    assert calls == [] and LipSyncRequest is LIPSYNC.run.request
