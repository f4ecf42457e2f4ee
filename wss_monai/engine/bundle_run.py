"""What a bundle run reads from the ``monai.bundle run`` that runs it: its merged config and its command-line keys.

MONAI's runner gives the objects it builds no handle on itself, so these walk up the call stack to
the ``ConfigParser`` resolving the config and to ``monai.bundle.scripts.run``; outside a bundle
run (plain Python) they find nothing and do nothing.
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Mapping
from typing import Any

from wss_monai.engine.errors import fail


def current_config() -> dict | None:
    """The merged config of the bundle being run (files plus command-line overrides), or None.

    ``python -m monai.bundle run`` resolves every ``$`` expression from inside
    ``ConfigParser.get_parsed_content``; this looks for that parser up the call stack and returns
    a deep copy of its raw content (references and expressions unevaluated). Outside a bundle run
    (plain Python) it returns None.
    """
    try:
        from monai.bundle import ConfigParser
    except ImportError:  # pragma: no cover - MONAI is a dependency
        return None
    frame = inspect.currentframe()
    try:
        while frame is not None:
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, ConfigParser):
                try:
                    return copy.deepcopy(candidate.get())
                except Exception:  # objects put in by Python callers may not copy
                    return json.loads(json.dumps(candidate.get(), default=str))
            frame = frame.f_back
    finally:
        del frame
    return None


def substitute_top_level(config: dict) -> dict:
    """A copy of ``config`` where ``"@key"`` strings naming a top-level plain value are replaced by it.

    Only exact references to top-level JSON values (numbers, strings, booleans, lists of them) are
    substituted, so that logged params read ``optimizer.lr: 0.0005`` rather than ``@learning_rate``;
    nothing is evaluated.
    """
    plain = {
        k: v
        for k, v in config.items()
        if not (isinstance(v, str) and v[:1] in "$@%") and (v is None or isinstance(v, (int, float, bool, str)) or (
            isinstance(v, list) and all(isinstance(x, (int, float, bool, str)) for x in v)))
    }

    def walk(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("@") and value[1:] in plain:
            return plain[value[1:]]
        if isinstance(value, Mapping):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return {k: (v if k in plain else walk(v)) for k, v in config.items()}


def _bundle_run_call() -> dict | None:
    """The arguments of ``monai.bundle.scripts.run`` when it is on the call stack, else None."""
    try:
        from monai.bundle import scripts
    except ImportError:  # pragma: no cover
        return None
    code = getattr(scripts.run, "__code__", None)
    frame = inspect.currentframe()
    try:
        while frame is not None:
            if frame.f_code is code:
                return dict(frame.f_locals)
            frame = frame.f_back
    finally:
        del frame
    return None


def check_override_keys() -> None:
    """Stop on a command-line key that is not a top-level key of the bundle's config files.

    ``python -m monai.bundle run --epoch 3`` (for ``--epochs``) adds a key nobody reads and trains
    with the default; this finds the overrides given to ``monai.bundle.scripts.run`` (command line
    or ``args_file``) and checks the part of each key before the first ``#`` against the keys of
    the config files of the run (overlays included). An unknown key ends the run with one line
    naming it and the closest known keys (exit code 2). Outside ``monai.bundle run`` (configs
    built from Python) nothing is checked.
    """
    call = _bundle_run_call()
    if call is None or not call.get("config_file"):
        return
    try:
        from monai.bundle import ConfigParser
        from monai.bundle.workflows import ConfigWorkflow

        content = ConfigParser.load_config_files(call["config_file"])
        overrides = dict(call.get("override") or {})
        if call.get("args_file"):
            overrides.update(ConfigParser.load_config_file(call["args_file"]))
        consumed = set(inspect.signature(ConfigWorkflow.__init__).parameters) | set(
            inspect.signature(_bundle_run_fn()).parameters) | {"workflow_name", "workflow", "args_file", "config_file"}
    except Exception:  # unreadable files are reported by MONAI itself
        return
    _check_term_targets(content)
    known = set(content) | {"_meta_"}
    unknown = []
    for key in overrides:
        top = str(key).lstrip("+").split("#", 1)[0]
        if top and top not in known and top not in consumed:
            unknown.append(top)
    if not unknown:
        return
    import difflib

    files = call["config_file"]
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(k for k in known if not k.startswith("_")), n=2, cutoff=0.6)
        parts.append(f"--{key}" + (f" (did you mean {' or '.join('--' + c for c in close)}?)" if close else ""))
    fail(
        f"unknown key{'s' if len(parts) > 1 else ''} {', '.join(parts)}: not in the bundle's config ({files}); "
        "a misspelt key would be ignored. A new key belongs in a config file."
    )


def _check_term_targets(content: Mapping[str, Any]) -> None:
    """Stop with one line on a regime or regularizer term whose ``_target_`` names no class (MONAI's own error is a traceback)."""
    from pydoc import locate

    tables = {"regimes": content.get("regimes"), "regularizers": content.get("regularizers")}
    for table_name, table in tables.items():
        if not isinstance(table, Mapping):
            continue
        for name, entry in table.items():
            terms = (entry.get("loss_terms") if table_name == "regimes" else {name: entry}) if isinstance(entry, Mapping) else None
            for term_name, term in (terms or {}).items() if isinstance(terms, Mapping) else ():
                target = term.get("term", {}).get("_target_") if isinstance(term, Mapping) and isinstance(term.get("term"), Mapping) else None
                if isinstance(target, str) and not target.startswith(("$", "@")) and locate(target) is None:
                    fail(f"{table_name}#{name}: term {term_name!r} has _target_ {target!r}, which names no class; "
                         "a term is a loss class such as wss_monai.losses.SizePenalty.")


def _bundle_run_fn():
    from monai.bundle import scripts

    return scripts.run
