"""The list file of `hf2kh nightly`: one checkpoint a line, with optional options.

    # comment
    path/to/checkpoint
    org/model --revision main --dtype bfloat16 --timeout 900
    other/model --backend jax

Options are `hf2kh port` options (passed on as written) plus `--timeout SECONDS`, this line's time
limit. A line's id (the key a baseline is compared by) is the line itself, whitespace-normalized.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from hf2kh.errors import BadOptionError

# Options that `hf2kh nightly` sets itself for every line.
RESERVED = ("--out", "--verify", "--force", "--quiet", "-q", "--junit")


@dataclass(frozen=True)
class Entry:
    id: str
    repo: str
    options: tuple[str, ...]
    timeout: float | None  # None: the command's --timeout


def parse_line(line: str, where: str) -> Entry | None:
    try:
        words = shlex.split(line, comments=True)
    except ValueError as exc:
        raise BadOptionError(f"{where}: {exc}") from exc
    if not words:
        return None
    repo, rest, options, timeout = words[0], words[1:], [], None
    while rest:
        word = rest.pop(0)
        if word == "--timeout" or word.startswith("--timeout="):
            value = word.partition("=")[2] if "=" in word else (rest.pop(0) if rest else "")
            try:
                timeout = float(value)
            except ValueError:
                timeout = -1.0
            if not timeout > 0:
                raise BadOptionError(f"{where}: --timeout needs a positive number of seconds")
        elif word.split("=")[0] in RESERVED:
            raise BadOptionError(f"{where}: {word} is set by hf2kh nightly itself")
        else:
            options.append(word)
    return Entry(shlex.join(words), repo, tuple(options), timeout)


def read_list(path: Path) -> list[Entry]:
    """The entries of the list file `path` (BadOptionError naming the line when one is wrong)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise BadOptionError(f"cannot read the list file {path}: {exc.strerror}") from exc
    entries = []
    for number, line in enumerate(lines, 1):
        entry = parse_line(line, f"{path}:{number}")
        if entry is not None:
            entries.append(entry)
    ids = [e.id for e in entries]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise BadOptionError(f"{path}: the line {duplicates[0]!r} is listed twice")
    if not entries:
        raise BadOptionError(f"{path} lists no checkpoint")
    return entries
