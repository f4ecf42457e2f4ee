"""``python -m data_prep``: one sub-command per source, and ``verify`` to check a prepared dataset.

Synthetic raw datasets (phantoms) to try it on are the test kit's: ``python -m
pipelines.testkit.phantoms acdc --out RAW``.

Each sub-command module exposes ``add_parser(subparsers)`` which registers its parser and sets
``func`` (taking the parsed namespace, returning an exit code).
"""

from __future__ import annotations

import argparse
import sys

from data_prep.errors import exit_on_input_error


def build_parser() -> argparse.ArgumentParser:
    from data_prep import prepare_cli, verify_cli

    parser = argparse.ArgumentParser(
        prog="python -m data_prep",
        description="Turn raw 3D medical volumes into a prepared 2D dataset for weakly supervised "
        "training (NIfTI slices, weak labels, size bounds, splits), and check a prepared dataset. "
        "Synthetic raw datasets (phantoms) in the real layouts: python -m pipelines.testkit.phantoms.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    prepare_cli.add_parsers(sub)
    verify_cli.add_parser(sub)
    return parser


@exit_on_input_error
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["phantom"]:  # the command of earlier versions: say where it went
        print("error: 'python -m data_prep phantom' moved to the test kit: python -m pipelines.testkit.phantoms "
              + " ".join(argv[1:]) + " (same options)", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
