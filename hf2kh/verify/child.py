"""`python -m hf2kh.verify.child REQUEST.json`: the Keras side of a verification on another
backend (`hf2kh.verify.run.verify_in_child`). KERAS_BACKEND is set by the parent; this process
loads the HF model (torch), the generated package and its preset, and writes the report as JSON.
Failures end as hf2kh's CLI ends them: one `error:` line on stderr and its exit code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hf2kh.verify.terminal import silence_native_logs

silence_native_logs()


def main(request_path: str) -> None:
    from hf2kh.crash import (
        INTERNAL_ERROR_EXIT,
        internal_error_message,
        one_line,
        write_crash_report,
    )
    from hf2kh.errors import Hf2khError
    from hf2kh.verify.run import PortFiles, Reference, VerifyOptions, verify

    request = json.loads(Path(request_path).read_text())
    try:
        files = PortFiles(**{k: Path(v) if k != "name" else v for k, v in request["files"].items()})
        reference = Reference(
            Path(request["reference"]["path"]), request["reference"]["trust_remote_code"]
        )
        report = verify(files, reference, VerifyOptions(**request["options"]))
        Path(request["answer"]).write_text(json.dumps(report.to_json()) + "\n")
    except Hf2khError as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - anything else is a bug in hf2kh
        try:
            crash = write_crash_report(exc)
        except OSError:
            crash = None
        print(f"error: {one_line(internal_error_message(exc, crash))}", file=sys.stderr)
        sys.exit(INTERNAL_ERROR_EXIT)


if __name__ == "__main__":
    main(sys.argv[1])
