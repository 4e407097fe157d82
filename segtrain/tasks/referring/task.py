"""What the commands ask of referring segmentation without a network: its rules, the vocabulary built
from the train split, the expression scan, the tables and the predict loop (a mask per image and
expression)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from segtrain.errors import SegtrainError
from segtrain.schema import MASK_THRESHOLD
from segtrain.tasks.spec import Task, pinned

log = logging.getLogger(__name__)


class ReferringTask(Task):
    name = "referring"
    trains_on = "model=text_objseg and data=shapes_referring or refcoco"
    #: Which expression each mask answers.
    prediction_summary_files = ["expressions.json"]
    keys = (MASK_THRESHOLD,)

    @staticmethod
    def module_class() -> type:
        from segtrain.tasks.referring.module import ReferringSegmentation

        return ReferringSegmentation

    @classmethod
    def validate(cls, cfg: DictConfig) -> None:
        """The settings of whole-image semantic inference do not apply; the referring inference settings
        hold none of them, so only a config that adds one (``+inference.flip=true``) or a checkpoint's
        stored config can carry it."""
        super().validate(cfg)
        inference = cfg.get("inference") or {}
        unsupported = {
            "inference.mode=slide": inference.get("mode", "whole") != "whole",
            "inference.flip=true": inference.get("flip"),
            f"inference.scales={list(inference.get('scales', [1.0]))}": list(inference.get("scales", [1.0]))
            != [1.0],
            "inference.crf=true": inference.get("crf"),
        }
        typed = [key for key, on in unsupported.items() if on]
        if typed:
            raise SegtrainError(
                f"task=referring runs whole images once: {', '.join(typed)} would change what the expression "
                "means (a flipped image swaps left and right) or needs class scores. Drop these overrides"
            )

    @classmethod
    def derive(cls, cfg: DictConfig) -> dict:
        """``data.vocabulary=null``: the vocabulary, built from the train split's expressions."""
        if cfg.data.get("vocabulary") is not None:
            return {}
        from segtrain.data.datamodule import build_datamodule
        from segtrain.data.referring import build_vocabulary

        datamodule = build_datamodule(cfg.data)
        expressions = datamodule.reader(datamodule.splits["train"], vocabulary=None).expressions()
        vocabulary = build_vocabulary(expressions, int(cfg.data.get("min_word_count", 1)))
        log.info(
            "vocabulary: %d words from %d train expressions (%s, ...)",
            len(vocabulary) - 2,
            len(expressions),
            ", ".join(vocabulary[2:8]),
        )
        return {"data.vocabulary": vocabulary}

    @staticmethod
    def check_data(cfg: DictConfig):
        """``segtrain check-data``: expressions, words past ``data.max_length``, and empty masks."""
        from segtrain.data.referring import scan_expressions

        return scan_expressions(cfg)

    @staticmethod
    def bench_batch(batch: dict) -> dict:
        return pinned(batch, ("image", "tokens", "mask"))

    @staticmethod
    def score_table(result: dict, title: str) -> str:
        from segtrain.metrics import format_referring_table

        return format_referring_table(result, title=title)

    @staticmethod
    def describe_scoring(cfg: DictConfig) -> str:
        return (
            "overall IoU, mean IoU and precision@0.5-0.9 of masks cut at probability "
            f"inference.mask_threshold={cfg.inference.mask_threshold}, at each image's own resolution"
        )

    @staticmethod
    def describe_predictions(cfg: DictConfig) -> str:
        return "as 0/255 masks at each image's own size, overlays and expressions.json"

    @staticmethod
    def count_scored(result: dict) -> str:
        return f"{result['expressions']} expressions"

    @staticmethod
    def write_report(result: dict, directory: Path, title: str) -> Path:
        from segtrain.metrics import PRECISION_THRESHOLDS
        from segtrain.plots import per_class_chart

        bars = {f"precision@{t}": {"precision": result[f"precision@{t}"]} for t in PRECISION_THRESHOLDS}
        bars["mean IoU"] = {"precision": result["mean_IoU"]}
        chart = {"per_class": bars, "overall_IoU": result["overall_IoU"]}
        return per_class_chart(
            chart, directory / "precision.png", title=title, score="precision", mean="overall_IoU"
        )

    @staticmethod
    def prediction_requests(cfg: DictConfig, inputs: list[Path]) -> list[tuple[Path, str]]:
        """(image, expression) pairs: every input image with ``text=...``, or the lines of a
        tab-separated ``input=pairs.tsv`` (image path, relative to the file, then the expression)."""
        if cfg.get("text"):
            return [(path, str(cfg.text)) for path in inputs]
        source = Path(cfg.input)
        if source.suffix != ".tsv":
            raise SegtrainError(
                'task=referring predicts the object an expression names: pass text="the blue square" with '
                "input=IMAGE_OR_DIR, or input=pairs.tsv with one 'image<TAB>expression' per line"
            )
        requests = []
        for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            image, tab, expression = line.partition("\t")
            path = (
                (source.parent / image.strip()).resolve()
                if not Path(image.strip()).is_absolute()
                else Path(image)
            )
            if not tab or not expression.strip():
                raise SegtrainError(
                    f"{source} line {number}: expected 'image<TAB>expression', got {line[:80]!r}"
                )
            if not path.is_file():
                raise SegtrainError(f"{source} line {number}: the image {path} does not exist")
            requests.append((path, expression.strip()))
        if not requests:
            raise SegtrainError(f"{source} holds no 'image<TAB>expression' lines")
        return requests

    @staticmethod
    def prediction_names(requests: list[tuple[Path, str]]) -> dict:
        return {request: f"{number:04d}_{request[0].stem}" for number, request in enumerate(requests)}

    @staticmethod
    def prediction_files(name: str) -> list[str]:
        return [f"{name}.png", f"overlays/{name}.jpg"]

    @staticmethod
    def predict_images(run, meta: dict, inference: dict, transforms, requests, names, out_dir: Path) -> str:
        """A 0/255 mask and an overlay per (image, expression), at the image's own size; ``run`` takes
        normalised images and token ids (the model, or its export)."""
        import numpy as np
        import torch
        from PIL import Image

        from segtrain.data.description import DatasetDescription
        from segtrain.data.io import read_image
        from segtrain.data.referring import encode, tokenize, unread_words, word_ids
        from segtrain.data.transforms import compose, transform_item
        from segtrain.inference import to_original_size
        from segtrain.visualize import blend, captioned

        description = DatasetDescription.from_metadata(meta)
        pipeline = compose(transforms, track_extent=True)
        ids = word_ids(meta["vocabulary"])
        written = []
        for request in requests:
            path, expression = request
            unread = unread_words(expression, ids, meta["max_length"])
            entry = {"image": str(path), "expression": expression, **unread}
            if unread["cut_words"]:
                log.warning(
                    "%r is cut after data.max_length=%d words: the model does not read %r",
                    expression,
                    meta["max_length"],
                    " ".join(unread["cut_words"]),
                )
            if len(unread["unknown_words"]) == len(tokenize(expression)[: meta["max_length"]]):
                log.warning(
                    "%r: no word of it is in the model's vocabulary (%d words from its train split), so "
                    "no mask is drawn for it; rephrase it with the words the model was trained on",
                    expression,
                    len(meta["vocabulary"]) - 2,
                )
                written.append({**entry, "mask": None, "answered": False})
                continue
            if unread["unknown_words"]:
                log.warning(
                    "%r: the model reads %s as unknown words (not in its vocabulary)",
                    expression,
                    ", ".join(repr(word) for word in unread["unknown_words"]),
                )
            original = read_image(path, description.in_channels)
            image, _, region = transform_item(pipeline, original, None, True)
            rgb = torch.from_numpy(image).permute(2, 0, 1)[None]
            tokens = encode(expression, ids, meta["max_length"])[None]
            logits = run(description.normalize(rgb), tokens)
            logits = to_original_size(logits.float(), [{"size": original.shape[:2], "region": region}])
            mask = (torch.sigmoid(logits[0, 0]) > inference["mask_threshold"]).numpy().astype(np.uint8)
            name = names[request]
            Image.fromarray(mask * 255).save(out_dir / f"{name}.png")
            overlay = captioned(blend(original, mask, description.palette), expression)
            Image.fromarray(overlay).save(out_dir / "overlays" / f"{name}.jpg", quality=90)
            written.append({**entry, "mask": f"{name}.png", "answered": True})
        (out_dir / "expressions.json").write_text(json.dumps(written, indent=1))
        answered = sum(entry["answered"] for entry in written)
        unanswered = f", none for {len(written) - answered} it cannot read" if answered < len(written) else ""
        return (
            f"wrote {answered} masks to {out_dir}{unanswered} (which expression each answers: "
            f"expressions.json) and overlays to {out_dir / 'overlays'}"
        )
