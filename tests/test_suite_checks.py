"""The suite's own checks stay honest: every subprocess a test starts has a time limit, and no test
turns a broken dependency into a skip (`pytest.importorskip`)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SUBPROCESS_CALLS = {"run", "call", "check_call", "check_output"}


def _test_sources() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def _has_timeout(call: ast.Call) -> bool:
    return any(k.arg == "timeout" for k in call.keywords) or any(
        k.arg is None
        for k in call.keywords  # **kwargs: cannot tell, trust it
    )


def _attribute_call(node: ast.AST) -> tuple[str, str] | None:
    """`(owner, attribute)` of a call like `subprocess.run(...)` or `proc.wait(...)`."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        owner = node.func.value
        name = owner.id if isinstance(owner, ast.Name) else ast.unparse(owner)
        return name, node.func.attr
    return None


def untimed_subprocesses(source: str, filename: str = "<test>") -> list[str]:
    """Where `source` starts a process without a timeout: `subprocess.run/call/check_call/
    check_output` without `timeout=`, or a function that opens `subprocess.Popen` and never
    waits for it with a timeout (`communicate(timeout=...)` / `wait(timeout=...)`)."""
    tree = ast.parse(source, filename)
    found = []
    for node in ast.walk(tree):
        called = _attribute_call(node)
        if called and called[0] == "subprocess" and called[1] in SUBPROCESS_CALLS:
            if not _has_timeout(node):
                found.append(f"{filename}:{node.lineno} subprocess.{called[1]} without timeout")
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        calls = [_attribute_call(n) and (n, _attribute_call(n)) for n in ast.walk(func)]
        calls = [c for c in calls if c]
        opens = [n for n, (owner, attr) in calls if (owner, attr) == ("subprocess", "Popen")]
        waits = [
            n
            for n, (_, attr) in calls
            if attr in ("communicate", "wait") and (_has_timeout(n) or n.args)
        ]
        if opens and not waits:
            found.append(
                f"{filename}:{opens[0].lineno} subprocess.Popen never waited for with a timeout"
            )
    return found


def test_every_subprocess_in_the_tests_has_a_timeout():
    found = []
    for path in _test_sources():
        found += untimed_subprocesses(path.read_text(), str(path.relative_to(TESTS)))
    assert not found, "\n".join(found)


def test_the_timeout_check_finds_what_it_looks_for():
    assert untimed_subprocesses("import subprocess\nsubprocess.run(['x'])\n")
    assert untimed_subprocesses("import subprocess\nsubprocess.check_output(['x'], text=True)\n")
    assert not untimed_subprocesses("import subprocess\nsubprocess.run(['x'], timeout=5)\n")
    popen = "import subprocess\ndef f():\n    p = subprocess.Popen(['x'])\n    p.{}\n"
    assert untimed_subprocesses(popen.format("communicate()"))
    assert untimed_subprocesses(popen.format("wait()"))
    assert not untimed_subprocesses(popen.format("communicate(timeout=3)"))
    assert not untimed_subprocesses(popen.format("wait(3)"))


def test_no_test_skips_on_a_missing_import():
    """A dependency that fails to import must fail its tests, not skip them."""
    found = [
        f"{path.relative_to(TESTS)}:{node.lineno}"
        for path in _test_sources()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "importorskip"
    ]
    assert not found, found


def test_the_test_command_shows_the_slowest_tests():
    """`python -m pytest` (README, .ci/run) prints the 20 slowest tests in every run."""
    import configparser

    config = configparser.ConfigParser()
    config.read(TESTS.parent / "setup.cfg")
    assert "--durations=20" in config["tool:pytest"]["addopts"].split()
