"""dataset.json, bounds.csv and prep.json: the prepared dataset's index, bounds table and provenance.

``dataset.json`` is a MONAI datalist (``load_decathlon_datalist(path, data_list_key="training")``
works on it); each entry is one 2D slice carrying its weak-label paths and its size bounds per
rule, so training transforms need no other file. All paths are relative to the dataset root and
every file is written in a fixed order with fixed formatting, so the same input and options give
byte-identical files.
"""

from __future__ import annotations

import csv
import io
import json
import platform
from importlib import metadata
from pathlib import Path

from data_prep.bounds import RULES, slice_bounds
from data_prep.io import write_file
from data_prep.splits import SPLITS

BOUNDS_COLUMNS = (
    "patient", "volume", "slice", "split", "class", "size_px", "size_mm2", "weak_px", "tag",
    "tags_lo", "tags_hi", "common_lo", "common_hi", "individual_lo", "individual_hi", "volume_size_px",
    "upper_lo", "upper_hi",
)  # fmt: skip
VERSIONED_PACKAGES = ("numpy", "scipy", "nibabel", "SimpleITK", "pydicom", "scikit-image", "tqdm", "wss-monai")


def write_outputs(root: Path, src: Path, results, splits, common, reference, options) -> dict:
    """Write dataset.json, bounds.csv and prep.json under ``root``; return the summary printed to the user."""
    checksums: dict[str, str] = {}
    for result in results:
        checksums.update(result.checksums)
    entries, rows = _entries_and_rows(results, splits, common, options)
    datalist = _datalist(results, splits, entries, options, src)
    checksums["dataset.json"] = write_file(root, "dataset.json", _json_bytes(datalist))
    checksums["bounds.csv"] = write_file(root, "bounds.csv", _csv_bytes(rows))
    summary = _summary(results, splits, common, reference, options)
    prep = {
        "source": options.source,
        "src": str(src),
        "name": options.name,
        "seed": options.seed,
        "options": _options_record(options),
        "versions": package_versions(),
        **summary,
        "patients": {p: {"split": s, "group": _group(results, p)} for p, s in sorted(splits.items())},
        "checksums": dict(sorted(checksums.items())),
    }
    write_file(root, "prep.json", _json_bytes(prep))
    return summary


def _entries_and_rows(results, splits, common, options):
    entries = {split: [] for split in SPLITS}
    rows = []
    primary = options.weak[0] if options.weak else None
    for result in results:
        case = result.case
        split = splits[case.patient]
        for item in result.slices:
            bounds = slice_bounds(item.sizes, item.n_pixels, common, result.volume_sizes, options.bound_options)
            pixel_mm2 = item.spacing[0] * item.spacing[1]
            entries[split].append(
                {
                    "image": item.files["image"],
                    "label": item.files["label"],
                    "weak": dict(item.files["weak"]),
                    "patient": case.patient,
                    "volume": case.volume,
                    "slice": item.index,
                    "spacing": item.spacing,
                    "size_px": item.sizes,
                    "tag": [int(s > 0) for s in item.sizes],
                    "volume_size_px": result.volume_sizes,
                    "bounds": bounds,
                }
            )
            for cls in range(options.n_classes):
                rows.append(
                    {
                        "patient": case.patient,
                        "volume": case.volume,
                        "slice": item.index,
                        "split": split,
                        "class": cls + 1,
                        "size_px": item.sizes[cls],
                        "size_mm2": item.sizes[cls] * pixel_mm2,
                        "weak_px": item.weak_px[primary][cls] if primary else 0,
                        "tag": int(item.sizes[cls] > 0),
                        "tags_lo": bounds["tags"][cls][0],
                        "tags_hi": bounds["tags"][cls][1],
                        "common_lo": bounds["common"][cls][0],
                        "common_hi": bounds["common"][cls][1],
                        "individual_lo": bounds["individual"][cls][0],
                        "individual_hi": bounds["individual"][cls][1],
                        "volume_size_px": result.volume_sizes[cls],
                        "upper_lo": bounds["upper"][cls][0],
                        "upper_hi": bounds["upper"][cls][1],
                    }
                )
    return entries, rows


def _datalist(results, splits, entries, options, src: Path) -> dict:
    labels = {"0": "background"}
    labels.update({str(i + 1): name for i, name in enumerate(options.class_names)})
    volumes = []
    for result in results:
        volumes.append(
            {
                "volume": result.case.volume,
                "patient": result.case.patient,
                "split": splits[result.case.patient],
                "image": result.files["image"],
                "label": result.files["label"],
                "raw_image": _relative(result.case.image, src),
                "raw_label": _relative(result.case.label, src),
                "slice_axis": options.slice_axis,
                "n_slices": len(result.slices),
                "original_shape": result.original_shape,
                "original_spacing": result.original_spacing,
                "spacing": result.spacing,
                "plan": result.plan,
                "size_px": result.volume_sizes,
            }
        )
    return {
        "name": options.name,
        "description": f"{options.source} prepared by wss-monai data_prep (2D slices, weak labels, size bounds)",
        "labels": labels,
        "tensorImageSize": "2D",
        "size": list(options.size),
        "weak_strategies": list(options.weak),
        "weak_primary": options.weak[0] if options.weak else None,
        "bound_rules": list(RULES),
        "numTraining": len(entries["training"]),
        "numValidation": len(entries["validation"]),
        "numTest": len(entries["test"]),
        "training": entries["training"],
        "validation": entries["validation"],
        "test": entries["test"],
        "volumes": volumes,
    }


def _summary(results, splits, common, reference, options) -> dict:
    total_pixels = sum(s.n_pixels for r in results for s in r.slices)
    fraction = {}
    foreground_fraction = {}
    for strategy in options.weak:
        annotated = sum(s.annotated_px[strategy] for r in results for s in r.slices)
        foreground = sum(sum(s.weak_px[strategy]) for r in results for s in r.slices)
        fraction[strategy] = annotated / total_pixels if total_pixels else 0.0
        foreground_fraction[strategy] = foreground / total_pixels if total_pixels else 0.0
    counts = {"patients": {}, "volumes": {}, "slices": {}}
    for split in SPLITS:
        in_split = [r for r in results if splits[r.case.patient] == split]
        counts["patients"][split] = sum(1 for s in splits.values() if s == split)
        counts["volumes"][split] = len(in_split)
        counts["slices"][split] = sum(len(r.slices) for r in in_split)
    return {
        "counts": counts,
        "classes": {
            str(i + 1): {"name": name, "raw_values": list(options.class_map[i])} for i, name in enumerate(options.class_names)
        },
        "reference_patient": reference,
        "common_bounds": {str(i + 1): list(pair) for i, pair in enumerate(common)},
        "annotated_fraction": fraction,
        "foreground_annotated_fraction": foreground_fraction,
    }


def print_summary(summary: dict, out: Path) -> None:
    """Tell the user what was written: counts, common bounds and annotated fractions."""
    counts = summary["counts"]
    parts = ", ".join(
        f"{split} {counts['patients'][split]} patients / {counts['slices'][split]} slices" for split in SPLITS
    )
    print(f"wrote {out}: {parts}")
    source = f"reference patient {summary['reference_patient']}" if summary["reference_patient"] else "given values"
    for cls, (low, high) in summary["common_bounds"].items():
        name = summary["classes"][cls]["name"]
        print(f"common bounds for class {cls} ({name}) from {source}: [{low:.1f}, {high:.1f}] px")
    for strategy, fraction in summary["annotated_fraction"].items():
        foreground = summary["foreground_annotated_fraction"][strategy]
        print(f"weak labels '{strategy}': {100 * fraction:.3f}% of pixels annotated ({100 * foreground:.3f}% foreground)")


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that shape the output."""
    versions = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _options_record(options) -> dict:
    return {
        "class_map": [list(v) for v in options.class_map],
        "class_names": list(options.class_names),
        "label_values": sorted(options.label_values),
        "size": list(options.size),
        "resize": options.resize,
        "inplane_spacing": options.inplane_spacing,
        "slice_axis": options.slice_axis,
        "percentiles": list(options.percentiles),
        "weak": list(options.weak),
        "erosion_iterations": options.weak_options.erosion_iterations,
        "disc_radius": options.weak_options.disc_radius,
        "box_margin": options.weak_options.box_margin,
        "background_scribble": options.weak_options.background_scribble,
        "background_margin": options.weak_options.background_margin,
        "common_margins": list(options.bound_options.common_margins),
        "common_percentiles": None
        if options.bound_options.common_percentiles is None
        else list(options.bound_options.common_percentiles),
        "common_values": None if options.common_values is None else [list(v) for v in options.common_values],
        "individual_margins": list(options.bound_options.individual_margins),
        "reference_patient": options.reference_patient,
        "val": options.val,
        "test": options.test,
        "val_patients": list(options.val_patients),
        "test_patients": list(options.test_patients),
        "seed": options.seed,
    }


def _group(results, patient: str):
    for result in results:
        if result.case.patient == patient:
            return result.case.group
    return None


def _relative(path: Path, src: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(src).resolve()).as_posix()
    except ValueError:
        return str(path)


def _json_bytes(data: dict) -> bytes:
    return (json.dumps(data, indent=1, allow_nan=False) + "\n").encode("utf-8")


def _csv_bytes(rows: list[dict]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=BOUNDS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")
