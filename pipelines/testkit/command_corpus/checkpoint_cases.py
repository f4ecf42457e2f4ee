"""Command corpus cases: evaluation, inference and export given checkpoints and runs from someone else."""

from __future__ import annotations

import os
from pathlib import Path


from pipelines.testkit.command_corpus.corpus import (
    Command,
    Shared,
    case,
    copied_run,
    evaluate,
    infer,
)


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
