"""A full disk during conversion (simulated with a file-size limit, RLIMIT_FSIZE, on the real
`hf2kh` process and so on the conversion script it starts): one `error:` line saying so, and
`--out` exactly as it was."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

# Above every file a port writes before converting (the layer graph: ~80 KB for the llama
# fixture), below the converted preset's weights (~280 KB).
FILE_SIZE_LIMIT = 160_000


def _console_script() -> str:
    script = Path(sys.executable).with_name("hf2kh")
    return str(script) if script.exists() else (shutil.which("hf2kh") or "hf2kh")


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def _contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_full_disk_during_conversion_leaves_out_as_it_was(ported, hf_fixture, tmp_path):
    earlier = ported("llama")
    assert earlier.cli.exit_code == 0, earlier.cli.describe()
    out = tmp_path / "out"
    shutil.copytree(earlier.out, out)
    assert (out / "preset" / "model.weights.h5").stat().st_size > FILE_SIZE_LIMIT
    before = _contents(out)
    proc = subprocess.run(
        [_console_script(), "port", str(hf_fixture("llama")), "--out", str(out), "--force",
         "--name", "tiny_llama", "--quiet"],
        env={**os.environ, "KERAS_BACKEND": "torch"},
        preexec_fn=_limit_file_size,
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0] == (
        "error: the disk is full: writing the preset failed (File too large); free some space "
        f"in {tmp_path} and run the port again (--out was left as it was)"
    )
    assert _contents(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left behind
