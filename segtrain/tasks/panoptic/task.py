"""What the commands ask of panoptic segmentation without a network: its rules and keys, the panoptic scan,
the PQ tables and the predict loop (panoptic PNGs, their json and overlays)."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from segtrain.errors import SegtrainError
from segtrain.schema import MASK_THRESHOLD, Key, number
from segtrain.tasks.panoptic.files import PREDICTIONS_JSON, categories_of
from segtrain.tasks.spec import Task


def unit(value) -> bool:
    return number(value) and 0 <= value <= 1


class PanopticTask(Task):
    name = "panoptic"
    trains_on = "model=panoptic_fpn and data=coco_panoptic or cityscapes_panoptic"
    prediction_summary_files = [PREDICTIONS_JSON]
    keys = (
        Key(
            "inference.score_threshold",
            "detections scoring below it are left out of the panoptic merge",
            unit,
            "a score in [0, 1]",
        ),
        MASK_THRESHOLD,
        Key(
            "inference.overlap_threshold",
            "a thing mask more than this share of which is already taken is dropped",
            unit,
            "a fraction in [0, 1]",
        ),
        Key(
            "inference.stuff_area",
            "stuff regions of fewer pixels are left unlabelled",
            lambda v: number(v) and v >= 0,
            "a number of pixels >= 0",
        ),
    )

    @staticmethod
    def module_class() -> type:
        from segtrain.tasks.panoptic.module import PanopticSegmentation

        return PanopticSegmentation

    @classmethod
    def validate(cls, cfg: DictConfig) -> None:
        super().validate(cfg)
        if cfg.get("loss"):
            raise SegtrainError(
                f"task=panoptic takes no loss group (loss={OmegaConf.select(cfg, 'loss._target_')}): "
                "Panoptic FPN weighs its own detector and semantic losses (model.semantic_weight). Drop the "
                "loss override"
            )
        things = list(OmegaConf.select(cfg, "data.things") or [])
        if not things or any(name not in cfg.data.classes for name in things):
            raise SegtrainError(
                f"data.things={things} must name the data.classes that have instances (the rest is stuff)"
            )

    @staticmethod
    def check_data(cfg: DictConfig):
        """check-data: the panoptic json and PNGs of ``data.split`` (``segtrain.tasks.panoptic.checks``)."""
        from segtrain.tasks.panoptic.checks import scan_panoptic

        return scan_panoptic(cfg)

    @staticmethod
    def bench_batch(batch: dict) -> dict:
        return {key: batch[key] for key in ("image", "semantic", "boxes", "labels", "masks", "meta")}

    @staticmethod
    def score_table(result: dict, title: str) -> str:
        from segtrain.metrics import percent

        lines = [title] if title else []
        lines.append(f"{'class':<24} {'PQ':>6} {'SQ':>6} {'RQ':>6}")
        for name, scores in result["per_class"].items():
            lines.append(
                f"{name[:24]:<24} " + " ".join(f"{percent(scores[key]):>6}" for key in ("PQ", "SQ", "RQ"))
            )
        for label, suffix in (("all", ""), ("things", "_th"), ("stuff", "_st")):
            cells = " ".join(f"{percent(result[f'{key}{suffix}']):>6}" for key in ("PQ", "SQ", "RQ"))
            lines.append(f"{label:<24} {cells}  ({result[f'n{suffix}']} classes)")
        return "\n".join(lines)

    @staticmethod
    def describe_scoring(cfg: DictConfig) -> str:
        inference = cfg.inference
        return (
            "PQ, SQ and RQ as panopticapi computes them, of the merge of detections scoring above "
            f"inference.score_threshold={inference.score_threshold} (masks cut at "
            f"{inference.mask_threshold}, dropped above {inference.overlap_threshold} overlap) and stuff of "
            f"at least inference.stuff_area={inference.stuff_area} pixels, at each image's own size"
        )

    @staticmethod
    def inference_settings(cfg: DictConfig) -> dict:
        return OmegaConf.to_container(cfg.inference, resolve=True)

    @staticmethod
    def describe_predictions(cfg: DictConfig) -> str:
        return f"as panoptic PNGs and {PREDICTIONS_JSON} (COCO panoptic format) and overlays"

    @staticmethod
    def count_scored(result: dict) -> str:
        return f"{result['n']} classes present"

    @staticmethod
    def write_report(result: dict, directory: Path, title: str) -> Path:
        from segtrain.plots import per_class_chart

        return per_class_chart(result, directory / "per_class_pq.png", title=title, score="PQ", mean="PQ")

    @staticmethod
    def prediction_files(name: str) -> list[str]:
        return [f"panoptic/{name}.png", f"overlays/{name}.jpg"]

    @staticmethod
    def predict_images(run, meta: dict, inference: dict, transforms, inputs, names, out_dir: Path) -> str:
        """Panoptic PNGs and their json (COCO panoptic format), and overlays; ``run`` is a
        ``PanopticExport`` or its export, whose semantic logits and detections are merged here."""
        from segtrain.tasks.panoptic.module import predict_panoptic

        annotations = predict_panoptic(run, meta, inference, transforms, inputs, names, out_dir)
        categories = categories_of(meta)
        (out_dir / PREDICTIONS_JSON).write_text(
            json.dumps({"annotations": annotations, "categories": categories})
        )
        return (
            f"wrote panoptic PNGs of {len(inputs)} images to {out_dir / 'panoptic'} with their segments in "
            f"{out_dir / PREDICTIONS_JSON}, and overlays to {out_dir / 'overlays'}"
        )
