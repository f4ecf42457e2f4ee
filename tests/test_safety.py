"""Safety: no command runs user-supplied strings as code, and the MLflow server stays on this machine by default."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Packages whose code a user's command runs (tests may exec what they like).
SOURCES = ("data_prep", "wss_monai", "pipelines", "bundles")
#: file -> why its eval/exec is not fed user strings.
ALLOWED = {
    "pipelines/benchmarks/common.py": "runs the benchmark's own code string in a child process to measure its memory",
    "pipelines/benchmarks/gated_crf.py": "times the benchmark's own candidate snippets",
}

#: ``eval(`` or ``exec(`` as a call of the builtin (not ``model.eval()``, not ``evaluate(``).
EVAL_OR_EXEC = re.compile(r"(?<![.\w])(eval|exec)\s*\(")


def python_files() -> list[Path]:
    return sorted(p for package in SOURCES for p in (ROOT / package).rglob("*.py") if (ROOT / package).is_dir())


def risky_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for eval/exec/compile, unpickling, unsafe YAML and ``torch.load(weights_only=False)``."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else None
        dotted = f"{func.value.id}.{func.attr}" if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else None
        keywords = {k.arg: k.value for k in node.keywords}
        if name in ("eval", "exec") or dotted in ("builtins.eval", "builtins.exec"):
            found.append((node.lineno, f"{name or dotted}()"))
        elif dotted in ("pickle.load", "pickle.loads", "marshal.load", "marshal.loads", "shelve.open", "yaml.unsafe_load"):
            found.append((node.lineno, f"{dotted}()"))
        elif dotted == "yaml.load" and not (
            "Loader" in keywords and isinstance(keywords["Loader"], ast.Attribute) and "Safe" in keywords["Loader"].attr
        ):
            found.append((node.lineno, "yaml.load() without a SafeLoader"))
        elif dotted == "torch.load" and _constant(keywords.get("weights_only")) is False:
            found.append((node.lineno, "torch.load(weights_only=False)"))
        elif dotted in ("os.system", "os.popen") or _constant(keywords.get("shell")) is True:
            found.append((node.lineno, "a shell command line"))
    return found


def _constant(node):
    return node.value if isinstance(node, ast.Constant) else None


def test_eval_and_exec_appear_only_in_the_allowed_places():
    """A plain grep (it also sees code inside strings, as common.py runs in a child process)."""
    files = python_files()
    assert any(p.parts[-2] == "data_prep" for p in files)  # the scan sees the packages
    offenders = []
    for path in files:
        relpath = path.relative_to(ROOT).as_posix()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if EVAL_OR_EXEC.search(line) and relpath not in ALLOWED:
                offenders.append(f"{relpath}:{number}: {line.strip()}")
    assert not offenders, "eval/exec outside the allowed places:\n" + "\n".join(offenders)


def test_no_source_unpickles_or_shells_out_user_strings():
    offenders = []
    for path in python_files():
        relpath = path.relative_to(ROOT).as_posix()
        for line, what in risky_calls(ast.parse(path.read_text(encoding="utf-8"), filename=relpath)):
            if relpath not in ALLOWED:
                offenders.append(f"{relpath}:{line}: {what}")
    assert not offenders, "code that may run user-supplied strings:\n" + "\n".join(offenders)


def test_the_scans_find_what_they_look_for():
    assert EVAL_OR_EXEC.search("x = eval(text)") and EVAL_OR_EXEC.search('"exec(compile(s))"')
    assert not EVAL_OR_EXEC.search("net.eval()") and not EVAL_OR_EXEC.search("evaluate(x)")
    code = "eval(x)\nexec(y)\npickle.loads(b)\nyaml.load(s)\nyaml.load(s, Loader=yaml.SafeLoader)\nnet.eval()\n"
    expected = ["eval()", "exec()", "pickle.loads()", "yaml.load() without a SafeLoader"]
    assert [what for _, what in risky_calls(ast.parse(code))] == expected


def test_the_allowed_places_still_exist():
    for relpath in ALLOWED:
        assert (ROOT / relpath).is_file(), f"{relpath} is gone: drop it from ALLOWED"


def test_mlflow_server_binds_to_loopback_unless_told_otherwise():
    tracking = pytest.importorskip("wss_monai.tracking")
    assert inspect.signature(tracking.start_local_server).parameters["host"].default == "127.0.0.1"
    assert tracking._build_parser().parse_args(["serve"]).host == "127.0.0.1"
    assert tracking._is_loopback("127.0.0.1") and tracking._is_loopback("::1") and not tracking._is_loopback("0.0.0.0")


HOSTILE_VALUES = [
    "$__import__('pathlib').Path('PWNED').write_text('x')",
    "$@network_def",
    "@dataset_dir",
    "%train.json#epochs",
    "#epochs",
    "sqlite:////tmp/a@b#c/$x.db",
    "1e3",
    "[1, 2]",
    "True",
    "{'a': 1}",
    " $leading space",
    "naïve ünïcode ✓",
]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_values_forwarded_to_a_bundle_run_arrive_as_the_same_string(value, tmp_path, monkeypatch):
    """What ``pipelines.regimes`` (and so the demo, reproduce and report) hands a bundle run is data.

    The values go through the real process launcher; the command line and the generated overlay are
    then read by MONAI's own config parser, as ``monai.bundle run`` would, and every forwarded value
    must come back as the very string the user typed, with nothing evaluated on the way.
    """
    import json as _json
    import subprocess

    from monai.bundle import ConfigParser

    from pipelines import runner

    started = {}

    class FakePopen:
        def __init__(self, cmd, **kwargs):
            started["cmd"], started["cwd"] = cmd, kwargs.get("cwd")

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    monkeypatch.chdir(tmp_path)
    process = runner.RegimeProcess(tmp_path / "prepared", "individual", out_dir=tmp_path / "out", tracking_uri=value,
                                   run_name="run-1", experiment=value, seconds=None, epochs=1,
                                   tags={"who": value}, overrides={"weak": value})
    process._log.close()
    cmd = started["cmd"]
    keys = [arg for arg in cmd if arg.startswith("--")]
    assert keys == ["--config_file", "--meta_file", "--logging_file"], "values must travel in the overlay, not through fire"
    files = _json.loads(cmd[cmd.index("--config_file") + 1])
    parser = ConfigParser()
    parser.read_config(files)
    for key in ("tracking_uri", "experiment_name", "weak"):
        assert parser.get_parsed_content(key) == value, key
    assert _json.loads(parser.get_parsed_content("time_budget_tags")) == {"who": value}
    assert not (tmp_path / "PWNED").exists() and not (Path(started["cwd"]) / "PWNED").exists()
