"""Turn a finished training run into a self-contained MONAI bundle in the model-zoo layout.

    python -m wss_monai.export --run RUN --out BUNDLE

``RUN`` is a training run's output folder (``models/model.pt``, ``models/preprocessing.json``,
``run.json``, ``config.json``); ``BUNDLE`` is written as::

    BUNDLE/configs/inference.json   segment raw scans (the bundle's own, ckpt_path = models/model.pt)
    BUNDLE/configs/train.json       the repository bundle's training config (for its network_def)
    BUNDLE/configs/metadata.json    checked by MONAI's verify_metadata; the run's measured scores (eval_metrics)
    BUNDLE/configs/logging.conf
    BUNDLE/models/model.pt          the best checkpoint (state_dict)
    BUNDLE/models/preprocessing.json  the model card: classes and the preprocessing of new scans
    BUNDLE/models/model.ts          TorchScript, when the network traces
    BUNDLE/docs/README.md           regime, data, scores, commands (each runs as written inside BUNDLE)
    BUNDLE/docs/metadata.schema.json  the metadata schema, so verify_metadata never downloads it
    BUNDLE/LICENSE

Inside ``BUNDLE``, ``python -m monai.bundle run --config_file configs/inference.json --input_dir
SCANS --output_dir OUT`` segments new scans wherever ``wss-monai`` is installed
(``pip install <this repository>``); the repository itself is not needed.

Bad input (no run, a run without its best checkpoint or model card, ``--out`` an existing
file or a non-empty folder) ends with one line and exit code 2, nothing written: the bundle is
assembled in a temporary folder beside ``--out`` and renamed at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from wss_monai.tracking.record import RunRecord

__all__ = ["export_run", "main"]

BUNDLE_DIR = Path(__file__).resolve().parents[1] / "bundles" / "wss_segmentation"
"""The repository bundle whose configs an export copies."""

SCHEMA = BUNDLE_DIR.parent / "schema" / "metadata.schema.json"
"""The metadata schema kept in the repository (MONAI's, as named by ``metadata.json``'s ``schema``)."""


class ExportError(ValueError):
    """A run that cannot be exported, or an output that cannot be written; one line."""


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"{path}: missing; {what}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportError(f"{path}: cannot read it as JSON ({err})") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path}: expected a JSON object")
    return data


def _scores(run: Path, info: dict) -> dict[str, float]:
    """The run's measured scores: the best validation 3D Dice, plus evaluate/metrics.json when present."""
    scores: dict[str, float] = {}
    best = info.get("best_metric")
    if isinstance(best, (int, float)) and math.isfinite(best):
        scores["val_dice_3d_mean"] = float(best)
    try:
        evaluated = json.loads((run / "evaluate" / "metrics.json").read_text()).get("metrics", {})
    except (OSError, json.JSONDecodeError, AttributeError):
        evaluated = {}
    for key, value in sorted(evaluated.items()):
        if isinstance(value, (int, float)) and math.isfinite(value) and ("dice" in key or "hd95" in key):
            scores[key] = float(value)
    return scores


def _metadata(card: dict, scores: dict[str, float], info: dict) -> dict:
    meta = json.loads((BUNDLE_DIR / "configs" / "metadata.json").read_text())
    classes = card["class_names"]
    height, width = (int(s) for s in card["preprocessing"]["size"])
    meta["name"] = "wss_segmentation"
    meta["task"] = f"Segmentation of {', '.join(classes[1:])} from weak annotations (regime {card.get('regime')})"
    meta.pop("eval_metrics", None)
    if scores:  # measured scores only (the schema does not require the key)
        meta["eval_metrics"] = scores
    meta["changelog"] = {meta["version"]: f"exported from run {info.get('run_name')!r} (regime {card.get('regime')}, dataset {card.get('dataset')})"}
    image = meta["network_data_format"]["inputs"]["image"]
    image["spatial_shape"] = [height, width]
    pred = meta["network_data_format"]["outputs"]["pred"]
    pred["num_channels"] = len(classes)
    pred["spatial_shape"] = [height, width]
    pred["channel_def"] = {str(i): name for i, name in enumerate(classes)}
    return meta


def _readme(card: dict, scores: dict[str, float], info: dict, traced: bool) -> str:
    pre = card["preprocessing"]
    rows = "\n".join(f"| `{k}` | {v:.4f} |" for k, v in scores.items()) or "| (none recorded) | |"
    return f"""# wss_segmentation (exported model)

## Overview

A 2D {card.get('network', 'ENet')} segmenting {', '.join(card['class_names'][1:])} slice by slice, trained with
wss-monai's weakly supervised regime `{card.get('regime')}` (run `{info.get('run_name')}`). It segments raw 3D
scans (NIfTI, NRRD, MetaImage, or a folder holding one DICOM series) with the preprocessing it was
trained with, and writes each segmentation in the scan's own geometry.

## Data

Trained on the prepared dataset `{card.get('dataset')}`: classes {', '.join(f'{i} {n}' for i, n in enumerate(card['class_names']))}.
Preprocessing of a new scan (from `models/preprocessing.json`): intensities clipped to the
{pre['percentiles'][0]} and {pre['percentiles'][1]} percentiles of the scan and mapped to [0, 1]; slices along
axis {pre['slice_axis']} (file index order); in-plane `{pre['resize']}` resampling to {pre['size'][0]} x {pre['size'][1]}
{'(in-plane spacing ' + str(pre['inplane_spacing']) + ' mm)' if pre.get('inplane_spacing') else ''}; the result is mapped back to the scan's grid.

## Training configuration

Regime `{card.get('regime')}`, best epoch {info.get('best_epoch')} of {info.get('epochs', '?')}; the full
configuration is `configs/train.json` (the regime tables) plus the run's own settings in MLflow
(`{info.get('tracking_uri')}`, experiment `{info.get('experiment')}`, run id `{info.get('run_id')}`).

## Performance

Measured on the run's data (validation: best checkpoint's 3D Dice; test: `evaluate.json`, when run):

| metric | value |
|---|---|
{rows}

## Commands

Segment every scan in a folder (from this folder; wss-monai installed, e.g. `pip install <wss-monai repository>`):

```bash
python -m monai.bundle run --config_file configs/inference.json --input_dir SCANS --output_dir OUT
```

Each scan gives `OUT/<scan name>_seg.nii.gz` (a DICOM series: the folder's name); add
`--probabilities true` for `OUT/<scan name>_prob.nii.gz`. Check the metadata against the schema
shipped in `docs/` (nothing is downloaded: `--filepath` names a file that exists) and the
network's input and output shapes:

```bash
python -m monai.bundle verify_metadata --meta_file configs/metadata.json --filepath docs/metadata.schema.json
python -m monai.bundle verify_net_in_out network_def --meta_file configs/metadata.json --config_file configs/train.json \\
    --device cpu --n 2 --network_def#num_classes {len(card['class_names'])}
```

{'`models/model.ts` is the TorchScript export (traced at ' + str(pre['size'][0]) + ' x ' + str(pre['size'][1]) + ').' if traced else 'The network did not trace; no `models/model.ts`.'}

## License

Apache-2.0 (see `LICENSE`). Research use; not for clinical use.
"""


def export_run(run: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the bundle of ``run`` to ``out`` (module docstring); returns ``out``.

    Raises:
        ExportError: the run or the output folder is not usable (one line, nothing written).
    """
    import torch

    run, out = Path(run).expanduser().resolve(), Path(out).expanduser().resolve()
    if not run.is_dir():
        raise ExportError(f"{run}: --run must be a training run's output folder")
    record = RunRecord(run)
    ckpt = record.best_checkpoint
    if not ckpt.is_file():
        raise ExportError(f"{ckpt}: missing; the run has no best checkpoint yet (train it for at least one epoch)")
    card = _read_json(record.model_card_path, "the run was not made by the wss_segmentation bundle")
    if card.get("bundle") != "wss_segmentation":
        raise ExportError(f"{record.model_card_path}: a model of the bundle {card.get('bundle')!r}, not 'wss_segmentation'")
    info = _read_json(record.info_path, "not a training run's output folder")
    from wss_monai.engine.weights import weights_problem

    _, why = weights_problem(ckpt)  # a bundle whose model.pt does not load would fail only on first use
    if why is not None:
        raise ExportError(why)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out}: --out exists and is {'a file' if not out.is_dir() else 'not empty'}; pass a new folder")
    if out == run or run in out.parents:
        raise ExportError(f"{out}: --out must lie outside the run folder")
    network_target = "wss_monai.networks.ENet"
    try:
        config = json.loads(record.config_path.read_text())
        network_target = str(config.get("network_def", {}).get("_target_") or network_target)
    except (OSError, json.JSONDecodeError, AttributeError):
        pass
    card = {**card, "network": network_target.rsplit(".", 1)[-1]}
    scores = _scores(run, info)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "configs").mkdir()
        (tmp / "models").mkdir()
        (tmp / "docs").mkdir()
        for name in ("train.json", "logging.conf"):
            shutil.copy2(BUNDLE_DIR / "configs" / name, tmp / "configs" / name)
        inference = json.loads((BUNDLE_DIR / "configs" / "inference.json").read_text())
        inference["network_def"]["_target_"] = network_target
        (tmp / "configs" / "inference.json").write_text(json.dumps(inference, indent=4) + "\n")
        train = json.loads((tmp / "configs" / "train.json").read_text())
        train["network_def"]["_target_"] = network_target
        (tmp / "configs" / "train.json").write_text(json.dumps(train, indent=4) + "\n")
        (tmp / "configs" / "metadata.json").write_text(json.dumps(_metadata(card, scores, info), indent=4) + "\n")
        shutil.copy2(ckpt, tmp / "models" / "model.pt")
        (tmp / "models" / "preprocessing.json").write_text(json.dumps(card, indent=2) + "\n")
        shutil.copy2(BUNDLE_DIR / "LICENSE", tmp / "LICENSE")
        shutil.copy2(SCHEMA, tmp / "docs" / "metadata.schema.json")
        traced = _trace(tmp, card, network_target, torch)
        (tmp / "docs" / "README.md").write_text(_readme(card, scores, info, traced))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _trace(bundle: Path, card: dict, target: str, torch: Any) -> bool:
    """``models/model.ts`` with MONAI's ``ckpt_export`` (traced at the model's slice size); False if it does not trace."""
    import contextlib
    import io

    from monai.bundle.scripts import ckpt_export

    import logging

    height, width = (int(s) for s in card["preprocessing"]["size"])
    quiet = logging.getLogger("monai.bundle.scripts")  # its "exported to file" names the temporary folder
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            ckpt_export(net_id="network_def", filepath=str(bundle / "models" / "model.ts"), ckpt_file=str(bundle / "models" / "model.pt"),
                        meta_file=str(bundle / "configs" / "metadata.json"), config_file=str(bundle / "configs" / "train.json"),
                        use_trace=True, input_shape=[1, 1, height, width], **{"network_def#num_classes": int(card["num_classes"])})
    except Exception:  # a network that does not trace: the bundle still runs from model.pt
        (bundle / "models" / "model.ts").unlink(missing_ok=True)
        return False
    finally:
        quiet.setLevel(level)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wss_monai.export", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a training run's output folder (holds models/model.pt)")
    parser.add_argument("--out", required=True, help="the bundle folder to write (new or empty)")
    args = parser.parse_args(argv)
    try:
        out = export_run(args.run, args.out)
    except ExportError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except OSError as err:  # --out in a read-only or full place: nothing is left behind (export_run cleans up)
        where = err.filename or args.out
        print(f"error: --out {args.out}: cannot write the bundle ({where}: {err.strerror or err})", file=sys.stderr)
        return 2
    print(f"bundle written: {out}\n  segment scans: cd {out} && python -m monai.bundle run --config_file configs/inference.json "
          "--input_dir SCANS --output_dir OUT")
    return 0


if __name__ == "__main__":
    sys.exit(main())
