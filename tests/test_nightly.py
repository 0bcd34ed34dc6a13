"""`hf2kh nightly`: the list file, the baseline comparison, and two real runs (the second against
a checkpoint with an injected regression), their JSON and JUnit XML read as a CI system would."""

from __future__ import annotations

import json
import shutil
from xml.etree import ElementTree as ET

import pytest

from hf2kh.errors import BadOptionError
from hf2kh.nightly.compare import regressions
from hf2kh.nightly.listfile import parse_line, read_list
from hf2kh.nightly.run import CheckResult, EntryResult
from tests.fixtures.cli import run_cli


def test_list_lines(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text(
        "# nightly\n\nsome/model\n'a dir/ckpt' --dtype bfloat16 --timeout 90  # slow one\n"
    )
    first, second = read_list(path)
    assert (first.repo, first.options, first.timeout) == ("some/model", (), None)
    assert second.repo == "a dir/ckpt"
    assert second.options == ("--dtype", "bfloat16") and second.timeout == 90.0
    assert second.id == "'a dir/ckpt' --dtype bfloat16 --timeout 90"


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("m --out x", "--out is set by hf2kh nightly itself"),
        ("m --timeout -3", "--timeout needs a positive number"),
        ("m 'unclosed", "No closing quotation"),
    ],
)
def test_bad_list_lines_name_the_line(line, says):
    with pytest.raises(BadOptionError, match=f"list:7: .*{says}"):
        parse_line(line, "list:7")


def _entry(id_, status="passed", checks=()):
    return EntryResult(id_, id_, (), status, 0, None, 1.0, tuple(checks))


def test_regressions_against_a_baseline():
    baseline = [
        _entry("a", checks=[CheckResult("logits", "logits", True, 2e-6),
                            CheckResult("embeddings", "layers", True, 0.0),
                            CheckResult("gone", "layers", True, 1e-6)]),
        _entry("b", checks=[CheckResult("logits", "logits", True, 1e-6)]),
        _entry("c"),
        _entry("d", status="failed", checks=[CheckResult("logits", "logits", False, 1.0)]),
    ]  # fmt: skip
    current = [
        _entry("a", checks=[CheckResult("logits", "logits", True, 9e-6),  # 4.5x: fine
                            CheckResult("embeddings", "layers", True, 1e-7)]),  # noise: fine
        _entry("b", status="failed", checks=[CheckResult("logits", "logits", False, 3e-4)]),
        _entry("d", status="failed", checks=[CheckResult("logits", "logits", False, 1.0)]),
        _entry("new one"),
    ]  # fmt: skip
    lines = [r.line() for r in regressions(baseline, current)]
    assert lines == [
        "disappeared: a :: gone: check not run",
        "new failure: b: failed",
        "new failure: b :: logits: error 3.0e-04 (was 1.0e-06)",
        "disappeared: c: not in this run",
    ]
    grown = [_entry("a", checks=[CheckResult("logits", "logits", True, 2.1e-5),
                                 CheckResult("embeddings", "layers", True, 0.0),
                                 CheckResult("gone", "layers", True, 1e-6)])]  # fmt: skip
    assert [r.line() for r in regressions(baseline[:1], grown)] == [
        "error grew: a :: logits: 2.0e-06 -> 2.1e-05"
    ]


def _junit(path):
    """The XML as a CI system reads it: per suite, its cases and which failed or errored."""
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suites = {}
    for suite in root.iter("testsuite"):
        cases = {}
        for case in suite.iter("testcase"):
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            cases[case.get("name")] = None if bad is None else bad.get("message")
        assert int(suite.get("tests")) == len(cases)
        suites[suite.get("name")] = cases
    return suites


def test_two_nightly_runs_the_second_with_a_regression(hf_fixture, tmp_path):
    checkpoint = tmp_path / "llama ckpt"
    shutil.copytree(hf_fixture("llama"), checkpoint)
    listing = tmp_path / "nightly.txt"
    listing.write_text(f"'{checkpoint}' --name tiny_llama\n")
    line_id = f"'{checkpoint}' --name tiny_llama"

    first = run_cli("nightly", listing, "--out", tmp_path / "run1")
    assert first.exit_code == 0, first.describe()
    report = json.loads((tmp_path / "run1" / "nightly.json").read_text())
    (entry,) = report["entries"]
    assert entry["id"] == line_id and entry["status"] == "passed" and entry["exit_code"] == 0
    suites = _junit(tmp_path / "run1" / "nightly.xml")
    assert set(suites) == {line_id}
    assert suites[line_id]["port"] is None
    assert {"logits", "transformer_layer_1 alone"} <= set(suites[line_id])
    assert all(message is None for message in suites[line_id].values())

    # The injected regression: the checkpoint's weights file is cut short.
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    second = run_cli(
        "nightly", listing, "--out", tmp_path / "run2",
        "--baseline", tmp_path / "run1" / "nightly.json",
    )  # fmt: skip
    assert second.exit_code == 1, second.describe()
    (error_line,) = second.error_lines
    assert error_line.startswith(f"error: 1 regression(s) against {tmp_path / 'run1'}")
    assert f"new failure: {line_id}: refused: " in error_line
    assert f"regression new failure: {line_id}: refused: " in second.stdout
    suites = _junit(tmp_path / "run2" / "nightly.xml")
    assert suites[line_id]["port"].startswith("refused: ")
    (baseline_case,) = suites["baseline"].values()
    assert baseline_case.startswith(f"new failure: {line_id}: refused: ")
