"""Reliability: bad inputs and killed runs through the real command line; cases tried, handled, data lost."""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Callable

from pipelines.benchmarks.common import print_rows


@dataclasses.dataclass
class Row:
    """One case of a section: ``handled`` when it did what it must; ``lost`` counts files lost or changed."""

    case: str
    expected: str
    result: str
    handled: bool
    lost: int = 0
    skipped: str | None = None


#: A section writes its cases under the folder it is given and returns one row per case.
Check = Callable[[Path, argparse.Namespace], list[Row]]
SECTIONS: list[tuple[str, Check]] = []


def section(name: str):
    """Register a check as a section of the summary (training-side checks add theirs the same way)."""

    def register(check: Check) -> Check:
        SECTIONS.append((name, check))
        return check

    return register


@section("bad inputs (python -m data_prep)")
def bad_inputs(work: Path, args: argparse.Namespace) -> list[Row]:
    from data_prep.bad_inputs import CASES, make_removable, run_case

    rows = []
    for bad in CASES:
        if args.cases and bad.name not in args.cases:
            continue
        try:
            outcome = run_case(bad, work)
        finally:
            make_removable(work)
        if outcome.skipped:
            rows.append(Row(bad.name, "", "skipped", False, skipped=outcome.skipped))
            continue
        said = outcome.message.replace(f"{work / bad.name}/", "")
        result = f"exit {outcome.code}" + (f": {_short(said.removeprefix('error: '))}" if said else "")
        if outcome.problems:
            result += f" [{'; '.join(outcome.problems)}]"
        rows.append(Row(bad.name, _short(outcome.expected, 44), result, outcome.handled, len(outcome.lost)))
    return rows


@section("interrupted runs (SIGKILL, then run again)")
def interrupted(work: Path, args: argparse.Namespace) -> list[Row]:
    from data_prep.interrupted import killed_phantom, killed_prepare

    if args.cases:
        return []
    rows = []
    for check in (killed_prepare, killed_phantom):
        report = check(work / check.__name__, seed=args.seed)
        kills = ", ".join(f"{k.phase} at {k.delay:.2f} s" + (" (2 workers)" if k.workers == 2 else "") for k in report.kills)
        result = f"killed {kills}; {report.files - len(report.lost)}/{report.files} files identical"
        if report.problems:
            result += f" [{'; '.join(report.problems)}]"
        expected = f"{len(report.kills)} kills, then byte-identical"
        rows.append(Row(report.name, expected, result, report.handled, len(report.lost)))
    return rows


def _short(text: str, width: int = 96) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.benchmarks reliability", description=__doc__)
    parser.add_argument("--section", action="append", default=None, help="run only sections whose name starts with this")
    parser.add_argument("--cases", nargs="+", default=None, help="bad-input case names only (skips the kill checks)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random kill moments (default 0)")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the generated inputs (default: a temporary one)")
    args = parser.parse_args(argv)

    tried = handled = lost = 0
    skipped: list[str] = []
    for name, check in SECTIONS:
        if args.section and not any(name.startswith(s) for s in args.section):
            continue
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=args.workdir) as work:
            rows = check(Path(work), args)
        if not rows:
            continue
        print(f"\n{name}: {len(rows)} cases in {time.perf_counter() - started:.0f} s", flush=True)
        print_rows(
            ["case", "expected", "result", "handled", "lost"],
            [[r.case, r.expected, r.result, "skipped" if r.skipped else ("yes" if r.handled else "NO"), r.lost] for r in rows],
        )
        for row in rows:
            if row.skipped:
                skipped.append(f"{row.case} ({row.skipped})")
                continue
            tried += 1
            handled += row.handled
            lost += row.lost
    print(f"\ncases tried {tried}, handled {handled}, data lost {lost}" + (f"; skipped {len(skipped)}" if skipped else ""))
    for line in skipped:
        print(f"skipped: {line}")
    return 0 if handled == tried and lost == 0 else 1
