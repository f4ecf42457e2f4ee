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

from data_prep.bounds import RULES, known_bounds, slice_bounds
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
    entries, rows, sources = _entries_and_rows(results, splits, common, options)
    provenance = _provenance(options, sources, reference)
    datalist = _datalist(results, splits, entries, options, src, provenance)
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
        "provenance": _provenance_record(options, provenance, reference),
        "patients": {p: {"split": s, "group": _group(results, p)} for p, s in sorted(splits.items())},
        "checksums": dict(sorted(checksums.items())),
    }
    write_file(root, "prep.json", _json_bytes(prep))
    return summary


def _entries_and_rows(results, splits, common, options):
    entries = {split: [] for split in SPLITS}
    rows = []
    sources: dict[str, set[str]] = {rule: set() for rule in RULES}  # of the training slices' bounds
    unused: dict[str, set[str]] = {rule: set() for rule in RULES}
    primary = options.weak[0] if options.weak else None
    for result in results:
        case = result.case
        split = splits[case.patient]
        found_in = sources if split == "training" else unused
        for item in result.slices:
            pixel_mm2 = item.spacing[0] * item.spacing[1]
            slice_common = common
            if options.common_mm2 is not None:
                slice_common = [(low / pixel_mm2, high / pixel_mm2) for low, high in options.common_mm2]
            if item.sizes is not None:
                bounds = slice_bounds(item.sizes, item.n_pixels, slice_common or _NO_COMMON * options.n_classes,
                                      result.volume_sizes, options.bound_options)
                if slice_common is None:
                    bounds = {rule: value for rule, value in bounds.items() if rule not in ("upper", "common")}
                for rule in bounds:
                    found_in[rule].add("full masks" if rule not in ("upper", "common") else _common_source(options))
                entry = {
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
                tags = [int(s > 0) for s in item.sizes]
            else:
                known = item.known or [None] * options.n_classes
                bounds, found = known_bounds(known, item.n_pixels, slice_common, item.estimates, result.volume_estimates,
                                             item.n_pixels * len(result.slices))
                for rule, where in found.items():
                    found_in[rule].update(where)
                if "tags" in bounds:
                    found_in["tags"].update(_tag_sources(options, known))
                for rule in ("upper", "common"):
                    if rule in bounds:
                        found_in[rule].add(_common_source(options))
                entry = {
                    "image": item.files["image"],
                    "weak": dict(item.files["weak"]),
                    "patient": case.patient,
                    "volume": case.volume,
                    "slice": item.index,
                    "spacing": item.spacing,
                }
                if all(k is not None for k in known):
                    entry["tag"] = [int(k) for k in known]
                entry["bounds"] = bounds
                tags = known
            entries[split].append(entry)
            for cls in range(options.n_classes):
                rows.append(
                    {
                        "patient": case.patient,
                        "volume": case.volume,
                        "slice": item.index,
                        "split": split,
                        "class": cls + 1,
                        "size_px": _cell(item.sizes, cls),
                        "size_mm2": "" if item.sizes is None else item.sizes[cls] * pixel_mm2,
                        "weak_px": item.weak_px[primary][cls] if primary in item.weak_px else 0,
                        "tag": "" if tags[cls] is None else int(tags[cls]),
                        "tags_lo": _bound(bounds, "tags", cls, 0),
                        "tags_hi": _bound(bounds, "tags", cls, 1),
                        "common_lo": _bound(bounds, "common", cls, 0),
                        "common_hi": _bound(bounds, "common", cls, 1),
                        "individual_lo": _bound(bounds, "individual", cls, 0),
                        "individual_hi": _bound(bounds, "individual", cls, 1),
                        "volume_size_px": _cell(result.volume_sizes, cls),
                        "upper_lo": _bound(bounds, "upper", cls, 0),
                        "upper_hi": _bound(bounds, "upper", cls, 1),
                    }
                )
    return entries, rows, sources


_NO_COMMON = [(0.0, 0.0)]


def _cell(values, cls):
    return "" if values is None else values[cls]


def _bound(bounds: dict, rule: str, cls: int, end: int):
    return bounds[rule][cls][end] if rule in bounds else ""


def _common_source(options) -> str:
    if options.common_values is not None:
        return "typed"
    if options.common_mm2 is not None:
        return "typed (mm2)"
    return "reference patients"


def _tag_sources(options, known) -> set[str]:
    found = set()
    if options.user is not None and options.user.tags_csv:
        found.add("tags file")
    if options.user is not None and options.user.paints:
        found.add("annotations")
    return found


def _provenance(options, sources: dict[str, set[str]], reference) -> dict:
    """Where every weak label and the training slices' bounds came from: dataset.json's short form.

    A rule no training slice has is left out (validation and test slices have full masks)."""
    weak = {}
    for strategy in options.weak:
        weak[strategy] = "generated" if strategy in options.generated else "user file"
    bounds = {rule: " + ".join(sorted(where)) for rule, where in sources.items() if where}
    return {"weak": weak, "bounds": bounds}


def _provenance_record(options, provenance: dict, reference) -> dict:
    """prep.json's long form: the short one plus the files and options behind it."""
    record = {"weak": {}, "bounds": dict(provenance["bounds"])}
    for strategy, source in provenance["weak"].items():
        if source == "generated":
            record["weak"][strategy] = {"from": "generated", "from_full_masks": True}
        else:
            user = options.user
            record["weak"][strategy] = {
                "from": "user file",
                "label_maps": user.label_pattern,
                "weak_values": user.values_text or "default: 0=none, other values = raw label values",
                "priority": list(user.priority),
                "markups": user.markups_pattern,
                "markups_class_from": user.markups_class_from if user.markups_pattern else None,
                "points": user.points_csv,
                "points_space": user.points_space,
                "point_radius_mm": user.point_radius_mm if (user.points_csv or user.markups_pattern) else None,
                "boxes": user.boxes_csv,
                "annotation_classes": [list(pair) for pair in user.vocab.names],
            }
    record["bounds_inputs"] = {
        "reference_patients": reference,
        "common_bounds_px": None if options.common_values is None else [list(v) for v in options.common_values],
        "common_bounds_mm2": None if options.common_mm2 is None else [list(v) for v in options.common_mm2],
        "tags": options.user.tags_csv if options.user else None,
        "size_estimates": options.user.estimates_csv if options.user else None,
    }
    return record


def _datalist(results, splits, entries, options, src: Path, provenance: dict) -> dict:
    labels = {"0": "background"}
    labels.update({str(i + 1): name for i, name in enumerate(options.class_names)})
    volumes = []
    for result in results:
        volume = {
            "volume": result.case.volume,
            "patient": result.case.patient,
            "split": splits[result.case.patient],
            "image": result.files["image"],
            "label": result.files.get("label"),
            "raw_image": _relative(result.case.image, src),
            "raw_label": None if result.case.label is None else _relative(result.case.label, src),
            "slice_axis": options.slice_axis,
            "n_slices": len(result.slices),
            "original_shape": result.original_shape,
            "original_spacing": result.original_spacing,
            "spacing": result.spacing,
            "plan": result.plan,
            "size_px": result.volume_sizes,
        }
        if result.case.label is None:
            for key in ("label", "raw_label", "size_px"):
                del volume[key]
        if result.raw_weak is not None:
            volume["raw_weak"] = _relative(Path(result.raw_weak), src)
        volumes.append(volume)
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
        "provenance": provenance,
    }


def _summary(results, splits, common, reference, options) -> dict:
    fraction = {}
    foreground_fraction = {}
    for strategy in options.weak:
        # Over the slices that have the strategy (generated ones need a full mask).
        total_pixels = sum(s.n_pixels for r in results for s in r.slices if strategy in s.annotated_px)
        annotated = sum(s.annotated_px[strategy] for r in results for s in r.slices if strategy in s.annotated_px)
        foreground = sum(sum(s.weak_px[strategy]) for r in results for s in r.slices if strategy in s.weak_px)
        fraction[strategy] = annotated / total_pixels if total_pixels else 0.0
        foreground_fraction[strategy] = foreground / total_pixels if total_pixels else 0.0
    counts = {"patients": {}, "volumes": {}, "slices": {}}
    for split in SPLITS:
        in_split = [r for r in results if splits[r.case.patient] == split]
        counts["patients"][split] = sum(1 for s in splits.values() if s == split)
        counts["volumes"][split] = len(in_split)
        counts["slices"][split] = sum(len(r.slices) for r in in_split)
    summary = {
        "counts": counts,
        "classes": {
            str(i + 1): {"name": name, "raw_values": list(options.class_map[i])} for i, name in enumerate(options.class_names)
        },
        "reference_patient": reference,
        "common_bounds": {str(i + 1): list(pair) for i, pair in enumerate(common or [])},
        "annotated_fraction": fraction,
        "foreground_annotated_fraction": foreground_fraction,
    }
    if options.common_mm2 is not None:
        summary["common_bounds_mm2"] = {str(i + 1): list(pair) for i, pair in enumerate(options.common_mm2)}
    if options.user is not None:
        counts["full_masks"] = {
            "volumes": sum(1 for r in results if r.case.label is not None),
            "patients": len({r.case.patient for r in results if r.case.label is not None}),
        }
        summary["user_annotations"] = _user_summary(results, options)
    return summary


def _user_summary(results, options) -> dict:
    """Per class: annotated pixels and strokes on the raw grid, and how many kept their class when prepared."""
    names = ["background", *options.class_names]
    per_class = {}
    for cls, name in enumerate(names):
        totals = {"pixels": 0, "pixels_kept": 0, "strokes": 0, "strokes_kept": 0}
        for result in results:
            found = result.user_stats.get("classes", {}).get(cls)
            if found:
                for key in totals:
                    totals[key] += found[key]
        per_class[str(cls)] = {"name": name, **totals}
    return {
        "strategy": options.user.name if options.user.paints else None,
        "annotated_volumes": sum(1 for r in results if r.user_stats),
        "classes": per_class,
        "conflict_pixels": sum(r.user_stats.get("conflict_pixels", 0) for r in results),
        "points": sum(r.user_stats.get("points", 0) for r in results),
        "point_pixels": sum(r.user_stats.get("point_pixels", 0) for r in results),
    }


def print_summary(summary: dict, out: Path) -> None:
    """Tell the user what was written: counts, common bounds and annotated fractions."""
    counts = summary["counts"]
    parts = ", ".join(
        f"{split} {counts['patients'][split]} patients / {counts['slices'][split]} slices" for split in SPLITS
    )
    print(f"wrote {out}: {parts}")
    if "full_masks" in counts:
        print(f"full masks: {counts['full_masks']['volumes']} volumes of {counts['full_masks']['patients']} patients "
              "(the other volumes are weak-only training volumes)")
    source = f"reference patient {summary['reference_patient']}" if summary["reference_patient"] else "given values"
    for cls, (low, high) in summary["common_bounds"].items():
        name = summary["classes"][cls]["name"]
        print(f"common bounds for class {cls} ({name}) from {source}: [{low:.1f}, {high:.1f}] px")
    for cls, (low, high) in summary.get("common_bounds_mm2", {}).items():
        name = summary["classes"][cls]["name"]
        print(f"common bounds for class {cls} ({name}) typed: [{low:.1f}, {high:.1f}] mm2 (converted per slice)")
    user = summary.get("user_annotations")
    if user and user["strategy"]:
        print(f"user annotations '{user['strategy']}' on {user['annotated_volumes']} volumes, kept on the prepared grid:")
        for cls, found in user["classes"].items():
            if found["pixels"]:
                print(f"  class {cls} ({found['name']}): {found['pixels_kept']} of {found['pixels']} annotated pixels, "
                      f"{found['strokes_kept']} of {found['strokes']} strokes")
        if user["conflict_pixels"]:
            print(f"  {user['conflict_pixels']} prepared pixels covered by two classes took the one with priority")
        if user["points"]:
            print(f"  {user['points']} points painted as discs ({user['point_pixels']} pixels)")
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
