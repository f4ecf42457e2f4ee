"""``python -m data_prep verify PREPARED [--no-checksums]``: is this prepared dataset safe to train on?

A prepared dataset handed over by someone else, or edited since it was written, is checked as a
whole before it costs a training run: every entry of dataset.json, every slice file, and every
checksum prep.json recorded (:mod:`wss_monai.data.verify` holds the checks; the bundles run the
same ones, without the checksums, at the start of every run). The report lists the problems, a
line each (the first :data:`SHOWN`), so that one pass shows what to fix or re-prepare.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from data_prep.errors import EXIT_BAD_INPUT, InputError

#: problems listed in the report; the rest are counted
SHOWN = 20


def add_parser(subparsers) -> None:
    """Register ``verify`` on ``subparsers`` (from ``python -m data_prep``)."""
    parser = subparsers.add_parser(
        "verify",
        help="check a prepared dataset: entries, slice files, checksums",
        description=textwrap.fill(
            "Check a prepared dataset before training on it: dataset.json's entries (paths inside the folder, "
            "safe volume names, numeric bounds lo <= hi), every slice file (present, NIfTI, 2D, of the dataset's "
            "size, no NaN/inf in images, label and weak-label values among the classes and 255), and the "
            "checksums prep.json recorded when the dataset was written. Prints 'ok: N slices, M volumes "
            "checked' (exit 0) or one line per problem (exit 2).",
            width=88,
        ),
        epilog="The bundles run the same checks, except the checksums, at the start of every run.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prepared", metavar="PREPARED", type=Path, help="prepared dataset folder (holding dataset.json)")
    parser.add_argument(
        "--no-checksums",
        dest="checksums",
        action="store_false",
        help="skip comparing the files with prep.json's checksums (e.g. after deliberately editing dataset.json)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wss_monai.data.prepared import DatasetError
    from wss_monai.data.verify import find_problems

    if not args.prepared.is_dir():
        raise InputError(args.prepared, "no such folder; pass a prepared dataset folder (written by `python -m data_prep ...`)")
    try:
        found = find_problems(args.prepared, contents=True, checksums=args.checksums, progress=True)
    except DatasetError as err:  # no folder, no dataset.json, no 'labels': nothing to list
        raise InputError(None, str(err)) from None
    for note in found.notes:
        print(f"note: {note}")
    if found.ok:
        print(f"ok: {found.slices} slices, {found.volumes} volumes checked"
              + ("" if args.checksums and not found.notes else " (checksums not compared)"))
        return 0
    for problem in found.problems[:SHOWN]:
        print(problem.line())
    count = len(found.problems)
    shown = f"the first {SHOWN} listed above" if count > SHOWN else "listed above"
    print(f"error: {Path(args.prepared)}: {count} problem{'s' if count > 1 else ''} found ({shown})", file=sys.stderr)
    return EXIT_BAD_INPUT
