from __future__ import annotations

import pytest

from serve_app.settings import Settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(storage="local", storage_dir=tmp_path / "store", cache_dir=tmp_path / "cache",
                    models_dir=tmp_path / "models", personas_dir=tmp_path / "personas",
                    public_base_url="http://127.0.0.1:9")
