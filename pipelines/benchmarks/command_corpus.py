"""Bad inputs for every command after data preparation: the bundles, the pipelines, export, verify.

The companion of ``data_prep/bad_inputs.py`` (which covers ``python -m data_prep``'s converters):
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
and the problem in it, files lost or left) is data_prep's :func:`~data_prep.bad_inputs.judge`,
with one allowance: MONAI's own notice that a bundle config is trusted code (``parsing
config_file ...``), printed by every ``monai.bundle run``, is not counted as a line of ours.

``python -m pipelines.benchmarks reliability`` runs every case; ``tests/test_commands_reliability.py``
runs one per entry point. Add a case with a builder decorated by :func:`case`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np

from data_prep.bad_inputs import compare_snapshots, judge, lost_files, make_removable, snapshot

REPO = Path(__file__).resolve().parents[2]
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
        from data_prep.phantoms import generate

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


@dataclasses.dataclass
class Outcome:
    name: str
    entry: str
    kind: str
    expected: str
    code: int | None = None
    message: str = ""
    problems: list[str] = dataclasses.field(default_factory=list)
    lost: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def handled(self) -> bool:
        return not self.problems and not self.lost


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
    outcome = Outcome(bad.name, bad.entry, bad.kind, expected="")
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


# --- the cases --------------------------------------------------------------------------------
# training values (each stops before anything is built)


def _options(extra: list[str], names: str | None, problem: str):
    def build(work: Path, shared: Shared) -> Command:
        return Command(train(shared.prepared, work, *extra), names=names, problem=problem)

    return build


for _key, _value_text, _problem in [
    ("epochs", "1.5", "whole number"),
    ("epochs", "abc", "whole number"),
    ("batch_size", "0", "whole number >= 1"),
    ("learning_rate", "abc", "number > 0"),
    ("learning_rate", "-0.1", "number > 0"),
    ("seed", "abc", "whole number"),
    ("num_workers", "-1", "whole number >= 0"),
    ("betas", "[2.0,0.9]", "two numbers in [0, 1)"),
    ("lr_factor", "1.5", "< 1"),
    ("val_interval", "0", "whole number >= 1"),
    ("amp", "maybe", "true or false"),
]:
    case(f"train_{_key}_{_value_text}", "train", "traceback")(_options([f"--{_key}", _value_text], f"--{_key}", _problem))


for _name, _kind, _extra, _names, _problem in [
    ("unknown_regime", "traceback", ["--regime", "individul"], "individul", "unknown regime"),
    ("misspelt_key", "silent", ["--epoch", "3"], "--epoch", "did you mean --epochs"),
    ("weak_strategy_absent", "traceback", ["--weak", "scribble"], "scribble", "weak labels"),
    ("hybrid_needs_more_patients", "traceback", ["--regime", "hybrid_9"], None, "needs 9 fully annotated"),
]:
    case(f"train_{_name}", "train", _kind)(_options(_extra, _names, _problem))


@case("train_output_dir_is_a_file", "train", "traceback")
def _output_dir_file(work: Path, shared: Shared) -> Command:
    (work / "out").write_text("my notes\n")
    return Command(train(shared.prepared, work), names="out", problem="file")


@case("train_no_dataset_dir", "train", "traceback")
def _no_dataset(work: Path, shared: Shared) -> Command:
    argv = train(shared.prepared, work)
    del argv[argv.index("--dataset_dir"): argv.index("--dataset_dir") + 2]
    return Command(argv, names="dataset_dir", problem="required")


@case("train_dataset_dir_not_prepared", "train", "traceback")
def _not_prepared(work: Path, shared: Shared) -> Command:
    return Command(train(shared.raw, work), names="raw", problem="no dataset.json")


@case("train_unknown_tracking_scheme", "train", "traceback")
def _tracking_scheme(work: Path, shared: Shared) -> Command:
    return Command(train(shared.prepared, work, "--tracking_uri", "foo://bar", mlflow=True), names="foo://bar",
                   problem="tracking")


# names that would place files outside runs/


@case("train_run_name_climbs_out", "train", "outside")
def _run_name_up(work: Path, shared: Shared) -> Command:
    argv = train(shared.prepared, work, "--run_name", "../../../escaped")
    del argv[argv.index("--output_dir"): argv.index("--output_dir") + 2]
    return Command(argv, names="../../../escaped", problem="cannot name a folder", cwd=work / "cwd")


@case("train_experiment_name_climbs_out", "train", "outside")
def _experiment_up(work: Path, shared: Shared) -> Command:
    argv = train(shared.prepared, work, "--experiment_name", "../../escaped")
    del argv[argv.index("--output_dir"): argv.index("--output_dir") + 2]
    return Command(argv, names="../../escaped", problem="experiment", cwd=work / "cwd")


@case("train_run_name_absolute", "train", "outside")
def _run_name_absolute(work: Path, shared: Shared) -> Command:
    argv = train(shared.prepared, work, "--run_name", str(work / "elsewhere"))
    del argv[argv.index("--output_dir"): argv.index("--output_dir") + 2]
    return Command(argv, names="elsewhere", problem="cannot name a folder", cwd=work / "cwd")


# a prepared dataset from someone else, tampered with (the checks run before training)


def _tamper(change: Callable[[Path, dict], None], names: str | None, problem: str):
    def build(work: Path, shared: Shared) -> Command:
        data = tampered(work, shared, change)
        return Command(train(data, work), names=names, problem=problem)

    return build


def _missing_slice(data: Path, manifest: dict) -> None:
    (data / first_entry(manifest)["image"]).unlink()


def _truncated_slice(data: Path, manifest: dict) -> None:
    path = data / first_entry(manifest)["image"]
    path.write_bytes(path.read_bytes()[:60])


def _text_slice(data: Path, manifest: dict) -> None:
    (data / first_entry(manifest)["image"]).write_text("not an image\n")


def _wrong_size(data: Path, manifest: dict) -> None:
    rewrite_slice(data, first_entry(manifest)["image"], lambda a: np.zeros((20, 24) + a.shape[2:], a.dtype))


def _label_value(data: Path, manifest: dict) -> None:
    rewrite_slice(data, first_entry(manifest)["label"], lambda a: np.where(a > 0, 7, a).astype(a.dtype) if a.any()
                  else np.full_like(a, 7))


def _weak_value(data: Path, manifest: dict) -> None:
    entry = first_entry(manifest)
    weak = entry["weak"]["erosion"] if isinstance(entry.get("weak"), dict) else entry["weak"]
    rewrite_slice(data, weak, lambda a: np.full_like(a, 9))


def _nan_voxel(data: Path, manifest: dict) -> None:
    def edit(a):
        a = a.astype(np.float32)
        a.flat[a.size // 2] = np.nan
        return a

    rewrite_slice(data, first_entry(manifest)["image"], edit)


def _inf_validation(data: Path, manifest: dict) -> None:
    def edit(a):
        a = a.astype(np.float32)
        a.flat[3] = np.inf
        return a

    rewrite_slice(data, first_entry(manifest, "validation")["image"], edit)


def _bounds(value_of: Callable[[list], object]):
    def change(data: Path, manifest: dict) -> None:
        for entry in manifest["training"]:
            for rule, pairs in (entry.get("bounds") or {}).items():
                entry["bounds"][rule] = [value_of(pair) for pair in pairs]

    return change


def _training_not_list(data: Path, manifest: dict) -> None:
    manifest["training"] = {"a": 1}


def _entry_absolute(data: Path, manifest: dict) -> None:
    outside = data.parent / "outside.nii.gz"
    shutil.copy(data / first_entry(manifest)["image"], outside)
    first_entry(manifest)["image"] = str(outside)


def _entry_climbs(data: Path, manifest: dict) -> None:
    outside = data.parent / "outside.nii.gz"
    shutil.copy(data / first_entry(manifest)["image"], outside)
    first_entry(manifest)["image"] = "../outside.nii.gz"


def _entry_symlink(data: Path, manifest: dict) -> None:
    path = data / first_entry(manifest)["image"]
    outside = data.parent / "outside.nii.gz"
    shutil.copy(path, outside)
    path.unlink()
    path.symlink_to(outside)


def _volume_name_climbs(data: Path, manifest: dict) -> None:
    old = first_entry(manifest, "test")["volume"]
    for split in ("training", "validation", "test"):
        for entry in manifest.get(split, []):
            if entry.get("volume") == old:
                entry["volume"] = "../../escaped"
    for volume in manifest.get("volumes", []):
        if isinstance(volume, dict) and volume.get("volume") == old:
            volume["volume"] = "../../escaped"


def _labels_gap(data: Path, manifest: dict) -> None:
    manifest["labels"] = {"0": "background", "2": "lv"}


def _slice_3d(data: Path, manifest: dict) -> None:
    rewrite_slice(data, first_entry(manifest)["image"], lambda a: np.stack([a.reshape(a.shape[:2])] * 3, axis=-1))


for _name, _kind, _change, _names, _problem in [
    ("missing_slice", "traceback", _missing_slice, None, "missing"),
    ("truncated_slice", "traceback", _truncated_slice, None, ""),
    ("slice_not_nifti", "traceback", _text_slice, None, ""),
    ("slice_wrong_size", "traceback", _wrong_size, None, "size"),
    ("slice_3d", "traceback", _slice_3d, None, ""),
    ("label_value_out_of_range", "traceback", _label_value, None, "7"),
    ("weak_label_value_out_of_range", "traceback", _weak_value, None, "9"),
    ("nan_voxel_in_training_image", "traceback", _nan_voxel, None, "NaN"),
    ("inf_voxel_in_validation_image", "silent", _inf_validation, None, "inf"),
    ("bounds_lo_above_hi", "traceback", _bounds(lambda b: [b[1] + 10, b[1]]), None, "bound"),
    ("bounds_nan", "traceback", _bounds(lambda b: [float("nan"), b[1]]), None, "bound"),
    ("bounds_text", "traceback", _bounds(lambda b: ["small", "large"]), None, "bound"),
    ("training_not_a_list", "traceback", _training_not_list, "dataset.json", "training"),
    ("entry_path_absolute", "outside", _entry_absolute, None, "outside"),
    ("entry_path_climbs_out", "outside", _entry_climbs, None, "outside"),
    ("entry_symlink_outside", "outside", _entry_symlink, None, "outside"),
    ("volume_name_climbs_out", "outside", _volume_name_climbs, "../../escaped", "volume"),
    ("labels_not_0_to_c", "traceback", _labels_gap, "dataset.json", "labels"),
    ("slice_path_is_a_number", "traceback", lambda d, m: first_entry(m).__setitem__("image", 5), "dataset.json", "image"),
]:
    case(f"dataset_{_name}", "train", _kind)(_tamper(_change, _names, _problem))


@case("dataset_json_not_json", "train", "traceback")
def _dataset_not_json(work: Path, shared: Shared) -> Command:
    data = shared.copy_prepared(work / "prepared")
    (data / "dataset.json").write_text("{ this is not json")
    return Command(train(data, work), names="dataset.json", problem="JSON")


@case("dataset_string_in_config_is_not_run", "train", "evaluated")
def _dataset_payload(work: Path, shared: Shared) -> Command:
    """A dataset name (which becomes the experiment name) that MONAI would run if it reached a config as text."""

    def change(data: Path, manifest: dict) -> None:
        manifest["name"] = PAYLOAD

    data = tampered(work, shared, change)
    return Command(train(data, work), code=0, out=work / "out", absent=[work / "cwd" / "PWNED"], timeout=600)


# evaluation and inference: checkpoints from someone else


@case("evaluate_no_checkpoint", "evaluate", "traceback")
def _eval_missing(work: Path, shared: Shared) -> Command:
    return Command(evaluate(shared.prepared, work / "none.pt", work), names="none.pt", problem="no such checkpoint")


@case("evaluate_checkpoint_is_text", "evaluate", "traceback")
def _eval_text(work: Path, shared: Shared) -> Command:
    (work / "model.pt").write_text("these are not weights\n")
    return Command(evaluate(shared.prepared, work / "model.pt", work), names="model.pt", problem="")


@case("evaluate_checkpoint_truncated", "evaluate", "traceback")
def _eval_truncated(work: Path, shared: Shared) -> Command:
    data = (shared.run / "models" / "model.pt").read_bytes()
    (work / "model.pt").write_bytes(data[: len(data) // 3])
    return Command(evaluate(shared.prepared, work / "model.pt", work), names="model.pt", problem="")


@case("evaluate_checkpoint_runs_code", "evaluate", "evaluated")
def _eval_pickle(work: Path, shared: Shared) -> Command:
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {work / 'cwd' / 'PWNED'}",))

    with open(work / "model.pt", "wb") as stream:
        pickle.dump({"model": Payload()}, stream)
    return Command(evaluate(shared.prepared, work / "model.pt", work), names="model.pt", problem="",
                   absent=[work / "cwd" / "PWNED"])


@case("evaluate_checkpoint_of_another_network", "evaluate", "traceback")
def _eval_other_network(work: Path, shared: Shared) -> Command:
    import torch

    torch.save(torch.nn.Conv2d(1, 2, 3).state_dict(), work / "model.pt")
    return Command(evaluate(shared.prepared, work / "model.pt", work), names="model.pt", problem="")


@case("evaluate_results_dir_is_a_file", "evaluate", "traceback")
def _eval_results_file(work: Path, shared: Shared) -> Command:
    (work / "eval").write_text("my notes\n")
    return Command(evaluate(shared.prepared, shared.run / "models" / "model.pt", work), names="eval", problem="file")


@case("inference_no_checkpoint", "inference", "traceback")
def _infer_no_ckpt(work: Path, shared: Shared) -> Command:
    return Command(infer(work / "none.pt", shared.raw, work), names="none.pt", problem="no such checkpoint")


@case("inference_no_input_dir", "inference", "traceback")
def _infer_no_input(work: Path, shared: Shared) -> Command:
    return Command(infer(shared.run / "models" / "model.pt", work / "nothing", work), names="nothing", problem="")


@case("inference_checkpoint_is_text", "inference", "traceback")
def _infer_text(work: Path, shared: Shared) -> Command:
    models = copied_run(shared, work)
    (models / "model.pt").write_text("these are not weights\n")
    return Command(infer(models / "model.pt", shared.scans, work), names="model.pt", problem="")


@case("inference_checkpoint_runs_code", "inference", "evaluated")
def _infer_pickle(work: Path, shared: Shared) -> Command:
    models = copied_run(shared, work)
    marker = work / "cwd" / "PWNED"
    with open(models / "model.pt", "wb") as stream:
        stream.write(b"cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR.")
    return Command(infer(models / "model.pt", shared.scans, work), names="model.pt", problem="", absent=[marker])


@case("inference_model_card_missing", "inference", "traceback")
def _infer_card(work: Path, shared: Shared) -> Command:
    models = copied_run(shared, work)
    (models / "preprocessing.json").unlink()
    return Command(infer(models / "model.pt", shared.scans, work), names="preprocessing.json", problem="missing")


@case("inference_output_dir_is_a_file", "inference", "traceback")
def _infer_out_file(work: Path, shared: Shared) -> Command:
    (work / "segmentations").write_text("my notes\n")
    return Command(infer(shared.run / "models" / "model.pt", shared.scans, work), names="segmentations", problem="")


@case("inference_scan_not_an_image", "inference", "traceback")
def _infer_bad_scan(work: Path, shared: Shared) -> Command:
    scans = work / "scans"
    scans.mkdir()
    (scans / "scan1.nii.gz").write_text("not a scan\n")
    return Command(infer(shared.run / "models" / "model.pt", scans, work), names="scan1.nii.gz", problem="")


# export of a run as a bundle


@case("export_run_is_not_a_run", "export", "traceback")
def _export_not_run(work: Path, shared: Shared) -> Command:
    (work / "folder").mkdir()
    return Command(["wss_monai.export", "--run", work / "folder", "--out", work / "bundle"], names="folder", problem="")


@case("export_out_is_a_file", "export", "lost")
def _export_out_file(work: Path, shared: Shared) -> Command:
    (work / "bundle").write_text("my notes\n")
    return Command(["wss_monai.export", "--run", shared.run, "--out", work / "bundle"], names="bundle", problem="")


@case("export_out_holds_files", "export", "lost")
def _export_out_full(work: Path, shared: Shared) -> Command:
    (work / "bundle").mkdir()
    (work / "bundle" / "notes.txt").write_text("my notes\n")
    return Command(["wss_monai.export", "--run", shared.run, "--out", work / "bundle"], names="bundle", problem="")


# the pipelines


@case("regimes_tracking_uri_is_not_run", "regimes", "evaluated")
def _regimes_payload(work: Path, shared: Shared) -> Command:
    return Command(["pipelines.regimes", "--prepared", shared.prepared, "--regimes", "partial", "--epochs", "1",
                    "--out", work / "out", "--tracking-uri", PAYLOAD], names="tracking", problem="",
                   absent=[work / "cwd" / "PWNED"])


@case("regimes_experiment_is_data", "regimes", "evaluated")
def _regimes_experiment(work: Path, shared: Shared) -> Command:
    marker = work / "cwd" / "PWNED"

    def check(done: subprocess.CompletedProcess) -> list[str]:
        found = list((work / "out").glob("runs/partial*/run.json"))
        if not found:
            return ["no run.json written"]
        experiment = json.loads(found[0].read_text()).get("experiment")
        return [] if experiment == PAYLOAD else [f"experiment recorded as {experiment!r}, not the text given"]

    return Command(["pipelines.regimes", "--prepared", shared.prepared, "--regimes", "partial", "--epochs", "1",
                    "--out", work / "out", "--experiment", PAYLOAD], code=0, out=work / "out", absent=[marker],
                   check=check, timeout=600)


@case("regimes_prepared_is_not_a_dataset", "regimes", "traceback")
def _regimes_not_prepared(work: Path, shared: Shared) -> Command:
    return Command(["pipelines.regimes", "--prepared", shared.raw, "--out", work / "out"], names="raw", problem="")


@case("regimes_unknown_regime", "regimes", "traceback")
def _regimes_unknown(work: Path, shared: Shared) -> Command:
    return Command(["pipelines.regimes", "--prepared", shared.prepared, "--regimes", "partial,individul",
                    "--out", work / "out"], names="individul", problem="")


@case("regimes_out_is_a_file", "regimes", "lost")
def _regimes_out_file(work: Path, shared: Shared) -> Command:
    (work / "out").write_text("my notes\n")
    return Command(["pipelines.regimes", "--prepared", shared.prepared, "--out", work / "out"], names="out", problem="")


@case("demo_epochs_zero", "demo", "traceback")
def _demo_epochs(work: Path, shared: Shared) -> Command:
    return Command(["pipelines.demo", "--epochs", "0", "--out", work / "demo"], names="--epochs", problem="")


@case("demo_out_is_a_file", "demo", "lost")
def _demo_out_file(work: Path, shared: Shared) -> Command:
    (work / "demo").write_text("my notes\n")
    return Command(["pipelines.demo", "--quick", "--out", work / "demo"], names="demo", problem="")


@case("report_server_unreachable", "report", "traceback")
def _report_unreachable(work: Path, shared: Shared) -> Command:
    return Command(["pipelines.report", "--experiment", "acdc-lv", "--tracking-uri", "http://127.0.0.1:9",
                    "--out", work / "report"], names="127.0.0.1:9", problem="")


@case("report_out_is_a_file", "report", "traceback")
def _report_out_file(work: Path, shared: Shared) -> Command:
    (work / "report").write_text("my notes\n")
    return Command(["pipelines.report", "--experiment", "acdc-lv", "--tracking-uri", f"sqlite:///{work / 'none.db'}",
                    "--out", work / "report"], names="report", problem="")


@case("report_unknown_experiment", "report", "traceback")
def _report_unknown(work: Path, shared: Shared) -> Command:
    from wss_monai import tracking

    store = f"sqlite:///{work / 'mlruns.db'}"
    tracking.store_client(store)  # an empty store: the experiment is not in it
    return Command(["pipelines.report", "--experiment", "nothing-here", "--tracking-uri", store,
                    "--out", work / "report"], names="nothing-here", problem="")


@case("reproduce_src_missing", "reproduce", "traceback")
def _reproduce_src(work: Path, shared: Shared) -> Command:
    return Command(["pipelines.reproduce", "--dataset", "acdc", "--src", work / "nothing", "--out", work / "out"],
                   names="nothing", problem="")


@case("reproduce_unknown_table", "reproduce", "traceback")
def _reproduce_table(work: Path, shared: Shared) -> Command:
    return Command(["pipelines.reproduce", "--dataset", "acdc", "--src", shared.raw, "--out", work / "out",
                    "--tables", "9"], names="--tables", problem="")


@case("reproduce_out_is_the_raw_data", "reproduce", "lost")
def _reproduce_out_src(work: Path, shared: Shared) -> Command:
    raw = work / "raw"
    shutil.copytree(shared.raw, raw)
    return Command(["pipelines.reproduce", "--dataset", "acdc", "--src", raw, "--out", raw, "--epochs", "1"],
                   names="raw", problem="")


@case("reproduce_experiment_is_not_run", "reproduce", "evaluated")
def _reproduce_payload(work: Path, shared: Shared) -> Command:
    return Command(["pipelines.reproduce", "--dataset", "acdc", "--src", shared.raw, "--out", work / "out",
                    "--tables", "9", "--experiment", PAYLOAD], names="--tables", problem="",
                   absent=[work / "cwd" / "PWNED"])


@case("benchmarks_unknown_name", "benchmarks", "traceback")
def _benchmarks_unknown(work: Path, shared: Shared) -> Command:
    return Command(["pipelines.benchmarks", "trainingg"], names="trainingg", problem="")


# data_prep verify and phantom (the converters have their own corpus)


@case("verify_not_a_dataset", "verify", "traceback")
def _verify_not(work: Path, shared: Shared) -> Command:
    return Command(["data_prep", "verify", shared.raw], names="raw", problem="dataset.json")


@case("verify_slice_changed_since_preparation", "verify", "silent")
def _verify_changed(work: Path, shared: Shared) -> Command:
    data = shared.copy_prepared(work / "prepared")
    entry = first_entry(manifest_of(data))
    rewrite_slice(data, entry["image"], lambda a: (a * 0.5).astype(a.dtype))

    def check(done: subprocess.CompletedProcess) -> list[str]:  # the problems are listed on stdout
        listed = [line for line in done.stdout.splitlines() if Path(entry["image"]).name in line]
        return [] if listed and "changed since preparation" in listed[0] else ["the changed slice is not listed"]

    return Command(["data_prep", "verify", data], names="prepared", problem="1 problem found", check=check)


@case("phantom_cases_zero", "phantom", "traceback")
def _phantom_zero(work: Path, shared: Shared) -> Command:
    return Command(["data_prep", "phantom", "acdc", "--out", work / "raw", "--cases", "0"], names="--cases", problem="")


# concurrency and interruption


def _popen_train(dataset: Path, out: Path, *extra, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, **QUIET}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    argv = ["monai.bundle", "run", "--config_file", TRAIN, "--dataset_dir", dataset, "--regime", "partial",
            "--hd95", "false", "--progress", "false", "--output_dir", out, *extra]
    return subprocess.Popen([sys.executable, "-m", *map(str, argv)], cwd=cwd, env=env, text=True, encoding="utf-8", errors="replace",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 300.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.is_file():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.1)


@case("train_second_run_into_a_busy_folder", "train", "concurrency")
def _busy_folder(work: Path, shared: Shared) -> Command:
    out = work / "busy"

    def start() -> subprocess.CompletedProcess:
        first = _popen_train(shared.prepared, out, "--epochs", "200", "--log_mlflow", "false", cwd=work / "cwd")
        try:
            _wait_for(out / "checkpoints" / "checkpoint_epoch=1.pt", first)
            return run_module(train(shared.prepared, work, "--output_dir", out), cwd=work / "cwd")
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.communicate()

    return Command([], names="busy", problem="another training is writing there", out=out, start=start)


@case("train_ctrl_c", "train", "concurrency")
def _ctrl_c(work: Path, shared: Shared) -> Command:
    out = work / "interrupted"

    def start() -> subprocess.CompletedProcess:
        process = _popen_train(shared.prepared, out, "--epochs", "200", "--log_mlflow", "false", cwd=work / "cwd")
        try:
            _wait_for(out / "checkpoints" / "checkpoint_epoch=1.pt", process)
            os.killpg(process.pid, signal.SIGINT)
            stdout, stderr = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def check(done: subprocess.CompletedProcess) -> list[str]:
        problems = [] if "--resume true" in done.stderr else ["does not say how to resume"]
        if not list((out / "checkpoints").glob("checkpoint_epoch=*.pt")):
            problems.append("no checkpoint left to resume from")
        return problems

    return Command([], code=130, out=out, start=start, check=check)


@case("train_two_runs_create_one_store", "train", "concurrency")
def _two_runs_one_store(work: Path, shared: Shared) -> Command:
    store = f"sqlite:///{work / 'out' / 'mlruns.db'}"
    (work / "out").mkdir()

    def start() -> subprocess.CompletedProcess:
        runs = [_popen_train(shared.prepared, work / "out" / name, "--epochs", "1", "--tracking_uri", store,
                             "--run_name", name, cwd=work / "cwd") for name in ("a", "b")]
        results = [(p.returncode, *p.communicate(timeout=600)) for p in runs]
        results = [(p.returncode, out, err) for p, (_, out, err) in zip(runs, results)]
        code = max(r[0] for r in results)
        return subprocess.CompletedProcess([], code, "".join(r[1] for r in results), "".join(r[2] for r in results))

    return Command([], code=0, out=work / "out", start=start)
