"""The bad-input corpus's machinery: what a case is, how it is registered, run through the real
``python -m data_prep`` in a subprocess, and judged.

:func:`judge` is shared with the corpus of the other commands (:mod:`pipelines.testkit.command_corpus`):
exit code, one ``error:`` line naming the file and the problem, no traceback, nothing left under
or beside ``--out`` (no ``.<out>.partial-*`` folder), no input changed or removed (data lost).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

#: The folder holding the ``data_prep`` package (the repository): the subprocess imports it from there.
PACKAGE_ROOT = Path(__file__).resolve().parents[3]
#: Volumes of the hand-made raw datasets: (x, y, slices), ACDC-like spacing.
SHAPE = (20, 22, 3)
SPACING = (1.5, 1.5, 10.0)
SIZE = ["--size", "32"]


class Skip(Exception):
    """The case cannot be set up on this machine (the reason says why); it is not counted as tried."""


@dataclasses.dataclass
class Setup:
    """What a builder made: the command line (after ``python -m data_prep``) and what must happen.

    ``names`` must appear in the error line (the offending file as the user gave it), and so
    must ``problem``. For legal input (``code`` 0), ``verify(out)`` returns the problems found in
    the prepared dataset (empty when correct).
    """

    argv: list[str]
    out: Path
    code: int = 2
    names: str | None = None
    problem: str = ""
    verify: Callable[[Path], list[str]] | None = None


@dataclasses.dataclass(frozen=True)
class BadInput:
    """One case of the corpus: ``build(work)`` writes it under the empty folder ``work``."""

    name: str
    summary: str
    build: Callable[[Path], Setup]


@dataclasses.dataclass
class Outcome:
    """What one case did: ``handled`` when every check passed; ``lost`` lists input files changed or removed.

    One shape for both corpora: a bad input says what it is in ``summary``; a case of the command
    corpus (:mod:`pipelines.testkit.command_corpus`) names the command it drives (``entry``) and
    its class of problem (``kind``).
    """

    name: str
    expected: str = ""
    summary: str = ""
    entry: str = ""
    kind: str = ""
    code: int | None = None
    message: str = ""
    problems: list[str] = dataclasses.field(default_factory=list)
    lost: list[str] = dataclasses.field(default_factory=list)
    skipped: str | None = None
    seconds: float = 0.0

    @property
    def handled(self) -> bool:
        return self.skipped is None and not self.problems and not self.lost


CASES: list[BadInput] = []


def case(name: str, summary: str):
    """Register the decorated builder as a corpus case (``name`` is the test id)."""

    def register(build: Callable[[Path], Setup]) -> Callable[[Path], Setup]:
        CASES.append(BadInput(name, summary, build))
        return build

    return register


# --- running and judging ---------------------------------------------------------------------


def run_cli(argv: list[str], timeout: float = 180.0, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m data_prep ARGV`` in a fresh process, as a user runs it (not on a terminal)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "data_prep", *[str(a) for a in argv]],
        capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout, env=env, cwd=cwd,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def run_case(bad: BadInput, workdir: Path, timeout: float = 180.0) -> Outcome:
    """Build ``bad`` under ``workdir/<name>``, run it through the CLI and judge the result."""
    work = Path(workdir) / bad.name
    work.mkdir(parents=True)
    outcome = Outcome(bad.name, summary=bad.summary)
    started = time.perf_counter()
    try:
        setup = bad.build(work)
    except Skip as reason:
        outcome.skipped = str(reason)
        return outcome
    outcome.expected = f"exit {setup.code}" + (f": {setup.problem}" if setup.code else ", correct result")
    before = snapshot(work, exclude=None if setup.code else setup.out)
    try:
        done = run_cli(setup.argv, timeout=timeout, cwd=work)
    except subprocess.TimeoutExpired:
        outcome.problems.append(f"still running after {timeout:.0f} s")
        return outcome
    finally:
        outcome.seconds = time.perf_counter() - started
    after = snapshot(work, exclude=None if setup.code else setup.out)
    outcome.code = done.returncode
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    outcome.message = lines[0] if len(lines) == 1 else " / ".join(lines[-2:])
    outcome.problems = judge(setup, done.returncode, done.stdout, done.stderr)
    outcome.problems += compare_snapshots(before, after)
    outcome.lost = lost_files(before, after)
    return outcome


def judge(setup: Setup, code: int, stdout: str, stderr: str) -> list[str]:
    """Problems with one run's exit code and messages (and, for legal input, its output)."""
    problems = []
    if "Traceback (most recent call last)" in stderr:
        problems.append("traceback on stderr")
    if code != setup.code:
        problems.append(f"exit code {code}, expected {setup.code}")
    lines = [line for line in stderr.splitlines() if line.strip()]
    if setup.code == 2:
        if len(lines) != 1:
            problems.append(f"{len(lines)} lines on stderr, expected one")
        line = lines[-1] if lines else ""
        if not line.startswith("error: "):
            problems.append("the message does not start with 'error: '")
        if setup.names is not None and setup.names not in line:
            problems.append(f"the message does not name {setup.names}")
        if setup.problem not in line:
            problems.append(f"the message does not say {setup.problem!r}")
    elif setup.code == 0:
        if any(line.startswith("error") for line in lines):
            problems.append("an error message on success")
        if setup.verify is not None and code == 0:
            problems.extend(setup.verify(setup.out))
    return problems


def snapshot(root: Path, exclude: Path | None = None) -> dict[str, str]:
    """Relative path -> fingerprint of everything under ``root`` (links not followed), but ``exclude``."""
    found = {}
    for folder, dirs, files in os.walk(root):
        folder = Path(folder)
        if exclude is not None and folder == Path(exclude):
            dirs[:] = []
            continue
        for name in dirs + files:
            path = folder / name
            if exclude is not None and path == Path(exclude):
                continue
            found[path.relative_to(root).as_posix()] = _fingerprint(path)
    return found


def _fingerprint(path: Path) -> str:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return f"link:{os.readlink(path)}"
    if stat.S_ISDIR(info.st_mode):
        return "folder"
    try:
        return "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:  # unreadable on purpose: size and time stand in for the content
        return f"file:{info.st_size}:{info.st_mtime_ns}"


def compare_snapshots(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """New entries outside the output: temporary folders left behind, or files written outside ``--out``."""
    added = sorted(set(after) - set(before))
    return [f"left {name}" for name in added[:5]] + ([f"... and {len(added) - 5} more"] if len(added) > 5 else [])


def lost_files(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Inputs (or a pre-existing output) changed or removed by the run."""
    return sorted(name for name, print_ in before.items() if after.get(name) != print_)


def make_removable(root: Path) -> None:
    """Give back the permissions a case took away, so that its folder can be deleted."""
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            if not path.is_symlink():
                os.chmod(path, 0o755 if path.is_dir() else 0o644)


def case_named(name: str) -> BadInput:
    """The corpus case called ``name``."""
    for bad in CASES:
        if bad.name == name:
            return bad
    raise KeyError(name)
