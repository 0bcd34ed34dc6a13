"""Internal errors: an exception hf2kh did not expect is a bug; keep its traceback in a file.

The CLI prints one line naming the file (exit code `INTERNAL_ERROR_EXIT`), so nightly logs stay
readable and the full traceback can still be attached to a bug report.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

from hf2kh import __version__

INTERNAL_ERROR_EXIT = 3


def write_crash_report(exc: BaseException) -> Path:
    """Write `exc`'s traceback, the command line and versions to a new file in the temp dir."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    fd, name = tempfile.mkstemp(prefix=f"hf2kh-crash-{stamp}-", suffix=".txt")
    lines = [
        f"hf2kh {__version__}, Python {platform.python_version()}, {platform.platform()}",
        f"command: {' '.join(sys.argv)}",
        "",
        *traceback.format_exception(exc),
    ]
    with os.fdopen(fd, "w") as file:
        file.write("\n".join(line.rstrip("\n") for line in lines) + "\n")
    return Path(name)


def one_line(text: str) -> str:
    """`text` on one line: its lines joined with '; ' (messages may quote multi-line errors)."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def internal_error_message(exc: BaseException, report: Path | None) -> str:
    """The one line the CLI prints for an unexpected exception."""
    where = f"full traceback in {report}" if report else "the traceback could not be written"
    detail = one_line(str(exc))
    summary = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return f"internal error, a bug in hf2kh ({summary}); {where}; please report it"
