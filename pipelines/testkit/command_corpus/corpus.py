"""The command corpus's machinery: the inputs the cases share, what a case is, how it runs and is judged.

Bad inputs for every command after data preparation: the bundles, the pipelines, export, verify.
The companion of :mod:`pipelines.testkit.bad_inputs` (which covers ``python -m data_prep``'s converters):
each :class:`Case` sets up one mistake a user (or someone who handed them a dataset, a run or a
checkpoint) can make, and says what the command must do: exit code 2 with one line
``error: ...`` naming the option or file and the problem, no traceback, nothing written, nothing
changed or removed, nothing created outside the folders the user named, no user string run as
Python. A few cases are legal and must succeed (``code=0``) without running anything they were
handed; Ctrl+C must end in exit code 130.

Every case runs through the real command line (``python -m monai.bundle run ...``,
``python -m pipelines.regimes ...``) in a fresh process. Shared inputs (a tiny prepared ACDC
phantom, a one-epoch training run, a raw scan) are made once, read-only, under the corpus folder;
a case that tampers with one works on its own copy. The judging (exit code, one line, the name
and the problem in it, files lost or left) is the bad-input corpus's :func:`~pipelines.testkit.bad_inputs.judge`,
with one allowance: MONAI's own notice that a bundle config is trusted code (``parsing
config_file ...``), printed by every ``monai.bundle run``, is not counted as a line of ours.

``python -m pipelines.benchmarks reliability`` runs every case; ``tests/test_commands_reliability.py``
runs one per entry point. Add a case with a builder decorated by :func:`case`, in the module of
its kind (:mod:`~pipelines.testkit.command_corpus.training_cases`, ``checkpoint_cases``,
``pipeline_cases``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import time
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np

from pipelines.testkit.bad_inputs.corpus import Outcome, compare_snapshots, judge, lost_files, make_removable, snapshot

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / "bundles" / "wss_segmentation" / "configs"
TRAIN = str(CONFIGS / "train.json")
EVALUATE = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'evaluate.json'}']"
INFERENCE = str(CONFIGS / "inference.json")
#: the first words of the notice MONAI prints for every bundle config it parses (not ours to count)
MONAI_TRUST_NOTICE = "parsing config_file "
#: a string that runs code if anything evaluates it: it creates the file PWNED in the working folder
PAYLOAD = "$__import__('pathlib').Path('PWNED').touch()"
QUIET = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "TQDM_DISABLE": "1",
         "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


class Shared:
    """Inputs the cases share, each made on first use under ``root`` and never changed afterwards."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @cached_property
    def raw(self) -> Path:
        from pipelines.testkit.phantoms import generate

        return generate("acdc", self.root / "raw", cases=5, seed=0, small=True)

    @cached_property
    def prepared(self) -> Path:
        from data_prep.cli import main as data_prep

        out = self.root / "prepared"
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = data_prep(["acdc", "--src", str(self.raw), "--out", str(out), "--size", "32", "--val", "1",
                              "--test", "1", "--weak", "erosion"])
        if code != 0:
            raise RuntimeError("could not prepare the tiny phantom the cases share")
        return out

    @cached_property
    def run(self) -> Path:
        """A finished one-epoch training run (``models/model.pt`` and its model card), no MLflow."""
        out = self.root / "run"
        done = run_module(["monai.bundle", "run", "--config_file", TRAIN, "--dataset_dir", self.prepared,
                           "--regime", "partial", "--epochs", "1", "--hd95", "false", "--progress", "false",
                           "--log_mlflow", "false", "--output_dir", out], cwd=self.root, timeout=600)
        if done.returncode != 0 or not (out / "models" / "model.pt").is_file():
            raise RuntimeError(f"could not train the run the cases share:\n{done.stderr[-2000:]}")
        return out

    @cached_property
    def scans(self) -> Path:
        """A folder with one raw 3D scan (a phantom ACDC frame), as a user's new scans would be."""
        folder = self.root / "scans"
        folder.mkdir()
        frame = sorted(self.raw.glob("training/patient001/patient001_frame01.nii.gz"))[0]
        shutil.copy(frame, folder / "scan1.nii.gz")
        return folder

    def copy_prepared(self, dest: Path) -> Path:
        shutil.copytree(self.prepared, dest, symlinks=True)
        return dest


@dataclasses.dataclass
class Command:
    """What a builder set up: ``python -m ARGV`` in ``cwd`` and what must happen.

    ``names`` and ``problem`` must appear in the ``error:`` line (exit 2). ``out`` is the output a
    successful run may write (nothing may appear elsewhere). ``absent`` lists files that must
    not exist afterwards (e.g. the file a payload would create). ``check(done)`` returns further
    problems; ``start`` replaces the plain run (concurrency and Ctrl+C cases).
    """

    argv: list
    code: int = 2
    names: str | None = None
    problem: str = ""
    out: Path | None = None
    cwd: Path | None = None
    absent: list[Path] = dataclasses.field(default_factory=list)
    check: Callable[[subprocess.CompletedProcess], list[str]] | None = None
    start: Callable[[], subprocess.CompletedProcess] | None = None
    timeout: float = 300.0
    verify = None  # data_prep's judge checks a prepared output with it; the checks here use ``check``


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    entry: str  # the command it drives: train, evaluate, inference, export, regimes, report, ...
    kind: str  # the class of problem: evaluated, lost, outside, silent, traceback, concurrency, custom
    build: Callable[[Path, Shared], Command]


CASES: list[Case] = []


def case(name: str, entry: str, kind: str):
    """Register the decorated builder ``build(work, shared) -> Command`` as a corpus case."""

    def register(build: Callable[[Path, Shared], Command]) -> Callable[[Path, Shared], Command]:
        CASES.append(Case(name, entry, kind, build))
        return build

    return register


# --- running and judging ---------------------------------------------------------------------


def run_module(argv: list, cwd: Path, timeout: float = 300.0, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m ARGV`` in a fresh process, as a user runs it (not on a terminal), from ``cwd``."""
    full_env = {**os.environ, **QUIET, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), full_env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", *map(str, argv)], cwd=cwd, capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=timeout, env=full_env, stdin=subprocess.DEVNULL)


def run_in_process(argv: list, cwd: Path, timeout: float = 300.0, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m ARGV`` run in this process (``runpy``), for the tests' quick cases: same exit code and output.

    Only for commands that stop early (a bad value); a training would share this process's state.
    """
    import runpy

    stdout, stderr = io.StringIO(), io.StringIO()
    saved_argv = sys.argv[:]
    sys.argv = [str(argv[0]), *map(str, argv[1:])]
    code = 0
    try:
        with contextlib.chdir(cwd), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                runpy.run_module(str(argv[0]), run_name="__main__", alter_sys=True)
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            except Exception:  # what a real process would print before exiting 1
                import traceback

                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved_argv
    return subprocess.CompletedProcess(argv, code, stdout.getvalue(), stderr.getvalue())


def _without_notice(stderr: str) -> str:
    return "\n".join(line for line in stderr.splitlines() if not line.startswith(MONAI_TRUST_NOTICE))


def run_case(bad: Case, workdir: Path, shared: Shared, runner: Callable[..., subprocess.CompletedProcess] = run_module) -> Outcome:
    """Build ``bad`` under ``workdir/<name>``, run it (in a fresh process unless ``runner`` says otherwise) and judge it."""
    work = Path(workdir) / bad.name
    (work / "cwd").mkdir(parents=True)
    outcome = Outcome(bad.name, entry=bad.entry, kind=bad.kind)
    started = time.perf_counter()
    command = bad.build(work, shared)
    outcome.expected = f"exit {command.code}" + (f": {command.problem}" if command.code == 2 else "")
    shared_before = snapshot(shared.root)
    before = snapshot(work, exclude=command.out)
    try:
        if command.start is not None:
            done = command.start()
        else:
            done = runner(command.argv, cwd=command.cwd or work / "cwd", timeout=command.timeout)
    except subprocess.TimeoutExpired:
        outcome.problems.append(f"still running after {command.timeout:.0f} s")
        return outcome
    finally:
        outcome.seconds = time.perf_counter() - started
    after = snapshot(work, exclude=command.out)
    shared_after = snapshot(shared.root)
    stderr = _without_notice(done.stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    outcome.code = done.returncode
    outcome.message = lines[0] if len(lines) == 1 else " / ".join(lines[-2:])
    outcome.problems = judge(command, done.returncode, done.stdout, stderr)
    if "Traceback (most recent call last)" in done.stdout:
        outcome.problems.append("traceback on stdout")
    outcome.problems += compare_snapshots(before, after)
    outcome.problems += [f"changed the shared {name}" for name in compare_snapshots(shared_before, shared_after)]
    outcome.problems += [f"{path.name} exists: a string was run as Python" for path in command.absent if path.exists()]
    if command.check is not None:
        outcome.problems += command.check(done)
    outcome.lost = lost_files(before, after) + [f"shared/{n}" for n in lost_files(shared_before, shared_after)]
    return outcome


def run_corpus(workdir: Path, names: list[str] | None = None, progress: Callable[[Outcome], None] | None = None,
               jobs: int = 1) -> list[Outcome]:
    """Run the cases (all, or those named; ``jobs`` at a time) under ``workdir``, in corpus order.

    Inputs shared by the cases go in ``workdir/shared``; they are made before the cases start, so
    that no case sees another's half-made input. Cases running side by side only share them
    read-only (a case that checks the shared inputs stayed unchanged still does).
    """
    from concurrent.futures import ThreadPoolExecutor

    shared = Shared(Path(workdir) / "shared")
    _ = shared.prepared, shared.run, shared.scans
    chosen = [bad for bad in CASES if not names or bad.name in names]

    def one(bad: Case) -> Outcome:
        outcome = run_case(bad, Path(workdir) / "cases", shared)
        make_removable(Path(workdir) / "cases" / bad.name)
        if progress is not None:
            progress(outcome)
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, chosen))


# --- building blocks --------------------------------------------------------------------------


def train(dataset, work: Path, *extra, mlflow: bool = False) -> list:
    """The argv of a training run into ``work/out`` (no MLflow unless asked: a store is a write)."""
    argv = ["monai.bundle", "run", "--config_file", TRAIN, "--dataset_dir", dataset, "--regime", "partial",
            "--epochs", "1", "--hd95", "false", "--progress", "false", "--output_dir", work / "out"]
    if not mlflow:
        argv += ["--log_mlflow", "false"]
    return argv + list(extra)


def evaluate(dataset, ckpt, work: Path, *extra) -> list:
    return ["monai.bundle", "run", "--config_file", EVALUATE, "--dataset_dir", dataset, "--ckpt_path", ckpt,
            "--results_dir", work / "eval", *extra]


def infer(ckpt, inputs, work: Path, *extra) -> list:
    return ["monai.bundle", "run", "--config_file", INFERENCE, "--ckpt_path", ckpt, "--input_dir", inputs,
            "--output_dir", work / "segmentations", *extra]


def copied_run(shared: Shared, work: Path) -> Path:
    """A copy of the shared run's model folder (checkpoint + model card) to tamper with."""
    models = work / "models"
    shutil.copytree(shared.run / "models", models)
    return models


def manifest_of(dataset: Path) -> dict:
    return json.loads((dataset / "dataset.json").read_text())


def write_manifest(dataset: Path, manifest: dict) -> None:
    (dataset / "dataset.json").write_text(json.dumps(manifest, indent=1))


def first_entry(manifest: dict, split: str = "training") -> dict:
    return manifest[split][0]


def tampered(work: Path, shared: Shared, change: Callable[[Path, dict], None]) -> Path:
    """A copy of the shared prepared dataset after ``change(folder, manifest)`` (the manifest is written back)."""
    data = shared.copy_prepared(work / "prepared")
    manifest = manifest_of(data)
    change(data, manifest)
    write_manifest(data, manifest)
    return data


def rewrite_slice(data: Path, relpath: str, edit: Callable[[np.ndarray], np.ndarray]) -> None:
    """Replace a prepared slice's voxels by ``edit(voxels)``, keeping its header (as a careless tool would)."""
    import nibabel as nib

    path = data / relpath
    image = nib.load(str(path))
    array = edit(np.asarray(image.dataobj).copy())
    nib.save(nib.Nifti1Image(array, image.affine, image.header), str(path))
