"""Verification results: a terminal table, JSON and JUnit XML."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

from rich.console import Console
from rich.table import Table


@dataclass
class Check:
    """One verification check (a tensor comparison, generation, tokenizer ids...)."""

    name: str
    group: str  # "layers", "blocks", "sublayers", "logits", "generation", "tokenizer"
    passed: bool
    detail: str
    max_abs: float | None = None
    rel_rms: float | None = None
    worst_index: tuple[int, ...] | None = None
    rel_elementwise: float | None = None  # what pass/fail is decided on (see verify.compare)


@dataclass
class VerifyReport:
    model: str
    dtype: str
    device: str
    checks: list[Check] = field(default_factory=list)
    first_divergence: str | None = None
    environment: dict = field(default_factory=dict)  # hf2kh.verify.environment
    notes: list[str] = field(default_factory=list)  # what was not compared, and why

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "dtype": self.dtype,
            "device": self.device,
            "passed": self.passed,
            "first_divergence": self.first_divergence,
            "environment": self.environment,
            "notes": self.notes,
            "checks": [
                {
                    "name": c.name,
                    "group": c.group,
                    "passed": c.passed,
                    "detail": c.detail,
                    "max_abs": c.max_abs,
                    "rel_rms": c.rel_rms,
                    "rel_elementwise": c.rel_elementwise,
                    "worst_index": list(c.worst_index) if c.worst_index is not None else None,
                }
                for c in self.checks
            ],
        }

    @classmethod
    def from_json(cls, data: dict) -> VerifyReport:
        """The report `to_json` wrote (a child verification on another backend sends it)."""
        checks = [
            Check(
                c["name"],
                c["group"],
                c["passed"],
                c["detail"],
                c["max_abs"],
                c["rel_rms"],
                tuple(c["worst_index"]) if c["worst_index"] is not None else None,
                c["rel_elementwise"],
            )
            for c in data["checks"]
        ]
        return cls(
            data["model"],
            data["dtype"],
            data["device"],
            checks,
            data.get("first_divergence"),
            data.get("environment") or {},
            list(data.get("notes") or []),
        )

    def write_junit(self, path: Path) -> None:
        suite = ET.Element(
            "testsuite",
            name=f"hf2kh.verify.{self.model}",
            tests=str(len(self.checks)),
            failures=str(sum(not c.passed for c in self.checks)),
        )
        for check in self.checks:
            case = ET.SubElement(
                suite, "testcase", classname=f"{self.model}.{check.group}", name=check.name
            )
            if not check.passed:
                failure = ET.SubElement(case, "failure", message=check.detail)
                failure.text = check.detail
        ET.ElementTree(suite).write(path, encoding="unicode", xml_declaration=True)

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")


def short_name(check: Check) -> str:
    """The check's name in the terminal table (at most 16 characters for hf2kh's own checks):
    `transformer_layer_3` is `layer 3`; the full name stays in the JSON and JUnit reports."""
    name = check.name
    layer = re.match(r"transformer_layer_(\d+)(.*)$", name)
    if check.group == "sublayers" and layer:
        return f"in layer {layer[1]} {'alone' if name.endswith('(alone)') else 'e2e'}"
    if layer and check.group in ("layers", "blocks"):
        return f"layer {layer[1]}{' alone' if layer[2].strip() == 'alone' else ''}"
    if check.group == "generation":
        return "greedy tokens"
    if name.startswith("tokenizer ids"):
        return "tokenizer ids"
    if name == "preprocessor special tokens":
        return "special tokens"
    return name


def short_detail(check: Check) -> str:
    """The detail in the table: a sublayer's paths relative to its block (whole words, so no
    cell wraps in the middle of a path)."""
    if check.group != "sublayers":
        return check.detail
    keras_path = check.name.rpartition(" (")[0].partition("/")[2]
    hf_path = check.detail.removeprefix("HF ").partition(": ")[0]
    hf_inner = re.sub(r"^.*?\.\d+\.", "", hf_path)
    where = "starts here" if check.detail.endswith("starts here") else "accumulated"
    return f"{keras_path} = HF {hf_inner}; {where}"


def summarize(checks: list[Check]) -> list[Check]:
    """Collapse per-layer rows into one row per group when they all pass (short terminal table)."""
    rows: list[Check] = []
    by_group: dict[str, list[Check]] = {}
    for c in checks:
        by_group.setdefault(c.group, []).append(c)
    for group, items in by_group.items():
        if len(items) > 3 and all(c.passed for c in items):
            worst = max(items, key=lambda c: c.rel_elementwise or 0.0)
            rows.append(
                Check(
                    f"{len(items)} {group}",
                    group,
                    True,
                    f"worst: {short_name(worst)}",
                    worst.max_abs,
                    worst.rel_rms,
                    rel_elementwise=worst.rel_elementwise,
                )
            )
        else:
            rows.extend(items)
    return rows


def print_report(report: VerifyReport, console: Console | None = None) -> None:
    """The table, readable at 80 columns: short check names, one error column (the elementwise
    error pass/fail is decided on), details that wrap between words only."""
    console = console or Console()
    backend = report.environment.get("keras_backend")
    where = ", ".join(x for x in (report.dtype, report.device, backend) if x)
    table = Table(title=f"verification of {report.model} ({where})")
    table.add_column("check", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("error", no_wrap=True, justify="right")
    table.add_column("max abs", no_wrap=True, justify="right")
    table.add_column("detail", overflow="fold", ratio=1)
    for c in summarize(report.checks):
        table.add_row(
            short_name(c),
            "[green]pass[/]" if c.passed else "[red]FAIL[/]",
            "" if c.rel_elementwise is None else f"{c.rel_elementwise:.1e}",
            "" if c.max_abs is None else f"{c.max_abs:.1e}",
            short_detail(c),
        )
    console.print(table)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")
    if report.first_divergence:
        console.print(f"[red]first divergence:[/] {report.first_divergence}")
