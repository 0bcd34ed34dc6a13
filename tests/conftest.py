"""Shared pytest set-up: offline mode, Keras backend, and a per-session cache of built fixtures."""

import os

# Before anything imports keras, transformers or huggingface_hub: they read these at import time.
os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# `tests.fixtures...` must import the same way under `pytest` and `python -m pytest`.
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.fixtures.factory import FIXTURES, build_fixture  # noqa: E402


@pytest.fixture(scope="session")
def hf_fixture(tmp_path_factory):
    """`get(name) -> Path`: the fixture checkpoint `name` (a key of FIXTURES), built at most once
    per test session under the session's temporary directory. Treat the directory as read-only."""
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in FIXTURES:
            raise KeyError(f"unknown fixture {name!r}; known: {', '.join(FIXTURES)}")
        if name not in built:
            built[name] = build_fixture(name, tmp_path_factory.mktemp(f"hf_{name}"))
        return built[name]

    return get
