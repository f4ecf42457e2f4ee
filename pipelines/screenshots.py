"""Screenshots of the MLflow UI over an MLflow store, for the README: ``python -m pipelines.screenshots``.

Starts ``mlflow server`` on 127.0.0.1 over ``--tracking-uri`` (a SQLite store such as the demo's
``demo_out/mlruns.db``), opens the experiment's runs table and one run's page in headless
Chromium (Debian's ``chromium`` package; nothing is downloaded) and saves them as PNG files.
The pages are the MLflow UI's own; nothing is drawn here. Chromium runs with a virtual-time
budget so the single-page app has rendered before the picture is taken.

    python -m pipelines.screenshots --tracking-uri sqlite:///demo_out/mlruns.db --experiment acdc-lv --out docs/img
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from pipelines.folders import output_problem

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
#: The query that opens MLflow 3.18's model-training view rather than its GenAI one (the UI reads
#: it from the page address, else from the browser's last choice, which starts at GenAI)
TRAINING_VIEW = "workflowType=machine_learning"


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(browser: str, url: str, out: Path, size: tuple[int, int] = (1600, 1000), wait_ms: int = 20000) -> None:
    """``url`` rendered by headless Chromium into ``out`` (PNG)."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                        f"--virtual-time-budget={wait_ms}", f"--screenshot={out}", url],
                       check=True, capture_output=True, timeout=180)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.screenshots", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", required=True, help="the MLflow store to show (sqlite:///PATH.db)")
    parser.add_argument("--experiment", required=True, help="the experiment whose runs are shown")
    parser.add_argument("--run", default=None, help="run name of the run page (default: the run with the best val_dice_3d_mean)")
    parser.add_argument("--out", type=Path, default=Path("docs/img"), help="folder of the PNG files (default docs/img)")
    args = parser.parse_args(argv)
    from mlflow import MlflowClient

    from wss_monai import tracking

    problem = output_problem(args.out)
    browser = find_browser()
    if problem is None and browser is None:
        problem = f"no Chromium found ({', '.join(BROWSERS)}); install Debian's chromium package"
    try:
        uri = tracking.resolve_tracking_uri(args.tracking_uri)
    except ValueError as err:
        problem = problem or f"--tracking-uri: {err}"
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        print(f"error: --experiment {args.experiment!r}: no such experiment in {uri}", file=sys.stderr)
        return 2
    runs = client.search_runs([experiment.experiment_id], order_by=["metrics.val_dice_3d_mean DESC"])
    chosen = [r for r in runs if args.run is None or r.info.run_name == args.run]
    if not chosen:
        print(f"error: --run {args.run!r}: no such run in experiment {args.experiment!r}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as artifacts:
        server = tracking.start_local_server(backend_store_uri=uri, artifacts_dir=artifacts, timeout=120)
        try:
            pages = {
                "mlflow_runs.png": f"{server.url}/#/experiments/{experiment.experiment_id}?{TRAINING_VIEW}",
                "mlflow_run.png": f"{server.url}/#/experiments/{experiment.experiment_id}/runs/{chosen[0].info.run_id}?{TRAINING_VIEW}",
            }
            for name, url in pages.items():
                screenshot(browser, url, args.out / name)
                print(f"{args.out / name}: {url}")
        finally:
            server.stop(timeout=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
