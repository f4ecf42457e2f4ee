"""The main job: ``python -m pipelines.demo [--quick] [--out DIR]``.

Today it generates an ACDC-layout phantom and prepares it into the training format (2D NIfTI
slices, weak labels, size bounds, splits), then prints where everything is and a short summary.
Training the regimes and writing the comparison report join it with the bundles and report
pipelines.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from data_prep.cli import main as data_prep_main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.demo",
        description="wss-monai demo: generate a synthetic ACDC-layout dataset (phantom) and prepare it "
        "for weakly supervised training (2D slices, weak labels, size bounds, patient splits).",
    )
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: ./demo_out)")
    parser.add_argument("--quick", action="store_true", help="fewer, smaller patients: finishes in seconds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the phantom and of the preparation (default: 0)")
    return parser.parse_args(argv)


def summarise(prepared: Path) -> str:
    datalist = json.loads((prepared / "dataset.json").read_text())
    with open(prepared / "bounds.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    present = sum(1 for r in rows if int(r["tag"]) == 1)
    splits = ", ".join(f"{len(datalist[s])} {s}" for s in ("training", "validation", "test"))
    return f"{len(rows)} slices ({splits}); target present in {present} slices"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    raw, prepared = out / "raw_acdc", out / "prepared_acdc"
    for folder in (raw, prepared):
        if folder.exists():
            print(f"error: {folder}: already exists; choose another --out or remove it", file=sys.stderr)
            return 2
    cases, size = ("10", "64") if args.quick else ("20", "128")
    start = time.perf_counter()
    step = ["phantom", "acdc", "--out", str(raw), "--cases", cases, "--seed", str(args.seed)]
    status = data_prep_main(step + ["--small"] if args.quick else step)
    if status:
        return status
    status = data_prep_main(["acdc", "--src", str(raw), "--out", str(prepared), "--size", size, "--seed", str(args.seed)])
    if status:
        return status
    print(f"\nDemo finished in {time.perf_counter() - start:.1f} s: {summarise(prepared)}")
    print(f"  raw phantom (ACDC layout):  {raw}")
    print(f"  prepared dataset:           {prepared}  (dataset.json, bounds.csv, slices/, volumes/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
