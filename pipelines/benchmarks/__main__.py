"""Run benchmarks by name: ``python -m pipelines.benchmarks [--list] [NAME ...] [-- ARGS]``."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import pipelines.benchmarks as package

PRIVATE = {"common"}


def available() -> dict[str, str]:
    """Benchmark name -> first docstring line, for every public module of this package."""
    names = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_") or info.name in PRIVATE:
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if hasattr(module, "main"):
            names[info.name] = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
    return names


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.benchmarks",
        description="Run wss-monai benchmarks. Each prints its figures as ratios against a baseline "
        "measured in the same run. Arguments after '--' go to every selected benchmark "
        "(for example '-- --quick').",
    )
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    table = available()
    if args.list:
        for name, doc in sorted(table.items()):
            print(f"{name:20s} {doc}")
        return 0
    unknown = [n for n in args.names if n not in table]
    if unknown:
        print(f"error: unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(sorted(table))}", file=sys.stderr)
        return 2
    status = 0
    for name in args.names or sorted(table):
        print(f"== {name}: {table[name]}", flush=True)
        module = importlib.import_module(f"{package.__name__}.{name}")
        status |= int(module.main(extra) or 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
