"""The CLI contract of README "Exit codes": each code, its one `error:` line, progress on stdout.

0 success, 1 verification failed, 2 bad input or unsupported model, 3 internal error (a bug in
hf2kh, traceback in a file), 130/143 interrupted by SIGINT/SIGTERM (those two are tested with the
staging clean-up in tests/test_output_safety.py). The CLI runs in-process (tests/cli_run.py).
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest

import hf2kh.port
from hf2kh import output
from tests.cli_run import run_cli
from tests.fixtures.factory import FixtureSpec, build_from_spec

REPO_ROOT = Path(__file__).resolve().parent.parent

# A DiffLlama decoder: its differential attention (two softmax maps, one subtracted from the other
# with a learned lambda) repeats the value heads (`repeat`), which no component explains yet.
# (This was a GLM until the rope layout explained GLM's interleaved pairs; GLM ports now.)
DIFFLLAMA = FixtureSpec(
    name="diffllama",
    family="diffllama",
    task="causal_lm",
    config=dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    ),
    tokenizer="sp_llama",
    notes="differential attention (lambda_q1/k1/q2/k2, a per-head group norm)",
)


@pytest.fixture(scope="module")
def first_port(hf_fixture, tmp_path_factory):
    """A real port of the llama fixture (no --verify) and what the CLI printed."""
    out = tmp_path_factory.mktemp("contract") / "out"
    result = run_cli("port", str(hf_fixture("llama")), "--out", str(out), "--name", "contract_a")
    return out, result


def test_success_exits_0_with_progress_on_stdout_and_nothing_on_stderr(first_port):
    out, result = first_port
    assert result.code == 0, result.err
    assert result.err == ""
    stages = re.findall(r"^> (\w+):", result.out, flags=re.MULTILINE)
    assert stages == ["source", "inspect", "recognize", "audit", "generate", "convert"]
    assert f"report {out / 'report.json'}" in result.out
    assert output.is_port(out) and (out / output.PORT_MARKER).is_file()


def test_verification_failure_exits_1(hf_fixture, tmp_path, monkeypatch):
    from hf2kh.verify.report import Check, VerifyReport

    def failing_verify(module, spec, *args):
        report = VerifyReport(model=spec.name, dtype="float32", device="cpu")
        report.checks = [Check("logits", "logits", False, "off by 1.0", 1.0, 1.0)]
        report.first_divergence = "logits: every block matches"
        return report

    monkeypatch.setattr(hf2kh.port, "verify_port", failing_verify)
    out = tmp_path / "out"
    result = run_cli("port", str(hf_fixture("llama")), "--out", str(out), "--verify")
    assert result.code == 1
    assert result.only_error() == "verification failed: logits: every block matches"
    assert "> verify: comparing HF and the converted KerasHub model" in result.out
    assert "verification FAILED" in result.out
    assert json.loads((out / "report.json").read_text())["passed"] is False


def test_bad_dtype_exits_2_with_one_line(tmp_path):
    out = tmp_path / "out"
    result = run_cli("port", str(REPO_ROOT / "examples" / "tiny-llama"), "--out", str(out),
                     "--dtype", "float64")  # fmt: skip
    assert result.code == 2
    assert result.only_error() == (
        "--dtype must be one of float32, bfloat16, float16, not 'float64'"
    )
    assert result.out == ""
    assert not out.exists()


@pytest.fixture(scope="module")
def unsupported_checkpoint(tmp_path_factory) -> Path:
    return build_from_spec(DIFFLLAMA, tmp_path_factory.mktemp("hf_diffllama"))


@pytest.mark.parametrize("quiet", [False, True])
def test_unsupported_model_exits_2_naming_the_module(unsupported_checkpoint, tmp_path, quiet):
    out = tmp_path / "out"
    flags = ["--quiet"] if quiet else []
    result = run_cli("port", str(unsupported_checkpoint), "--out", str(out), *flags)
    assert result.code == 2
    assert result.only_error() == (
        "op `repeat` in model.layers.0.self_attn is not explained by any recognized "
        "component; porting without it would compute something else"
    )
    if quiet:
        assert result.out == ""
    else:
        assert re.findall(r"^> (\w+):", result.out, flags=re.MULTILINE) == [
            "source",
            "inspect",
            "recognize",
        ]
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_bad_input_progress_goes_to_stdout_and_the_error_to_stderr(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{not json")
    result = run_cli("port", str(ckpt), "--out", str(tmp_path / "out"))
    assert result.code == 2
    assert "config.json" in result.only_error()
    assert result.out.startswith("> source: opening the checkpoint")


def test_internal_error_exits_3_with_the_traceback_in_a_file(tmp_path, monkeypatch):
    def broken(options, staging, out, progress):
        progress("source: opening the checkpoint")
        (staging / "half-written").write_text("")
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(hf2kh.port, "_port_into", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    out = tmp_path / "out"
    result = run_cli("port", str(REPO_ROOT / "examples" / "tiny-llama"), "--out", str(out))
    assert result.code == 3
    line = result.only_error()
    match = re.fullmatch(
        r"internal error, a bug in hf2kh \(RuntimeError: boom; second line\); "
        r"full traceback in (\S+); please report it",
        line,
    )
    assert match, line
    report = Path(match[1])
    assert report.parent == tmp_path / "tmp" and report.name.startswith("hf2kh-crash-")
    text = report.read_text()
    assert "Traceback (most recent call last)" in text
    assert 'raise RuntimeError("boom\\nsecond line")' in text
    assert text.rstrip().endswith("RuntimeError: boom\nsecond line")
    assert result.out == "> source: opening the checkpoint\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]  # no out, no staging


def test_readme_lists_every_exit_code():
    readme = (REPO_ROOT / "README.md").read_text()
    paragraph = readme[readme.index("Exit codes:") :].split("\n\n")[0]
    codes = dict(re.findall(r"\b(\d+) (\w+)", paragraph.split(".")[0]))
    assert codes == {
        "0": "success",
        "1": "verification",
        "2": "bad",
        "3": "internal",
        "130": "interrupted",
        "143": "terminated",
    }, paragraph


def test_quiet_force_replaces_the_earlier_port_silently(first_port, hf_fixture):
    """Runs last in this module: it replaces `first_port`."""
    out, _ = first_port
    args = ["port", str(hf_fixture("llama")), "--out", str(out), "--name", "contract_b"]
    refused = run_cli(*args)
    assert refused.code == 2
    assert refused.only_error() == (
        f"output directory {out} holds an earlier port; pass --force to replace it"
    )
    result = run_cli(*args, "--force", "--quiet")
    assert result.code == 0, result.err
    assert (result.out, result.err) == ("", "")
    assert (out / "contract_b").is_dir() and not (out / "contract_a").exists()
    assert json.loads((out / "report.json").read_text())["package_dir"] == str(out / "contract_b")
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]
