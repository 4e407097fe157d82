"""``segtrain check-data`` for panoptic data: the json against its PNGs and images.

Errors (each with its fix): a missing or unreadable PNG or image, a PNG whose size is not its image's, ids
in a PNG that its segments_info does not list, segments listed twice or absent from the PNG, areas that are
not the PNG's, unknown categories. Warnings: thing classes without a single instance in the split. The table
gives each class's segments and share of the pixels, and the unlabelled share.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
from omegaconf import DictConfig

from segtrain.data.checks import DataReport, Finding
from segtrain.data.datamodule import build_datamodule
from segtrain.data.datasets.coco_panoptic import PANOPTIC_PREPARATION, VOID
from segtrain.data.io import read_image
from segtrain.errors import SegtrainError

#: Errors of one kind listed before "and N more".
EXAMPLES = 3


def scan_panoptic(cfg: DictConfig) -> DataReport:
    started = time.perf_counter()
    datamodule = build_datamodule(cfg.data)
    dataset = datamodule.reader(cfg.data.split)
    classes, ids = datamodule.classes, datamodule.category_ids
    known = set(ids)
    problems: dict[str, list[str]] = {}
    segments, pixels, void, total = Counter(), Counter(), 0, 0
    for index in range(len(dataset)):
        name = dataset.annotations[index]["file_name"]
        try:
            panoptic, listed = dataset.segments(index)
            image = read_image(dataset.image_path(index), datamodule.in_channels)
        except SegtrainError as err:
            problems.setdefault("unreadable", []).append(str(err))
            continue
        if panoptic.shape != image.shape[:2]:
            problems.setdefault("size", []).append(f"{name} ({panoptic.shape[1]}x{panoptic.shape[0]})")
        present, counts = np.unique(panoptic, return_counts=True)
        area = dict(zip(present.tolist(), counts.tolist()))
        listed_ids = [segment["id"] for segment in listed]
        unlisted = sorted(set(area) - set(listed_ids) - {VOID})
        if unlisted:
            problems.setdefault("unlisted", []).append(f"{name} (ids {unlisted[:5]})")
        if len(set(listed_ids)) != len(listed_ids):
            problems.setdefault("twice", []).append(name)
        for segment in listed:
            category = segment.get("category_id")
            if category not in known:
                problems.setdefault("category", []).append(f"{name} (category {category})")
                continue
            if segment["id"] not in area:
                problems.setdefault("absent", []).append(f"{name} (segment {segment['id']})")
                continue
            if "area" in segment and segment["area"] != area[segment["id"]]:
                pixels_in_png = area[segment["id"]]
                problems.setdefault("area", []).append(
                    f"{name} (segment {segment['id']}: {segment['area']} in the json, {pixels_in_png} in the "
                    "PNG)"
                )
            label = classes[ids.index(category)]
            segments[label] += 1
            pixels[label] += area[segment["id"]]
        void += area.get(VOID, 0)
        total += panoptic.size
    errors = [Finding(*_finding(kind, cases)) for kind, cases in problems.items()]
    without = [name for name in datamodule.description.things if not segments[name]]
    warnings = [f"thing classes without an instance in split {cfg.data.split}: {without}"] if without else []
    table = [f"{'class':<24} {'kind':<6} {'segments':>9} {'pixels %':>9}"]
    for name in classes:
        kind = "thing" if name in datamodule.description.things else "stuff"
        table.append(
            f"{name[:24]:<24} {kind:<6} {segments[name]:>9} {100 * pixels[name] / max(total, 1):>9.3f}"
        )
    table.append(f"{'(unlabelled)':<24} {'':<6} {'':>9} {100 * void / max(total, 1):>9.3f}")
    header = (
        f"data={cfg.data.get('name', '?')} split={cfg.data.split}: {dataset.annotation_path}: {len(dataset)} "
        f"images, {sum(segments.values())} segments scanned in {time.perf_counter() - started:.2f} s"
    )
    return DataReport(header, table, errors, warnings, scan=segments)


def _finding(kind: str, cases: list[str]) -> tuple[str, str]:
    shown = "; ".join(cases[:EXAMPLES]) + (
        f" and {len(cases) - EXAMPLES} more" if len(cases) > EXAMPLES else ""
    )
    return {
        "unreadable": (
            f"{len(cases)} images or PNGs cannot be read: {shown}.",
            f"restore them ({PANOPTIC_PREPARATION})",
        ),
        "size": (f"{len(cases)} PNGs are not the size of their images: {shown}.", "regenerate those PNGs"),
        "unlisted": (
            f"{len(cases)} PNGs hold segment ids their segments_info does not list: {shown}.",
            "regenerate the json and PNGs together",
        ),
        "twice": (f"{len(cases)} images list a segment id twice: {shown}.", "regenerate the json"),
        "absent": (
            f"{len(cases)} listed segments are not in their PNG: {shown}.",
            "regenerate the json and PNGs together",
        ),
        "area": (f"{len(cases)} segments' areas are not their PNG's: {shown}.", "regenerate the json"),
        "category": (
            f"{len(cases)} segments have categories data.category_ids does not list: {shown}.",
            "list the json's categories in data.classes and data.category_ids",
        ),
    }[kind]
