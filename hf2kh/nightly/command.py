"""The `hf2kh nightly` command (registered in `hf2kh.cli`). Imports stay light until it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def nightly(
    list_file: Annotated[Path, typer.Argument(help="One checkpoint a line, with options.")],
    out: Annotated[
        Path, typer.Option(help="Ports, logs and (by default) the reports go here.")
    ] = Path("hf2kh-nightly"),
    json_out: Annotated[
        Path | None, typer.Option("--json", help="The run's JSON (default: OUT/nightly.json).")
    ] = None,
    junit: Annotated[
        Path | None, typer.Option(help="The run's JUnit XML (default: OUT/nightly.xml).")
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(help="A previous run's JSON: exit 1 on any regression against it."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds allowed per line (default).")] = 1800.0,
) -> None:
    """Port and verify every checkpoint of a list, each in its own process with a time limit;
    write one JSON and one JUnit XML for the run and compare it with --baseline.

    Exit 0 when there is no regression (with --baseline) or every line passed (without), else 1;
    each regression or failing line is named on stdout."""
    from rich.console import Console
    from rich.markup import escape

    from hf2kh.errors import BadOptionError, VerificationFailed
    from hf2kh.nightly.compare import regressions
    from hf2kh.nightly.junit import write_junit
    from hf2kh.nightly.listfile import read_list
    from hf2kh.nightly.run import read_json, run_entry, write_json

    if not timeout > 0:
        raise BadOptionError("--timeout must be a positive number of seconds")
    entries = read_list(list_file)
    previous = read_json(baseline) if baseline is not None else None
    out.mkdir(parents=True, exist_ok=True)
    json_out = json_out or out / "nightly.json"
    junit = junit or out / "nightly.xml"
    console = Console(highlight=False, soft_wrap=True)
    results = []
    for index, entry in enumerate(entries):
        result = run_entry(entry, index, out, timeout)
        results.append(result)
        message = f": {result.message}" if result.message else ""
        console.print(
            f"[cyan]>[/] {escape(entry.id)}: {result.status}{escape(message)} "
            f"({result.seconds:.0f} s)"
        )
    found = regressions(previous, results) if previous is not None else []
    write_json(results, json_out, _environment())
    write_junit(results, found, junit)
    console.print(f"[bold]json[/] {json_out}")
    console.print(f"[bold]junit[/] {junit}")
    for regression in found:
        console.print(f"[red]regression[/] {escape(regression.line())}")
    if previous is not None:
        if found:
            raise VerificationFailed(
                f"{len(found)} regression(s) against {baseline}; first: {found[0].line()}"
            )
        return
    bad = [r for r in results if r.status != "passed"]
    if bad:
        raise VerificationFailed(
            f"{len(bad)} of {len(results)} line(s) did not pass; first: {bad[0].id}: "
            f"{bad[0].status}" + (f": {bad[0].message}" if bad[0].message else "")
        )


def _environment() -> dict:
    import platform
    from importlib import metadata

    versions = {}
    for package in ("hf2kh", "torch", "transformers", "keras", "keras-hub"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return {"python": platform.python_version(), "versions": versions}
