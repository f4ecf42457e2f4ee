"""The command line ``python -m wss_monai.tracking {serve,uri,runs,sync}``."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from typing import Any

from wss_monai.tracking.journal import FALLBACK_NAME
from wss_monai.tracking.queries import runs_dataframe
from wss_monai.tracking.server import start_local_server
from wss_monai.tracking.store import DEFAULT_ARTIFACTS_DIR, DEFAULT_DB_NAME, resolve_tracking_uri, ui_command
from wss_monai.tracking.sync import sync_fallback


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wss_monai.tracking",
        description="MLflow tracking helpers of wss-monai.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="start a local MLflow server (UI + REST API) and print its URL",
        description="Start `mlflow server` on the given store, print its URL, stop on Ctrl+C.",
    )
    serve.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1, this machine only)")
    serve.add_argument(
        "--backend-store-uri",
        "--tracking-uri",
        dest="backend_store_uri",
        default=None,
        help=f"runs store (default: sqlite:///<cwd>/{DEFAULT_DB_NAME})",
    )
    serve.add_argument("--artifacts-dir", default=None, help=f"artifact folder (default: {DEFAULT_ARTIFACTS_DIR}/ beside the store)")
    serve.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the server to answer")

    uri = commands.add_parser("uri", help="print the tracking URI that would be used, and the `mlflow ui` command")
    uri.add_argument("--tracking-uri", default=None)

    runs = commands.add_parser("runs", help="print the runs of an experiment as CSV")
    runs.add_argument("experiment")
    runs.add_argument("--tracking-uri", default=None)
    runs.add_argument("--best-of", action="append", default=[], help="metric whose best epoch is wanted (repeatable)")

    sync = commands.add_parser(
        "sync",
        help="send a run's fallback journal (kept while the tracking server was unreachable) to a store",
        description=f"Send the operations a training kept in {FALLBACK_NAME} (its tracking store did not answer) "
        "to the store: the same run when the store has it, else a new run with the same name. Running it twice "
        "sends nothing twice.",
    )
    sync.add_argument("--from", dest="source", required=True, help=f"the journal, or the training run's output folder holding {FALLBACK_NAME}")
    sync.add_argument("--to", dest="target", default=None, help="tracking URI (default: the one the run was meant for)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "uri":
            resolved = resolve_tracking_uri(args.tracking_uri)
            print(resolved)
            print(ui_command(resolved))
            return 0
        if args.command == "runs":
            runs_dataframe(args.experiment, args.tracking_uri, best_of=args.best_of).to_csv(sys.stdout, index=False)
            return 0
        if args.command == "sync":
            try:
                print(sync_fallback(args.source, args.target).summary())
            except ConnectionError as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
            return 0
        server = start_local_server(
            port=args.port,
            host=args.host,
            backend_store_uri=args.backend_store_uri,
            artifacts_dir=args.artifacts_dir,
            timeout=args.timeout,
        )
    except (ValueError, OSError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"MLflow server (UI and REST API): {server.url}")
    print(f"  store: {server.backend_store_uri}\n  artifacts: {server.artifacts_dir}\n  log: {server.log_path}")
    print(f"  log runs to it with --tracking_uri {server.url}; Ctrl+C stops it (pid {server.pid}).", flush=True)

    def _interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # the server is in its own session: stop it on our way out

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    try:
        server.process.wait()
        print(f"mlflow server exited with code {server.process.returncode}; see {server.log_path}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping the server", file=sys.stderr)
        return 0
    finally:
        server.stop()
