"""Panoptic segmentation's LightningModule: every pixel a stuff class or one thing instance, scored by PQ.

Items: the instance task's (``image``, ``boxes``, ``labels`` 1..T, ``masks``) plus ``semantic``, each
pixel's class in data.classes order, and ``meta["panoptic"]``/``meta["segments"]``, the annotation PQ
scores against (``segtrain.data.datasets.coco_panoptic``). The model (``segtrain.models.panoptic_fpn``)
returns detections and the semantic branch's logits; the merge into one segmentation is
``segtrain.tasks.panoptic.merge``, run on a checkpoint's and an export's outputs alike.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn as nn
from PIL import Image

from segtrain.data.datasets.coco_panoptic import id_to_rgb
from segtrain.errors import SegtrainError
from segtrain.tasks.instance.module import DETECTIONS, InstanceSegmentation
from segtrain.tasks.module import ExportSpec
from segtrain.tasks.panoptic.files import PREDICTIONS_JSON, categories_of
from segtrain.tasks.panoptic.merge import merge
from segtrain.tasks.panoptic.quality import PanopticQuality

#: What the exported model returns: the detections and the semantic branch's logits.
OUTPUTS = (*DETECTIONS, "semantic")


def branch_classes(classes: list[str], things: list[str]) -> torch.Tensor:
    """A lookup from class index (255: ignored) to the semantic branch's class: 0 for every thing, then
    the stuff classes in data.classes order."""
    lookup = torch.full((256,), 255, dtype=torch.uint8)
    stuff = [name for name in classes if name not in things]
    for index, name in enumerate(classes):
        lookup[index] = 0 if name in things else stuff.index(name) + 1
    return lookup


class PanopticSegmentation(InstanceSegmentation):
    epoch_metrics = ("PQ", "PQ_th", "PQ_st", "SQ", "RQ")

    def __init__(self, model: nn.Module, **task_arguments):
        super().__init__(model, **task_arguments)
        classes, ids = self.classes, self.description.category_ids
        things = self.description.things
        self.thing_categories = [ids[classes.index(name)] for name in things]
        self.stuff_categories = [ids[index] for index, name in enumerate(classes) if name not in things]
        self.register_buffer("branch_class", branch_classes(classes, things), persistent=False)
        self.quality = PanopticQuality({category: name in things for name, category in zip(classes, ids)})

    def targets(self, batch: dict) -> list[dict]:
        targets = super().targets(batch)
        for target, semantic in zip(targets, batch["semantic"]):
            target["semantic"] = self.branch_class[semantic.long()]
        return targets

    def reference_loss(self, model: nn.Module, batch: dict, device: torch.device) -> torch.Tensor:
        moved = {
            key: [tensor.to(device, non_blocking=True) for tensor in batch[key]]
            for key in ("image", "semantic", "boxes", "labels", "masks")
        }
        return sum(model(self.to_unit_range(moved["image"]), self.targets(moved)).values())

    def merged(self, output: dict) -> tuple[np.ndarray, list[dict]]:
        """The panoptic segmentation of one image's detections and semantic logits."""
        return merge(
            output["labels"].cpu().numpy(),
            output["scores"].cpu().numpy(),
            output["masks"].cpu().numpy(),
            output["semantic"].argmax(0).cpu().numpy(),
            self.thing_categories,
            self.stuff_categories,
            self.inference,
        )

    def evaluate_batch(self, batch: dict, stage: str) -> list[tuple[np.ndarray, list[dict]]]:
        self.check_sizes(batch)
        panoptic = []
        for output, meta in zip(self(batch["image"]), batch["meta"]):
            ids, segments = self.merged(output)
            try:
                self.quality.update(meta["panoptic"].numpy(), meta["segments"], ids, segments)
            except KeyError as err:
                raise SegtrainError(
                    f"image {meta['name']}: a segment of category {err} is not among data.category_ids; the "
                    "annotation lists categories its json does not (segtrain check-data lists them)"
                ) from None
            panoptic.append((ids, segments))
        return panoptic

    def reset_scores(self, stage: str) -> None:
        self.quality.counts[:] = 0

    def epoch_scores(self, stage: str) -> dict:
        counts = self.gather(self.quality.counts.copy())
        self.reset_scores(stage)
        total = PanopticQuality(self.quality.categories)
        for rank_counts in counts:
            total.merge(rank_counts)
        result = total.compute()
        per_category = result.pop("per_category")
        nan = {"PQ": float("nan"), "SQ": float("nan"), "RQ": float("nan")}
        result["per_class"] = {
            name: {key.upper(): value for key, value in per_category[category].items()}
            if category in per_category
            else nan
            for name, category in zip(self.classes, self.description.category_ids)
        }
        self.log_dict(
            {f"{stage}/{key}": result[key] for key in self.epoch_metrics}, prog_bar=True, sync_dist=True
        )
        return result

    def prediction_writer(self, directory: Path, dataset) -> pl.Callback:
        return PanopticPredictionWriter(directory, self.metadata())

    def exported_module(self) -> nn.Module:
        """What export writes and predict runs (``PanopticExport``)."""
        return PanopticExport(self.model).eval()

    def export_spec(self, sizes: list[tuple[int, ...]]) -> ExportSpec:
        spec = super().export_spec(sizes)  # whose module is this task's exported_module
        spec.output_names = list(OUTPUTS)
        spec.dynamic_axes["semantic"] = {1: "height", 2: "width"}
        spec.output = f"{spec.output}; semantic [S+1, H, W] logits (0: things, then the stuff classes)"
        return spec

    def overlay_panels(self, batch: dict, outputs: list, count: int, alpha: float) -> list[np.ndarray]:
        """Image | ground truth | prediction, one row per image."""
        panels, described = [], self.metadata()
        for image, meta, (ids, segments) in list(zip(batch["image"], batch["meta"], outputs))[:count]:
            truth = draw_panoptic(image, meta["panoptic"].numpy(), meta["segments"], described, alpha)
            predicted = draw_panoptic(image, ids, segments, described, alpha)
            original = image.expand(3, -1, -1).permute(1, 2, 0).cpu().numpy()
            panels.append(np.concatenate([original, truth, predicted], axis=1))
        return panels


class PanopticExport(nn.Module):
    """Panoptic FPN for one image: float [1, C, H, W] in 0-255 -> boxes, labels, scores, masks and the
    semantic logits [S+1, H, W] (the graph ``segtrain export`` writes; predict merges its outputs)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self, image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs = self.model([image[0] / 255])
        # Scripted, the model returns (losses, detections), as torchvision's detectors do.
        output = outputs[1][0] if torch.jit.is_scripting() else outputs[0]
        return output["boxes"], output["labels"], output["scores"], output["masks"], output["semantic"]


def draw_panoptic(image: torch.Tensor, ids: np.ndarray, segments: list[dict], meta: dict, alpha: float):
    """HxWx3 uint8: stuff in its class's colour, each thing in a colour of its own, unlabelled left as is."""
    from segtrain.resolvers import distinct_palette

    canvas = image.detach().cpu().expand(3, -1, -1).permute(1, 2, 0).numpy().astype(np.float32)
    colour_of = dict(zip(meta["category_ids"], meta["palette"]))
    thing_ids = {
        category for name, category in zip(meta["classes"], meta["category_ids"]) if name in meta["things"]
    }
    instance_colours = iter(distinct_palette(len(segments)))
    for segment in segments:
        region = ids == segment["id"]
        own = next(instance_colours)
        colour = (
            own if segment["category_id"] in thing_ids else colour_of.get(segment["category_id"], (0, 0, 0))
        )
        canvas[region] = (1 - alpha) * canvas[region] + alpha * np.asarray(colour, np.float32)
    return canvas.astype(np.uint8)


class PanopticPredictionWriter(pl.Callback):
    """``eval save_predictions=true``: the panoptic PNGs and their json in the COCO panoptic format, which
    panopticapi's and cityscapesscripts' evaluations read, and an overlay per image."""

    def __init__(self, directory: Path, meta: dict):
        self.directory = Path(directory)
        self.meta = meta
        self.annotations: list[dict] = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        for image, meta, (ids, segments) in zip(batch["image"], batch["meta"], outputs):
            self.annotations.append(
                write_panoptic(
                    self.directory, meta["name"], meta["image_id"], image, ids, segments, self.meta
                )
            )

    def on_test_end(self, trainer, pl_module) -> None:
        data = {"annotations": self.annotations, "categories": categories_of(self.meta)}
        (self.directory / PREDICTIONS_JSON).write_text(json.dumps(data))


def write_panoptic(
    directory: Path,
    name: str,
    image_id,
    image: torch.Tensor,
    ids: np.ndarray,
    segments: list[dict],
    meta: dict,
) -> dict:
    """Writes ``panoptic/<name>.png`` and ``overlays/<name>.jpg``; returns the image's json annotation."""
    for folder in ("panoptic", "overlays"):
        (directory / folder).mkdir(parents=True, exist_ok=True)
    Image.fromarray(id_to_rgb(ids)).save(directory / "panoptic" / f"{name}.png")
    Image.fromarray(draw_panoptic(image, ids, segments, meta, 0.5)).save(
        directory / "overlays" / f"{name}.jpg", quality=90
    )
    listed = [
        {key: segment[key] for key in ("id", "category_id", "isthing", "area", "bbox")}
        for segment in segments
    ]
    return {"image_id": image_id, "file_name": f"{name}.png", "segments_info": listed}


def predict_panoptic(
    run, meta: dict, inference: dict, transforms, inputs, names, out_dir: Path
) -> list[dict]:
    """predict's loop: each input through ``run`` (a ``PanopticExport`` or its export), merged and written."""
    from segtrain.data.datasets.coco_instances import transform_instances
    from segtrain.data.io import read_image
    from segtrain.data.transforms import compose

    things = meta["things"]
    thing_categories = [meta["category_ids"][meta["classes"].index(name)] for name in things]
    stuff_categories = [c for name, c in zip(meta["classes"], meta["category_ids"]) if name not in things]
    pipeline = compose(transforms, boxes=True)
    annotations = []
    for image_id, path in enumerate(inputs, start=1):
        original = read_image(path, len(meta["mean"]))
        image = transform_instances(pipeline, original, [], [], [])["image"]
        if tuple(image.shape[-2:]) != original.shape[:2]:
            raise SegtrainError(
                f"the model's data.val_transforms change the size of {path}; panoptic predictions are made "
                "at each image's own size (the detector resizes internally)"
            )
        _, labels, scores, masks, semantic = (np.asarray(output) for output in run(image[None].float()))
        ids, segments = merge(
            labels, scores, masks, semantic.argmax(0), thing_categories, stuff_categories, inference
        )
        annotations.append(write_panoptic(out_dir, names[path], image_id, image, ids, segments, meta))
    return annotations
