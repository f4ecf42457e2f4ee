"""``python -m pipelines.testkit.phantoms {acdc,promise12,vertebral} --out RAW …``: write a synthetic raw dataset."""

from __future__ import annotations

import argparse
import sys

from data_prep.errors import InputError, exit_on_input_error
from pipelines.testkit.phantoms import DATASETS, MAX_CASES, generate


def build_parser() -> argparse.ArgumentParser:
    """The command's parser; its ``func`` (:func:`run`) returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.testkit.phantoms",
        description="Write a synthetic raw dataset (a phantom) in the exact on-disk layout of ACDC "
        "(training/patientXXX/ with Info.cfg, 4D cine, ED/ES frames and labels), PROMISE12 "
        "(TrainingData_Part1-3/CaseNN.mhd/.raw and segmentations) or the vertebral-body MR set "
        "(Img_XX.nii, Img_XX_Labels.nii). The same --seed gives byte-identical files. The folder "
        "appears only when complete.",
    )
    parser.add_argument("dataset", choices=sorted(DATASETS), help="which real layout to imitate")
    parser.add_argument("--out", required=True, metavar="RAW", help="folder to create (must not exist, or be empty)")
    parser.add_argument("--cases", type=int, default=None, metavar="N",
                        help="number of patients/cases (default: the real training count: acdc 100, "
                        "promise12 50, vertebral 23; at most " + ", ".join(f"{k} {v}" for k, v in MAX_CASES.items()) + ")")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed; the same seed gives the same bytes (default 0)")
    parser.add_argument("--small", action="store_true",
                        help="tiny volumes (about 64 pixels square, a few slices) for tests and quick demos")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="processes generating cases in parallel (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    parser.add_argument("--annotator", type=int, default=None, metavar="N",
                        help="acdc only: annotator-like annotations instead of full masks: scribble label maps (public "
                        "ACDC convention, 4 = unannotated), clicks as 3D Slicer markups, tags.csv, size_estimates.csv; "
                        "full masks (_gt) for the last N patients only")
    sizes = parser.add_argument_group("sizes (override the drawn ones; the spacing follows to keep the field of view)")
    sizes.add_argument("--inplane", type=int, default=None, metavar="N", help="in-plane size in voxels (square)")
    sizes.add_argument("--slices", type=int, default=None, metavar="N", help="number of slices")
    sizes.add_argument("--frames", type=int, default=None, metavar="N", help="acdc only: frames of the cine (NbFrame)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Generate the phantom described by ``args``; bad values raise InputError (one line, exit 2)."""
    if args.frames is not None and args.dataset != "acdc":
        raise InputError(args.out, "--frames applies to acdc only")
    sizes = {name: getattr(args, name) for name in ("inplane", "slices", "frames") if getattr(args, name) is not None}
    root = generate(args.dataset, args.out, cases=args.cases, seed=args.seed, small=args.small,
                    workers=args.workers, overwrite=args.overwrite, annotator=args.annotator, **sizes)
    print(root)
    return 0


@exit_on_input_error  # a bad value: one line ``error: <file>: <problem>`` and exit code 2, as data_prep's commands
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
