"""Run the `hf2kh` CLI in this process and capture what it writes (for the CLI contract tests).

Captures Python-level stdout and stderr (what hf2kh itself prints: progress, summary, the one
`error:` line), not C-level writes of third-party libraries such as TensorFlow's import logs.
"""

from __future__ import annotations

import io
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from unittest import mock

from hf2kh.cli import main


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()

    def only_error(self) -> str:
        """The one line on stderr, which must be an `error:` line; its text after `error: `."""
        assert len(self.err_lines) == 1, self.err
        assert self.err_lines[0].startswith("error: "), self.err
        assert "Traceback" not in self.out + self.err
        return self.err_lines[0].removeprefix("error: ")


def run_cli(*args: str) -> CliResult:
    """`hf2kh *args` in-process: its exit code and its stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with (
        mock.patch.object(sys, "argv", ["hf2kh", *args]),
        redirect_stdout(out),
        redirect_stderr(err),
    ):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return CliResult(code, out.getvalue(), err.getvalue())
