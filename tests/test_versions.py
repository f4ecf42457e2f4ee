"""The versions the project names agree: requirements.txt pins, the bundle's metadata, what is installed."""

from __future__ import annotations

import json
import re
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s;]+)", line)
            assert match, f"requirements.txt: {line!r} is not pinned with =="
            pins[match.group(1).lower()] = match.group(3)
    return pins


def test_every_requirement_is_pinned_and_installed_at_that_version():
    for name, pinned in _pins().items():
        assert version(name).split("+")[0] == pinned, f"{name}: installed {version(name)}, requirements.txt pins {pinned}"


def test_the_bundle_metadata_names_the_pinned_versions():
    pins = _pins()
    meta = json.loads((REPO / "bundles" / "wss_segmentation" / "configs" / "metadata.json").read_text())
    assert meta["monai_version"] == pins["monai"]
    assert meta["pytorch_version"] == pins["torch"]
    assert meta["numpy_version"] == pins["numpy"]
    for name, named in meta["required_packages_version"].items():
        if name == "wss-monai":
            assert named == version("wss-monai")
        else:
            assert named == pins[name.lower()], f"metadata.json names {name} {named}, requirements.txt pins {pins[name.lower()]}"
