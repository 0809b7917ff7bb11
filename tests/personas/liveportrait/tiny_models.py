"""The small golden config's checkpoints on disk, as the product finds them: the five files in the
official layout (weights by the parity rule, weights_rule.py) plus liveportrait/config.json.
Random weights: for wiring and geometry tests, never for picture quality."""
from __future__ import annotations

from pathlib import Path

from personas.liveportrait.checkpoint import build_models, write_official_checkpoints
from tests.personas.liveportrait.test_parity import config_for
from tests.personas.liveportrait.weights_rule import official_state_dicts


def write_tiny_checkpoints(models_dir: str | Path) -> None:
    config = config_for("tiny")
    write_official_checkpoints(models_dir, official_state_dicts(build_models(config)), config)
