"""Kill ``python -m data_prep`` (or the phantom command) with SIGKILL at seeded random moments, run it again, compare.

For the tests and the reliability report: :func:`killed_prepare` (``python -m data_prep acdc`` on
a small phantom, one of the killed runs with ``--workers 2``) and :func:`killed_phantom`
(``python -m pipelines.testkit.phantoms acdc``) each
run the command once uninterrupted as the reference, then start it several times on another
``--out`` and kill it (the first kill at a random delay from the start, which may land while
Python is still importing; the others at a random moment after the temporary folder appeared,
while files are being written), and finally run it to completion. They check:

- after every kill, ``--out`` is absent or complete and identical to the reference: never half-written;
- each run removed the previous run's stale ``.<out>.partial-*`` folder (at most one is ever there);
- no worker process outlives a killed parent;
- the finished output is byte-identical to the reference (sha256 of every file), and nothing is
  left beside ``--out``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from data_prep.atomic import partial_pattern
from pipelines.testkit.bad_inputs import PACKAGE_ROOT

POLL = 0.002


@dataclasses.dataclass
class Kill:
    """One killed run: when it was killed and what it left."""

    workers: int
    delay: float
    #: 'starting' (no temporary folder yet), 'writing', 'renamed' (--out complete, the process not
    #: yet ended) or 'finished' (it ended before the kill)
    phase: str
    temporaries: int  # temporary folders of --out at the kill (once writing: only this run's own)
    children: int  # child processes (workers) at the kill; all must die with it
    out_after: str  # 'absent' or 'complete' (then removed, so that the next run has work to do)


@dataclasses.dataclass
class KillReport:
    """The outcome of one kill-and-rerun check; ``handled`` when no problem and no file lost."""

    name: str
    kills: list[Kill] = dataclasses.field(default_factory=list)
    files: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)
    lost: list[str] = dataclasses.field(default_factory=list)

    @property
    def handled(self) -> bool:
        return not self.problems and not self.lost


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root``."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }


def _start(argv: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    with open(log, "wb") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", *[str(a) for a in argv]],
            stdout=subprocess.DEVNULL, stderr=handle, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip


def _partials(out: Path) -> list[Path]:
    pattern = partial_pattern(out)
    if not out.parent.is_dir():
        return []
    return [p for p in out.parent.iterdir() if pattern.fullmatch(p.name)]


def _writing(out: Path, earlier: set[Path]) -> bool:
    """A new temporary folder of ``out`` (not one of ``earlier``) exists and holds a file already."""
    return any(any(p.is_file() for p in folder.rglob("*")) for folder in set(_partials(out)) - earlier)


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc; empty elsewhere)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _timed_reference(argv: list[str], out: Path, log: Path, timeout: float) -> tuple[float, float, int]:
    """Run to completion: (seconds to the temporary folder, seconds writing, exit code)."""
    started = time.perf_counter()
    process = _start(argv, log)
    appeared = None
    while process.poll() is None and time.perf_counter() - started < timeout:
        if appeared is None and _partials(out):
            appeared = time.perf_counter()
        time.sleep(POLL)
    if process.poll() is None:
        process.kill()
    code = process.wait()
    ended = time.perf_counter()
    appeared = appeared or ended
    return appeared - started, ended - appeared, code


def killed_runs(
    name: str,
    command: Callable[[Path, int], list[str]],
    work: Path,
    seed: int = 0,
    workers: tuple[int, ...] = (1, 2, 1),
    timeout: float = 120.0,
) -> KillReport:
    """Reference run, one killed run per item of ``workers`` (its worker count), a final run, comparisons.

    ``command(out, workers)`` gives the argv after ``python -m`` (the module first) writing to ``out``.
    """
    report = KillReport(name)
    work = Path(work)
    reference, out = work / "reference" / "out", work / "interrupted" / "out"
    reference.parent.mkdir(parents=True)
    out.parent.mkdir(parents=True)
    log = work / "stderr.txt"
    to_folder, writing, code = _timed_reference(command(reference, 1), reference, log, timeout)
    if code != 0:
        report.problems.append(f"the uninterrupted run failed (exit {code}): {log.read_text(errors='replace')[-300:]}")
        return report
    expected = tree_digest(reference)
    report.files = len(expected)
    rng = random.Random(seed)
    for number, count in enumerate(workers):
        earlier = set(_partials(out))  # left by the previous kill: this run must remove them
        process = _start(command(out, count), log)
        started = time.perf_counter()
        if number == 0:
            delay = rng.uniform(0.0, to_folder + writing)
            while process.poll() is None and time.perf_counter() - started < delay:
                time.sleep(POLL)
        else:
            while process.poll() is None and not _writing(out, earlier) and time.perf_counter() - started < timeout:
                time.sleep(POLL)
            pause = rng.uniform(0.0, 0.5 * writing)  # two workers write about twice as fast
            until = time.perf_counter() + pause
            while process.poll() is None and time.perf_counter() < until:
                time.sleep(POLL)
        delay = time.perf_counter() - started
        children = _children(process.pid)
        now = set(_partials(out))
        own, kept = now - earlier, now & earlier
        if process.poll() is not None:
            phase = "finished"
        else:
            phase = "renamed" if out.exists() else ("writing" if own else "starting")
        process.kill()
        process.wait()
        deadline = time.perf_counter() + 10.0
        while any(_alive(pid) for pid in children) and time.perf_counter() < deadline:
            time.sleep(0.05)
        survivors = [pid for pid in children if _alive(pid)]
        if survivors:
            report.problems.append(f"kill {number + 1}: {len(survivors)} worker process(es) outlived their killed parent")
        state = "absent"
        if out.exists():
            state = "complete" if tree_digest(out) == expected else "half-written"
        if state == "half-written":
            report.problems.append(f"kill {number + 1}: --out exists but differs from the uninterrupted run")
        if own and kept:
            report.problems.append(f"kill {number + 1}: the run started writing but left an earlier run's temporary folder")
        report.kills.append(Kill(count, round(delay, 3), phase, len(now), len(children), state))
        if out.exists():
            shutil.rmtree(out)  # complete and checked: start the next run from scratch
    if not out.exists():
        process = _start(command(out, 1), log)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        if code != 0:
            report.problems.append(f"the run after the kills failed (exit {code}): {log.read_text(errors='replace')[-300:]}")
    found = tree_digest(out) if out.exists() else {}
    report.lost = sorted(path for path, digest in expected.items() if found.get(path) != digest)
    extra = sorted(set(found) - set(expected))
    if extra:
        report.problems.append(f"{len(extra)} file(s) that the uninterrupted run did not write, e.g. {extra[0]}")
    leftovers = sorted(p.name for p in out.parent.iterdir() if p != out)
    if leftovers:
        report.problems.append(f"left beside --out: {', '.join(leftovers)}")
    return report


def killed_prepare(work: Path, seed: int = 0, patients: int = 3) -> KillReport:
    """``python -m data_prep acdc`` on a small ACDC phantom, killed three times (once with --workers 2)."""
    from pipelines.testkit.phantoms import generate

    raw = generate("acdc", Path(work) / "raw", cases=patients, seed=seed, small=True)

    def command(out: Path, workers: int) -> list[str]:
        return ["data_prep", "acdc", "--src", raw, "--out", out, "--size", "48", "--seed", str(seed), "--workers", str(workers)]

    return killed_runs("prepare acdc", command, Path(work) / "prepare", seed=seed, workers=(1, 2, 1))


def killed_phantom(work: Path, seed: int = 0, cases: int = 4) -> KillReport:
    """``python -m pipelines.testkit.phantoms acdc --small``, killed twice (once with --workers 2)."""

    def command(out: Path, workers: int) -> list[str]:
        return ["pipelines.testkit.phantoms", "acdc", "--out", out, "--cases", str(cases), "--small", "--seed", str(seed), "--workers", str(workers)]

    return killed_runs("phantom acdc", command, Path(work) / "phantom", seed=seed, workers=(1, 2))
