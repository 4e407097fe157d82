"""A fourth task that lives outside segtrain, to show that a task is one package and one YAML: binary
foreground segmentation of a semantic model's two classes, with its own metric (the foreground's IoU and
Dice). ``conf/task/foreground.yaml`` registers it; the commands are segtrain's, unchanged."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from segtrain.tasks.spec import Task, pinned


class ForegroundTask(Task):
    name = "foreground"
    trains_on = "a semantic model and data, every class but the background mapped to foreground"
    compatible_tasks = ("semantic",)
    logits_per_class = True

    @staticmethod
    def module_class() -> type:
        from tests.foreground_task.module import ForegroundSegmentation

        return ForegroundSegmentation

    @staticmethod
    def check_data(cfg: DictConfig):
        from segtrain.tasks.semantic.task import SemanticTask

        return SemanticTask.check_data(cfg)

    @staticmethod
    def score_table(result: dict, title: str) -> str:
        return (
            f"{title}\n  foreground IoU {result['foreground_IoU']:.4f}  Dice {result['foreground_Dice']:.4f}"
        )

    @staticmethod
    def describe_scoring(cfg: DictConfig) -> str:
        return f"foreground where its probability is above inference.threshold={cfg.inference.threshold}"

    @staticmethod
    def describe_predictions(cfg: DictConfig) -> str:
        return "as 0/255 masks"

    @staticmethod
    def count_scored(result: dict) -> str:
        return f"{result['pixels']} labelled pixels"

    @staticmethod
    def write_report(result: dict, directory: Path, title: str) -> Path:
        path = directory / "foreground.json"
        path.write_text(json.dumps({"title": title, "foreground_IoU": result["foreground_IoU"]}))
        return path

    @staticmethod
    def prediction_files(name: str) -> list[str]:
        return [f"{name}.png"]

    @staticmethod
    def predict_images(run, meta: dict, inference: dict, transforms, requests, names, out_dir: Path) -> str:
        import numpy as np
        import torch
        from PIL import Image

        from segtrain.data.description import DatasetDescription
        from segtrain.data.io import read_image

        description = DatasetDescription.from_metadata(meta)
        for path in requests:
            image = torch.from_numpy(read_image(path, description.in_channels)).permute(2, 0, 1)[None]
            foreground = run(description.normalize(image)).softmax(1)[0, 1] > inference["threshold"]
            Image.fromarray(foreground.numpy().astype(np.uint8) * 255).save(out_dir / f"{names[path]}.png")
        return f"wrote {len(requests)} foreground masks to {out_dir}"

    @staticmethod
    def bench_batch(batch: dict) -> dict:
        return pinned(batch, ("image", "mask"))
