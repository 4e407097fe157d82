"""What the commands ask of semantic segmentation without a network: its rules, scan, tables and the
predict loop (palette PNG masks and overlays)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from segtrain.errors import SegtrainError
from segtrain.schema import (
    MEDIAN_FREQUENCY,
    MIN_WINDOW,
    SCALE_RANGE,
    Key,
    boolean,
    integer,
    listlike,
    number,
    one_of,
    size,
)
from segtrain.tasks.spec import Task, pinned, score_resolution

log = logging.getLogger(__name__)


class SemanticTask(Task):
    name = "semantic"
    trains_on = "a semantic model (model=unet, deeplabv3plus, ...) and data (data=voc, camvid, ...)"
    logits_per_class = True
    keys = (
        Key(
            "inference.mode",
            "whole | slide (windows, for images larger than the training crop)",
            one_of("whole", "slide"),
            "'whole' or 'slide'",
        ),
        Key(
            "inference.crop_size",
            "slide: window [H, W] (default: data.crop_size)",
            size(MIN_WINDOW),
            f"null or [H, W] (or [D, H, W]) of integers >= {MIN_WINDOW}",
        ),
        Key(
            "inference.stride",
            "slide: step between windows (default: half the window)",
            size(1),
            "null (half the crop) or [H, W] (or [D, H, W]) of integers >= 1",
        ),
        Key(
            "inference.gaussian",
            "slide: blend windows with a Gaussian weight",
            boolean,
            "true or false",
        ),
        Key("inference.flip", "true: average with the horizontally flipped image", boolean, "true or false"),
        Key(
            "inference.scales",
            "test-time scales, e.g. [0.75,1.0,1.25]",
            lambda v: (
                listlike(v)
                and len(v) > 0
                and all(number(s) and SCALE_RANGE[0] <= s <= SCALE_RANGE[1] for s in v)
            ),
            f"a non-empty list of numbers in [{SCALE_RANGE[0]}, {SCALE_RANGE[1]}]",
        ),
        Key("inference.crf", "true: refine with DeepLab's dense CRF (RGB images)", boolean, "true or false"),
        Key(
            "inference.score_resolution",
            "original (each image's own size) | transformed (data.val_transforms' size)",
            one_of("original", "transformed"),
            "'original' (each image's own size) or 'transformed' (the size data.val_transforms give)",
        ),
        Key("inference.crf_params.iterations", "", lambda v: integer(v) and v >= 1, "an integer >= 1"),
        *(
            Key(f"inference.crf_params.{name}", "", lambda v: number(v) and v >= 0, "a number >= 0")
            for name in ("w1", "w2")
        ),
        *(
            Key(f"inference.crf_params.{name}", "", lambda v: number(v) and v > 0, "a number > 0")
            for name in ("theta_alpha", "theta_beta", "theta_gamma")
        ),
    )

    @staticmethod
    def module_class() -> type:
        from segtrain.tasks.semantic.module import SemanticSegmentation

        return SemanticSegmentation

    @classmethod
    def validate(cls, cfg: DictConfig) -> None:
        inference = cfg.inference
        if inference.get("crf") and cfg.data.in_channels != 3:
            raise SegtrainError(
                f"inference.crf=true needs RGB images; data.in_channels={cfg.data.in_channels}"
            )
        crop, stride = inference.get("crop_size"), inference.get("stride")
        if inference.mode == "slide" and not crop:
            raise SegtrainError(
                "inference.mode=slide needs inference.crop_size=[H,W] (and optionally inference.stride)"
            )
        if crop and stride and (len(stride) != len(crop) or any(s > c for s, c in zip(stride, crop))):
            raise SegtrainError(
                f"inference.stride={list(stride)} must have one step per dimension of "
                f"inference.crop_size={list(crop)}, "
                "each no larger than the crop (larger steps would skip pixels)"
            )
        if cfg.get("adversarial"):
            cls.validate_adversarial(cfg)

    @staticmethod
    def validate_adversarial(cfg: DictConfig) -> None:
        """Adversarial training steps its two optimizers itself (Lightning's manual optimization), so the
        Trainer's own clipping, loss scaling and accumulation cannot apply."""
        if OmegaConf.select(cfg, "trainer.gradient_clip_val"):
            raise SegtrainError(
                "trainer.gradient_clip_val is not applied with adversarial training (both networks step in "
                "the task's own training step); set trainer.gradient_clip_val=null"
            )
        if str(OmegaConf.select(cfg, "trainer.precision")).startswith("16"):
            raise SegtrainError(
                f"trainer.precision={OmegaConf.select(cfg, 'trainer.precision')} scales the loss, which the "
                "adversarial discriminator's optimizer does not undo; use trainer.precision=bf16-mixed or "
                "32-true"
            )
        if (OmegaConf.select(cfg, "trainer.accumulate_grad_batches") or 1) > 1:
            raise SegtrainError(
                "trainer.accumulate_grad_batches>1 is not applied with adversarial training (both networks "
                "step every batch); set it to 1 and raise data.batch_size instead"
            )

    @classmethod
    def derive(cls, cfg: DictConfig) -> dict:
        """``loss.class_weights=median_frequency``: the numbers, computed from the train split's masks."""
        if OmegaConf.select(cfg, "loss.class_weights") != MEDIAN_FREQUENCY:
            return {}
        from segtrain.data.statistics import median_frequency_weights, scan_split

        datamodule, report = scan_split(cfg.data, cfg.data.train_split)
        weights = median_frequency_weights(report, datamodule.num_classes)
        log.info("median-frequency class weights from %d train masks", report.pairs)
        return {"loss.class_weights": weights}

    @staticmethod
    def check_data(cfg: DictConfig):
        """``segtrain check-data``'s scan of ``data.split``: pairs, label encoding, class shares."""
        from segtrain.data.statistics import data_report, scan_split

        datamodule, report = scan_split(cfg.data, cfg.data.split, cfg.check.workers)
        return data_report(report, datamodule.classes, datamodule.ignore_index, datamodule.name)

    @staticmethod
    def bench_batch(batch: dict) -> dict:
        return pinned(batch, ("image", "mask"))

    @staticmethod
    def score_table(result: dict, title: str) -> str:
        from segtrain.metrics import format_table

        return format_table(result, title=title)

    @staticmethod
    def describe_scoring(cfg: DictConfig) -> str:
        """The inference settings and resolution a table was made with, for titles and messages."""
        return f"{describe_inference(cfg)}, scored at {describe_resolution(cfg)}"

    @staticmethod
    def describe_predictions(cfg: DictConfig) -> str:
        return f"in the dataset's own encoding, at {describe_resolution(cfg)}"

    @staticmethod
    def count_scored(result: dict) -> str:
        return f"{result['pixels']} labelled pixels"

    @staticmethod
    def write_report(result: dict, directory: Path, title: str) -> Path:
        """The per-class IoU chart beside metrics.json."""
        from segtrain.plots import per_class_chart

        return per_class_chart(result, directory / "per_class_iou.png", title=title)

    @staticmethod
    def prediction_files(name: str) -> list[str]:
        return [f"{name}.png", f"overlays/{name}.jpg"]

    @staticmethod
    def predict_images(run, meta: dict, inference: dict, transforms, inputs, names, out_dir: Path) -> str:
        """Palette PNG masks and overlays, at each image's own size unless
        ``inference.score_resolution=transformed``; ``run`` takes normalised images."""
        import numpy as np
        import torch
        from PIL import Image

        from segtrain.data.description import DatasetDescription
        from segtrain.data.io import read_image
        from segtrain.data.transforms import compose, transform_item
        from segtrain.inference import class_ids, predict_probs, to_original_size
        from segtrain.visualize import blend, palette_image

        description = DatasetDescription.from_metadata(meta)
        original_size = score_resolution(inference) == "original"
        pipeline = compose(transforms, track_extent=original_size)
        for path in inputs:
            original = read_image(path, description.in_channels)
            image, _, region = transform_item(pipeline, original, None, original_size)
            rgb = torch.from_numpy(image).permute(2, 0, 1)[None]
            probs = predict_probs(run, description.normalize(rgb), image=rgb, **inference)
            shown = original if original_size else image
            pred = class_ids(to_original_size(probs, [{"size": shown.shape[:2], "region": region}]))[0]
            pred = pred.numpy().astype(np.uint8)
            palette_image(pred, description.palette).save(out_dir / f"{names[path]}.png")
            Image.fromarray(blend(shown, pred, description.palette)).save(
                out_dir / "overlays" / f"{names[path]}.jpg", quality=90
            )
        return f"wrote {len(inputs)} masks to {out_dir} and {len(inputs)} overlays to {out_dir / 'overlays'}"


def describe_resolution(cfg: DictConfig) -> str:
    """The resolution predictions are scored and written at, for titles and messages."""
    if score_resolution(cfg.inference) == "original":
        return "each image's own resolution"
    return "the size data.val_transforms give (inference.score_resolution=transformed)"


def describe_inference(cfg: DictConfig) -> str:
    """The inference settings a table was made with: mode, windows, flip, scales, CRF."""
    inference = cfg.inference
    parts = [str(inference.mode)]
    if inference.mode == "slide":
        stride = list(inference.stride) if inference.get("stride") else "half"
        parts[0] += f" (windows {list(inference.crop_size)}, stride {stride})"
    parts.append(f"flip {'on' if inference.flip else 'off'}")
    parts.append(f"scales {list(inference.scales)}")
    parts.append(f"CRF {'on' if inference.get('crf') else 'off'}")
    return "inference " + ", ".join(parts)
