"""The closing summary of `hf2kh port`: spec, files, weights, verification."""

from __future__ import annotations

from rich.console import Console

from hf2kh.port import PortResult
from hf2kh.verify.report import print_report


def print_summary(result: PortResult, console: Console | None = None) -> None:
    console = console or Console()
    console.rule(f"[bold]{result.name}")
    console.print("[bold]spec[/] (each line is evidence from the layer graph or a probe)")
    for line in result.spec_lines:
        console.print(f"  {line}")
    console.print(f"[bold]package[/] {result.package_dir}")
    for name in result.files:
        console.print(f"  {name}")
    console.print(f"[bold]preset[/] {result.preset_dir}")
    console.print(f"[bold]weights mapped[/] {result.weights_mapped}/{result.weights_total}")
    if result.verification is not None:
        print_report(result.verification, console)
        verdict = "[green]PASSED[/]" if result.verification.passed else "[red]FAILED[/]"
        console.print(f"[bold]verification[/] {verdict}")
    console.print(f"[bold]report[/] {result.report_path}")
