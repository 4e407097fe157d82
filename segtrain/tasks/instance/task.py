"""What the commands ask of instance segmentation without a network: its rules, the COCO json scan, the AP
tables and the predict loop (COCO results json and instance overlays)."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from segtrain.errors import SegtrainError
from segtrain.schema import MASK_THRESHOLD, Key, number
from segtrain.tasks.spec import Task


class InstanceTask(Task):
    name = "instance"
    trains_on = "model=mask_rcnn, mask_rcnn_v2, panet or masklab and data=coco_instances or instances_folder"
    counts_background = True
    #: COCO results, and which image each image_id is.
    prediction_summary_files = ["detections.json", "images.json"]
    # Scores and mask probabilities are in [0, 1] and kept when above the threshold: 1 keeps nothing, and
    # a mask cut at 0 or below is its whole box.
    keys = (
        Key(
            "inference.score_threshold",
            "predict's overlays draw the detections scoring above it",
            lambda v: number(v) and 0 <= v < 1,
            "a score in [0, 1): detections scoring above it are drawn",
        ),
        MASK_THRESHOLD,
    )

    @staticmethod
    def module_class() -> type:
        from segtrain.tasks.instance.module import InstanceSegmentation

        return InstanceSegmentation

    @classmethod
    def validate(cls, cfg: DictConfig) -> None:
        super().validate(cfg)
        if cfg.get("loss"):
            raise SegtrainError(
                f"task=instance takes no loss group (loss={OmegaConf.select(cfg, 'loss._target_')}): the "
                "detectors compute their own RPN, box and mask losses. Drop the loss override"
            )

    @staticmethod
    def check_data(cfg: DictConfig):
        """``segtrain check-data``'s scan of ``data.split``'s json and images."""
        from segtrain.data.instance_checks import data_report, scan_instances

        data = cfg.data
        root = Path(str(data.root))
        report = scan_instances(
            root / data.annotation_file.format(split=data.split),
            root / data.image_dir.format(split=data.split),
        )
        return data_report(report, data.get("name", "?"), data.split)

    @staticmethod
    def bench_batch(batch: dict) -> dict:
        return {key: batch[key] for key in ("image", "boxes", "labels", "masks", "meta")}

    @staticmethod
    def score_table(result: dict, title: str) -> str:
        from segtrain.metrics import format_coco_table

        return format_coco_table(result, title=title)

    @staticmethod
    def describe_scoring(cfg: DictConfig) -> str:
        return (
            "COCO box and mask AP (pycocotools COCOeval, up to model.box_detections_per_img detections per "
            "image above model.box_score_thresh, masks cut at "
            f"inference.mask_threshold={cfg.inference.mask_threshold})"
        )

    @staticmethod
    def inference_settings(cfg: DictConfig) -> dict:
        return OmegaConf.to_container(cfg.inference, resolve=True)

    @staticmethod
    def describe_predictions(cfg: DictConfig) -> str:
        return "as COCO results json and instance overlays"

    @staticmethod
    def count_scored(result: dict) -> str:
        return f"{result['instances']} annotated instances"

    @staticmethod
    def write_report(result: dict, directory: Path, title: str) -> Path:
        from segtrain.plots import per_class_chart

        return per_class_chart(
            result, directory / "per_class_ap.png", title=title, score="mask_AP", mean="mask_AP"
        )

    @staticmethod
    def prediction_files(name: str) -> list[str]:
        return [f"overlays/{name}.jpg"]

    @staticmethod
    def predict_images(run, meta: dict, inference: dict, transforms, inputs, names, out_dir: Path) -> str:
        """COCO results json of every detection, and overlays of those above ``inference.score_threshold``
        (masks cut at ``inference.mask_threshold``); ``run`` is a ``DetectorExport`` or its export."""
        from PIL import Image

        from segtrain.data.datasets.coco_instances import transform_instances
        from segtrain.data.io import read_image
        from segtrain.data.transforms import compose
        from segtrain.metrics import coco_results
        from segtrain.tasks.instance.module import DETECTIONS, draw_detections

        pipeline = compose(transforms, boxes=True)
        results, images = [], []
        for image_id, path in enumerate(inputs, start=1):
            original = read_image(path, len(meta["mean"]))
            image = transform_instances(pipeline, original, [], [], [])["image"]
            if tuple(image.shape[-2:]) != original.shape[:2]:
                raise SegtrainError(
                    f"the model's data.val_transforms change the size of {path}; instance predictions are "
                    "made at each image's own size (the detector resizes internally)"
                )
            output = dict(zip(DETECTIONS, run(image[None].float())))
            results += coco_results(output, image_id, meta["category_ids"], inference["mask_threshold"])
            images.append(
                {"id": image_id, "file_name": str(path), "height": image.shape[1], "width": image.shape[2]}
            )
            drawn = draw_detections(image, output, meta["classes"], meta["palette"], inference)
            Image.fromarray(drawn).save(out_dir / "overlays" / f"{names[path]}.jpg", quality=90)
        (out_dir / "detections.json").write_text(json.dumps(results))
        (out_dir / "images.json").write_text(json.dumps(images, indent=1))
        return (
            f"wrote {len(results)} detections of {len(inputs)} images to {out_dir / 'detections.json'} (COCO "
            f"results; image ids in images.json) and overlays of those scoring above "
            f"{inference['score_threshold']} to {out_dir / 'overlays'}"
        )
