"""The zoo's terminal table (rich) and its Markdown form (for the README)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from hf2kh.zoo.run import ZooResults
from hf2kh.zoo.worker import Outcome

_STYLE = {"verified": "green", "refused": "yellow", "failed": "red", "error": "bold red"}


def status_text(outcome: Outcome) -> str:
    """`verified`, `refused: reason`, `failed: stage: reason`, `error: stage (bug of ours): ...`."""
    if outcome.status == "verified":
        return "verified"
    if outcome.status == "refused":
        return f"refused: {outcome.reason}"
    ours = " (bug of ours)" if outcome.ours else ""
    return f"{outcome.status}: {outcome.stage}{ours}: {outcome.reason}"


def format_error(value: float | None) -> str:
    return "" if value is None else f"{value:.1e}"


def summary_line(results: ZooResults) -> str:
    counts = results.counts()
    parts = [f"{counts.get(s, 0)} {s}" for s in ("verified", "refused", "failed", "error")]
    ours = sum(o.ours for o in results.outcomes)
    return (
        f"{len(results.outcomes)} model types: {', '.join(parts)} ({ours} bugs of ours); "
        f"{len(results.excluded)} excluded; {results.seconds:.0f} s"
    )


def print_table(results: ZooResults, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="hf2kh zoo: tiny random checkpoints, port --verify")
    table.add_column("type", no_wrap=True)
    table.add_column("status")
    table.add_column("worst error", justify="right", no_wrap=True)
    table.add_column("s", justify="right", no_wrap=True)
    for outcome in results.outcomes:
        style = _STYLE.get(outcome.status, "")
        table.add_row(
            outcome.model_type,
            f"[{style}]{_escape(status_text(outcome))}[/]" if style else status_text(outcome),
            format_error(outcome.worst_error),
            f"{outcome.seconds:.0f}",
        )
    console.print(table)
    console.print(summary_line(results))


def markdown_table(results: ZooResults, width: int | None = None) -> str:
    """The table in Markdown; `width` cuts each status line to that many characters."""
    rows = ["| type | status | worst error | s |", "|---|---|---|---|"]
    for o in results.outcomes:
        text = status_text(o)
        if width and len(text) > width:
            text = text[: width - 3].rstrip() + "..."
        text = text.replace("|", "\\|")
        rows.append(
            f"| {o.model_type} | {text} | {format_error(o.worst_error)} | {o.seconds:.0f} |"
        )
    return "\n".join(rows) + "\n"


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
