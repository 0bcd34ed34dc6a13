"""A nightly run against the previous one (`--baseline`): what got worse.

A regression is one of: a checkpoint or check that passed and now does not (`new failure`), a
tensor error more than 10x its baseline (`error grew`; errors below float32's unit roundoff count
as that roundoff, so rounding noise on a zero baseline is not a regression), a checkpoint or check
of the baseline that this run no longer has (`disappeared`).
"""

from __future__ import annotations

from dataclasses import dataclass

from hf2kh.nightly.run import EntryResult

GROWTH = 10.0
NOISE_FLOOR = 2.0**-23  # float32 unit roundoff (~1.2e-7)


@dataclass(frozen=True)
class Regression:
    kind: str  # "new failure", "error grew", "disappeared"
    entry: str
    check: str | None
    detail: str

    def line(self) -> str:
        where = self.entry if self.check is None else f"{self.entry} :: {self.check}"
        return f"{self.kind}: {where}: {self.detail}"


def regressions(baseline: list[EntryResult], current: list[EntryResult]) -> list[Regression]:
    now = {r.id: r for r in current}
    found: list[Regression] = []
    for before in baseline:
        after = now.get(before.id)
        if after is None:
            found.append(Regression("disappeared", before.id, None, "not in this run"))
            continue
        if before.status == "passed" and after.status != "passed":
            detail = f"{after.status}" + (f": {after.message}" if after.message else "")
            found.append(Regression("new failure", before.id, None, detail))
        checks = {c.name: c for c in after.checks}
        for old in before.checks:
            new = checks.get(old.name)
            if new is None:
                if after.status in ("passed", "failed"):  # else the port's failure says it all
                    found.append(Regression("disappeared", before.id, old.name, "check not run"))
                continue
            if old.passed and not new.passed:
                found.append(
                    Regression(
                        "new failure",
                        before.id,
                        old.name,
                        f"error {_num(new.error)} (was {_num(old.error)})",
                    )
                )
            elif old.error is not None and new.error is not None:
                if new.error > GROWTH * max(old.error, NOISE_FLOOR):
                    found.append(
                        Regression(
                            "error grew",
                            before.id,
                            old.name,
                            f"{_num(old.error)} -> {_num(new.error)}",
                        )
                    )
    return found


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1e}"
