"""The `hf2kh zoo` command (registered in `hf2kh.cli`). Imports stay light until it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def zoo(
    only: Annotated[
        str | None, typer.Option(help="Comma-separated model types (default: every text type).")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the results as JSON to this file.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds allowed per model type.")] = 300.0,
    jobs: Annotated[int, typer.Option(help="Model types ported at the same time.")] = 1,
    out: Annotated[
        Path | None,
        typer.Option(help="Keep checkpoints, ports and logs here (default: a temporary dir)."),
    ] = None,
    list_types: Annotated[
        bool,
        typer.Option("--list", help="List the model types (and the excluded ones), then stop."),
    ] = False,
) -> None:
    """Port a tiny random checkpoint of every text model type with --verify; tabulate results."""
    from rich.console import Console
    from rich.markup import escape

    from hf2kh.errors import Hf2khError
    from hf2kh.zoo.run import ZooOptions, run_zoo
    from hf2kh.zoo.table import print_table, status_text
    from hf2kh.zoo.types import candidate_types

    console = Console()
    if list_types:
        types, excluded = candidate_types()
        for t in types:
            console.print(f"{t.model_type}  {t.task}  {t.architecture}", highlight=False)
        for e in excluded:
            console.print(f"[dim]{e.model_type}  excluded: {e.reason}[/]", highlight=False)
        return
    if jobs < 1 or timeout <= 0:
        raise Hf2khError("--jobs must be at least 1 and --timeout positive")
    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    done = 0

    def report(outcome) -> None:
        nonlocal done
        done += 1
        console.print(
            f"[cyan]>[/] {escape(outcome.model_type)}: {escape(status_text(outcome))} "
            f"({outcome.seconds:.0f} s)",
            highlight=False,
            markup=True,
            soft_wrap=True,
        )

    options = ZooOptions(only=names, json_out=json_out, timeout=timeout, jobs=jobs, out=out)
    results = run_zoo(options, on_result=report)
    print_table(results, console)
    if json_out is not None:
        console.print(f"results written to {json_out}")
