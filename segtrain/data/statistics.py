"""Dataset statistics: every pair of a split decoded and encoded as training reads it, counted per value.

Pairs are decoded in parallel worker processes (readability is only known after decoding), each mask
encoded as training will encode it, and per-value pixel counts summed into a ``Report``: counts,
unpaired and unreadable files, size mismatches, colour masks, the class histogram and the encoding slips
of ``segtrain.data.checks``, each error with the override that fixes it. ``segtrain check-data`` prints
it; training derives median-frequency class weights from it.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from omegaconf import DictConfig

from segtrain.data.checks import (
    DataReport,
    Finding,
    diagnose_binary,
    diagnose_values,
    format_size,
    out_of_range,
)
from segtrain.data.datamodule import build_datamodule
from segtrain.data.datasets.base import SegmentationDataset
from segtrain.data.encoding import rgb_code
from segtrain.data.io import MaskModeError, UnreadableFileError
from segtrain.errors import SegtrainError

MOSTLY_IGNORED = 0.9
#: The dataset the forked scan workers read; set before the pool forks.
_DATASET: SegmentationDataset | None = None


def _scan(index: int) -> dict:
    dataset = _DATASET
    try:
        image, raw, meta = dataset.read_raw(index)
    except UnreadableFileError as err:
        return {"index": index, "unreadable": str(err)}
    except MaskModeError as err:
        mode, colors = _mask_colors(dataset, index)
        return {"index": index, "mode": mode, "message": str(err), "colors": colors}
    except SegtrainError as err:
        return {"index": index, "unreadable": str(err)}
    mask = dataset.encoding(raw)
    result = {
        "index": index,
        "name": meta.get("mask_path", meta["name"]),
        "counts": np.bincount(mask.ravel(), minlength=256),
    }
    if dataset.encoding.uses_colors:  # the colours data.color_map does not know, for the report
        codes, counts = np.unique(rgb_code(raw[mask == dataset.ignore_index]), return_counts=True)
        result["unmapped"] = dict(zip(codes.tolist(), counts.tolist()))
    if image.shape[: mask.ndim] != mask.shape:
        result["mismatch"] = (tuple(image.shape[: mask.ndim]), tuple(mask.shape))
    return result


def _mask_colors(dataset: SegmentationDataset, index: int) -> tuple[str, dict[int, int]]:
    """The PIL mode of a colour or palette mask and the pixels of each colour it shows."""
    from PIL import Image

    with Image.open(dataset.samples[index][1]) as img:
        codes, counts = np.unique(rgb_code(np.asarray(img.convert("RGB"))), return_counts=True)
    return img.mode, dict(zip(codes.tolist(), counts.tolist()))


def _rgb(code: int) -> list[int]:
    return [(code >> 16) & 255, (code >> 8) & 255, code & 255]


def _color_shares(pixels: dict[int, int], limit: int = 12) -> str:
    total = max(sum(pixels.values()), 1)
    ranked = sorted(pixels.items(), key=lambda item: -item[1])
    more = f" (+{len(ranked) - limit} more)" if len(ranked) > limit else ""
    return ", ".join(f"{_rgb(code)} {100 * count / total:.1f}%" for code, count in ranked[:limit]) + more


def colour_map_fix(pixels: dict[int, int], classes: list[str], palette: list) -> str:
    """The ``data.color_map`` override for the colours found: ``palette`` when every colour is one of
    data.palette, else the colours found in class order where they match data.palette and by pixel share
    after that, with what is left to check by hand."""
    palette_codes = rgb_code(np.array(palette, np.int32)).tolist() if palette else []
    if pixels and set(pixels) <= set(palette_codes[: len(classes)]):
        return "data.color_map=palette (every colour found is one of data.palette, in class order)"
    by_share = [code for code, _ in sorted(pixels.items(), key=lambda item: -item[1])]
    ordered = [code for code in palette_codes[: len(classes)] if code in pixels]
    ordered += [code for code in by_share if code not in ordered]
    proposal = "[" + ",".join(str(_rgb(code)).replace(" ", "") for code in ordered[: len(classes)]) + "]"
    notes = []
    if len(ordered) != len(classes):
        notes.append(
            f"{len(ordered)} colours were found for {len(classes)} classes in data.classes; "
            "colours left out of the map are ignored"
        )
    notes.append(
        f"check that colour i is the colour of class i of data.classes ({', '.join(classes[:6])}"
        + (", ..." if len(classes) > 6 else "")
        + ")"
    )
    return f"data.color_map={proposal}; " + "; ".join(notes)


@dataclass
class Report:
    split: str
    pairs: int
    seconds: float
    workers: int
    counts: np.ndarray
    images_with: np.ndarray
    #: Per value: the pixels of all images in which the value occurs (median-frequency balancing).
    pixels_with: np.ndarray
    errors: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.pairs / max(self.seconds, 1e-9)


def _examples(paths: list[str], limit: int = 3) -> str:
    more = f" (+{len(paths) - limit} more)" if len(paths) > limit else ""
    return ", ".join(str(p) for p in paths[:limit]) + more


def scan(dataset: SegmentationDataset, classes: list[str], palette: list, workers: int) -> Report:
    global _DATASET
    _DATASET = dataset
    start = time.perf_counter()
    indices = range(len(dataset))
    if workers > 1 and len(dataset) > workers:
        chunk = max(1, len(dataset) // (workers * 8))
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            results = list(pool.map(_scan, indices, chunksize=chunk))
    else:
        results = [_scan(i) for i in indices]
    seconds = time.perf_counter() - start
    _DATASET = None

    num_classes, ignore_index = len(classes), dataset.ignore_index
    counts = np.zeros(256, np.int64)
    images_with = np.zeros(256, np.int64)
    pixels_with = np.zeros(256, np.int64)
    unreadable, missing, modes, mismatched = [], [], [], []
    colors: dict[int, int] = {}
    unmapped: dict[int, int] = {}
    files_with_value: dict[int, list[str]] = {}
    for result in results:
        if "unreadable" in result:
            (missing if " is missing" in result["unreadable"] else unreadable).append(result["unreadable"])
            continue
        if "mode" in result:
            modes.append(result)
            for code, count in result["colors"].items():
                colors[code] = colors.get(code, 0) + count
            continue
        for code, count in result.get("unmapped", {}).items():
            unmapped[code] = unmapped.get(code, 0) + count
        if "mismatch" in result:
            image_size, mask_size = result["mismatch"]
            mismatched.append(
                f"{result['name']} (mask {format_size(mask_size)}, image {format_size(image_size)})"
            )
        present = result["counts"] > 0
        counts += result["counts"]
        images_with += present
        pixels_with += present * int(result["counts"].sum())
        for value in np.flatnonzero(present[num_classes:]) + num_classes:
            files_with_value.setdefault(int(value), []).append(result["name"])

    report = Report(dataset.split, len(dataset), seconds, workers, counts, images_with, pixels_with)
    if dataset.unpaired:
        report.errors.append(
            Finding(
                f"{len(dataset.unpaired)} files have no partner image or mask: "
                f"{_examples(dataset.unpaired)}.",
                "add the missing files, or remove the strays (they are skipped in training)",
            )
        )
    if missing:
        report.errors.append(
            Finding(
                f"{len(missing)} files are missing: {_examples(missing)}",
                "restore them, or remove their names from the split",
            )
        )
    if unreadable:
        report.errors.append(
            Finding(
                f"{len(unreadable)} files cannot be read: {_examples(unreadable)}",
                "re-export them, or remove them from the split",
            )
        )
    if mismatched:
        report.errors.append(
            Finding(
                f"{len(mismatched)} masks differ in size from their images: {_examples(mismatched)}.",
                "resize those masks to their images with nearest-neighbour interpolation, or remove them",
            )
        )
    if modes:
        fix = colour_map_fix(colors, classes, palette)
        if all(result["mode"] == "P" for result in modes):
            fix = (
                "data.dataset.palette_masks=true if the palette indices are the class ids (as VOC's are); "
                f"else {fix}"
            )
        messages = [result["message"] for result in modes]
        report.errors.append(
            Finding(
                f"{len(modes)} masks are colour or palette images: {_examples(messages, 1)} "
                f"Colours found (share of their pixels): {_color_shares(colors)}.",
                fix,
            )
        )
    labelled = int(counts.sum())
    ignored = int(counts[ignore_index]) / max(labelled, 1)
    if labelled and ignored >= MOSTLY_IGNORED:
        problem = (
            f"{100 * ignored:.1f}% of the pixels of split '{dataset.split}' are ignore_index={ignore_index} "
            "once encoded: training would learn from almost nothing (and report a nan loss)."
        )
        if dataset.encoding.uses_colors:
            problem += f" Colours that data.color_map does not list: {_color_shares(unmapped)}."
            fix = colour_map_fix(unmapped, classes, palette)
        else:
            fix = (
                "check data.label_map / data.reduce_zero_label / data.ignore_index against the masks' values"
            )
        report.errors.append(Finding(problem, fix))
    identity = dataset.encoding.identity
    present = np.flatnonzero(counts).tolist()
    finding = diagnose_values(present, num_classes, ignore_index, identity)
    if finding:
        bad = out_of_range(present, num_classes, ignore_index)
        files = sorted({f for v in bad for f in files_with_value.get(v, [])})
        report.errors.append(
            Finding(f"{len(files)} masks: {finding.problem} e.g. {_examples(files)}.", finding.fix)
        )
    finding = diagnose_binary(present, num_classes, ignore_index, identity)
    if finding:
        report.errors.append(finding)
    absent = [classes[i] for i in range(num_classes) if counts[i] == 0]
    if absent and not report.errors:
        report.warnings.append(f"classes never present in split '{dataset.split}': {', '.join(absent)}")
    return report


def median_frequency_weights(report: Report, num_classes: int) -> list[float]:
    """Eigen and Fergus (ICCV 2015), as SegNet trains on CamVid: weight_c = median(f) / f_c, with
    f_c the pixels of class c over the pixels of the images where c occurs. Absent classes get 0."""
    present = report.pixels_with[:num_classes] > 0
    freq = np.where(
        present, report.counts[:num_classes] / np.maximum(report.pixels_with[:num_classes], 1), 0.0
    )
    median = float(np.median(freq[present])) if present.any() else 1.0
    return [round(float(median / f), 4) if f > 0 else 0.0 for f in freq]


def scan_split(data_cfg: DictConfig, split: str, workers: int | None = None):
    """(datamodule, report) for one split, read as training reads it but without augmentation."""
    datamodule = build_datamodule(data_cfg)
    dataset = datamodule.reader(split)
    return datamodule, scan(dataset, datamodule.classes, datamodule.palette, workers or os.cpu_count() or 1)


def data_report(report: Report, classes: list[str], ignore_index: int, name: str) -> DataReport:
    """check-data's report of a semantic split: each class's share of the pixels and of the images."""
    total = max(int(report.counts.sum()), 1)
    table = [f"{'id':>4}  {'class':<24} {'pixels %':>9} {'images':>7}"]
    for index, label in [*enumerate(classes), (ignore_index, "(ignored)")]:
        share = 100 * report.counts[index] / total
        table.append(f"{index:>4}  {label[:24]:<24} {share:>9.3f} {report.images_with[index]:>7}")
    header = (
        f"data={name} split={report.split}: {report.pairs} image/mask pairs scanned in {report.seconds:.2f} "
        f"s ({report.images_per_second:.1f} images/s, {report.workers} workers)"
    )
    return DataReport(header, table, report.errors, report.warnings, scan=report)
