"""Shared pytest set-up: offline mode, Keras backend, and per-session caches of built fixtures
(`hf_fixture`) and of their ports (`ported`), shared by every test module that needs them."""

import os

# Before anything imports keras, transformers or huggingface_hub: they read these at import time.
os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# `tests.fixtures...` must import the same way under `pytest` and `python -m pytest`.
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.fixtures.cli import AWKWARD_DIR, CliRun, run_cli  # noqa: E402
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


@dataclass(frozen=True)
class Port:
    """One `hf2kh port <fixture> --verify` run, through the CLI entry point in-process."""

    fixture: str
    package: str  # the generated package's name (`tiny_<fixture>`)
    out: Path  # --out
    junit: Path  # --junit
    cli: CliRun

    @property
    def report(self) -> dict:
        return json.loads((self.out / "report.json").read_text())


@pytest.fixture(scope="session")
def ported(hf_fixture, tmp_path_factory):
    """`get(name, *options) -> Port`: the fixture `name` ported with `--verify` (plus `options`,
    e.g. "--dtype", "bfloat16"), at most once per session for each (name, options). A refused
    port is returned too (its exit code and stderr are in `Port.cli`). Treat the output as
    read-only."""
    done: dict[tuple[str, tuple[str, ...]], Port] = {}

    def get(name: str, *options: str) -> Port:
        key = (name, options)
        if key not in done:
            root = tmp_path_factory.mktemp(f"port_{name}")
            out = root.joinpath(*AWKWARD_DIR)
            package = f"tiny_{name}"
            junit = root / "junit.xml"
            run = run_cli(
                "port",
                hf_fixture(name),
                "--out",
                out,
                "--name",
                package,
                "--verify",
                "--junit",
                junit,
                *options,
            )
            done[key] = Port(name, package, out, junit, run)
        return done[key]

    return get
