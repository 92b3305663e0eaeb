from __future__ import annotations

from pathlib import Path

import pytest

from kb_platform.config import Settings, get_settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def corpus_dir(settings: Settings) -> Path:
    path = settings.corpus_dir
    if not path.is_dir():
        pytest.fail(f"shared corpus not found at {path}; set KB_CORPUS_DIR")
    return path
