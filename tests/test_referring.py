"""Referring segmentation: expressions to token ids, the embedded and refer-toolkit readers, the model,
the loss and metrics on hand-made numbers, and the task end to end (train, eval, predict with text and with
a pairs file, ONNX export with two inputs against onnxruntime)."""

from __future__ import annotations

import itertools
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as mask_utils

from segtrain.data.datasets.refer import Refer
from segtrain.data.datasets.shapes_referring import ShapesReferring
from segtrain.data.referring import PAD, UNK, build_vocabulary, encode, tokenize, word_ids
from segtrain.errors import SegtrainError
from segtrain.losses import WeightedSigmoidCrossEntropy
from segtrain.metrics import referring_scores
from segtrain.models.text_objseg import TextObjSeg, spatial_map
from tests.conftest import checkpoints, run_cli

VOCABULARY = [PAD, UNK, "the", "red", "disc", "left", "of", "square"]
TINY_MODEL = dict(
    embedding_dim=8, lstm_hidden=16, fc_width=16, image_features=16, mlp_hidden=8, backbone={"width": 0.0625}
)


def test_expressions_become_left_padded_ids_with_unknown_words():
    ids = word_ids(VOCABULARY)
    assert tokenize("The red disc, LEFT of the square!") == [
        "the",
        "red",
        "disc",
        "left",
        "of",
        "the",
        "square",
    ]
    assert encode("the red cube", ids, 5).tolist() == [0, 0, 2, 3, 1]
    # Longer than max_length: the first words are kept.
    assert encode("the red disc left of the square", ids, 4).tolist() == [2, 3, 4, 5]
    with pytest.raises(SegtrainError, match="must start with '<pad>' and '<unk>'"):
        word_ids(["the", "red"])


def test_vocabulary_is_ordered_by_frequency_and_deterministic():
    vocabulary = build_vocabulary(["the red disc", "the blue disc", "a red square"], min_count=1)
    assert vocabulary[:5] == [PAD, UNK, "disc", "red", "the"]
    assert build_vocabulary(["the red disc", "the blue disc"], min_count=2) == [PAD, UNK, "disc", "the"]


def test_embedded_data_needs_the_expression():
    dataset = ShapesReferring("train", vocabulary=build_vocabulary(ShapesReferring("train").expressions()))
    items = [dataset[i] for i in range(3)]
    # Three items of one image: the same pixels, three expressions, three different objects.
    assert all(torch.equal(items[0]["image"], item["image"]) for item in items)
    assert len({item["meta"]["expression"] for item in items}) == 3
    masks = [item["mask"].bool() for item in items]
    assert all(mask.any() for mask in masks)
    assert not (masks[0] & masks[1]).any() and not (masks[1] & masks[2]).any()
    expressions = dataset.expressions()
    relations = [e for e in expressions if any(r in e for r in ("left of", "right of", "above", "below"))]
    # Twins in every image: half of the objects need a relation.
    assert 0.3 < len(relations) / len(expressions) < 0.7
    assert items[0]["tokens"].shape == (20,) and items[0]["tokens"].dtype == torch.int64
    assert torch.equal(dataset[5]["image"], ShapesReferring("train", vocabulary=[PAD, UNK])[5]["image"])


def _polygon(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def make_refer_tree(root: Path) -> Path:
    """A refer-toolkit data folder: refs(unc).p (a Python 2 style pickle), instances.json with a polygon and
    an RLE annotation, and the COCO images."""
    images_dir = root / "images/mscoco/images/train2014"
    images_dir.mkdir(parents=True)
    (root / "refcoco").mkdir()
    images, annotations, refs = [], [], []
    for image_id, (split, height, width) in enumerate([("train", 40, 50), ("val", 36, 44)], start=1):
        name = f"COCO_train2014_{image_id:012d}.jpg"
        Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(images_dir / name)
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
        box = np.zeros((height, width), np.uint8)
        box[5:20, 10:30] = 1
        rle = mask_utils.encode(np.asfortranarray(box))
        annotations += [
            {
                "id": 10 * image_id,
                "image_id": image_id,
                "category_id": 1,
                "segmentation": _polygon(2, 2, 12, 12),
            },
            {
                "id": 10 * image_id + 1,
                "image_id": image_id,
                "category_id": 1,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
            },
        ]
        refs += [
            {
                "ref_id": 2 * image_id,
                "ann_id": 10 * image_id,
                "image_id": image_id,
                "split": split,
                "sentences": [{"sent": "the small box on the left"}, {"sent": "top left thing"}],
            },
            {
                "ref_id": 2 * image_id + 1,
                "ann_id": 10 * image_id + 1,
                "image_id": image_id,
                "split": split,
                "sentences": [{"sent": "the wide box"}],
            },
        ]
    (root / "refcoco/instances.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    with open(root / "refcoco/refs(unc).p", "wb") as handle:
        pickle.dump(refs, handle, protocol=2)
    return root


def test_refer_reader_reads_the_toolkit_layout(tmp_path):
    root = make_refer_tree(tmp_path / "data")
    train = Refer(root, "train", vocabulary=VOCABULARY)
    assert len(train) == 3 and train.expressions()[0] == "the small box on the left"
    polygon, rle = train[0], train[2]
    assert polygon["mask"].shape == (40, 50) and polygon["mask"][2:12, 2:12].all()
    assert int(rle["mask"].sum()) == 15 * 20
    assert rle["meta"]["expression"] == "the wide box"
    with pytest.raises(SegtrainError, match=r"has no refs in split 'testA'; its splits are train, val"):
        Refer(root, "testA")
    with pytest.raises(SegtrainError, match=r"refs\(google\).p does not exist. Expected layout"):
        Refer(root, "train", split_by="google")


def test_metrics_on_hand_made_overlaps():
    result = referring_scores(torch.tensor([5, 0, 9, 0]), torch.tensor([10, 10, 10, 0]))
    # Cumulative 14/30; per expression 0.5, 0, 0.9 and 1 (both empty).
    assert result["overall_IoU"] == pytest.approx(14 / 30)
    assert result["mean_IoU"] == pytest.approx((0.5 + 0 + 0.9 + 1) / 4)
    assert result["precision@0.5"] == pytest.approx(3 / 4)
    assert result["precision@0.9"] == pytest.approx(2 / 4)
    assert result["precision@0.6"] == pytest.approx(2 / 4)


def test_weighted_sigmoid_cross_entropy():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, 3.0]]]])
    target = torch.tensor([[[1, 0], [0, 255]]])
    loss = WeightedSigmoidCrossEntropy(negative_weight=1 / 3)(logits, target)
    expected = (
        F.softplus(torch.tensor(-2.0)) + (F.softplus(torch.tensor(-1.0)) + F.softplus(torch.tensor(0.5))) / 3
    ) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_model_at_odd_sizes_reads_both_inputs():
    torch.manual_seed(0)
    model = TextObjSeg(VOCABULARY, **TINY_MODEL)
    image = torch.randn(2, 3, 45, 71)
    tokens = torch.tensor([[0, 2, 3, 4], [2, 3, 4, 5]])
    out = model(image, tokens)
    assert out.shape == (2, 1, 45, 71)
    out.square().mean().backward()
    assert model.embedding.weight.grad.abs().sum() > 0 and model.trunk.features[0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(image, tokens), model(image, tokens.flip(0)))
        blind = TextObjSeg(VOCABULARY, blind="expression", **TINY_MODEL).eval()
        assert torch.equal(blind(image, tokens), blind(image, tokens.flip(0)))
        image_blind = TextObjSeg(VOCABULARY, blind="image", **TINY_MODEL).eval()
        assert torch.equal(image_blind(image, tokens), image_blind(torch.randn_like(image), tokens))


def test_spatial_map_is_the_papers_eight_channels():
    grid = spatial_map(torch.zeros(1, 4, 2, 4))
    # Cell (row 1, column 3) of a 2x4 grid: x in [0.5, 1], y in [0, 1].
    assert grid[0, :, 1, 3].tolist() == pytest.approx([0.5, 0.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.5])


def test_paper_configuration():
    with torch.device("meta"):
        model = TextObjSeg([PAD, UNK] + [f"w{i}" for i in range(8801)], backbone={"pretrained": False})
    assert model.lstm.hidden_size == 1000 and model.embedding.embedding_dim == 1000
    assert model.mlp[0].in_channels == 1000 + 1000 + 8 and model.mlp[0].out_channels == 500
    assert model.upsample.stride == (32, 32)


RUN = [
    "task=referring",
    "data.dataset.lengths={train:48,val:12,test:12}",
    "data.batch_size=8",
    "model.embedding_dim=8",
    "model.lstm_hidden=16",
    "model.fc_width=16",
    "model.image_features=16",
    "model.mlp_hidden=8",
    "model.backbone.width=0.0625",
    "trainer.max_epochs=1",
    "callbacks.progress_bar=null",
]


def train_referring(tmp_path: Path, name: str, *overrides: str) -> tuple[float, Path]:
    """``segtrain task=referring`` (the embedded data, the small model) for 4 epochs: its last val
    overall IoU and checkpoint."""
    result = run_cli(
        "task=referring",
        "trainer.max_epochs=4",
        "callbacks.progress_bar=null",
        f"run_name={name}",
        *overrides,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"vocabulary: 1\d words from 3000 train expressions", result.stdout + result.stderr)
    (metrics,) = (tmp_path / "outputs" / name).rglob("val_metrics.json")
    return json.loads(metrics.read_text())["overall_IoU"], checkpoints(tmp_path / "outputs" / name)[0]


@pytest.mark.slow
def test_model_beats_both_blind_baselines_then_evaluates_predicts_and_exports(tmp_path):
    """What a user checks first: the model reads both inputs. The same network and budget with the
    expression zeroed (it can only guess among the four objects) and with the image zeroed (it can only guess
    where the object is from the words) stay far below it."""
    full, ckpt = train_referring(tmp_path, "full")
    expression_blind, _ = train_referring(tmp_path, "expression_blind", "model.blind=expression")
    image_blind, _ = train_referring(tmp_path, "image_blind", "model.blind=image")
    assert full > max(expression_blind, image_blind) + 0.1, (full, expression_blind, image_blind)

    stored = torch.load(ckpt, map_location="cpu", weights_only=False)["segtrain"]
    assert (
        stored["task"] == "referring"
        and stored["vocabulary"][:2] == [PAD, UNK]
        and stored["max_length"] == 20
    )

    result = run_cli("eval", f"ckpt={ckpt}", "save_predictions=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(next((tmp_path / "outputs").rglob("eval/*/metrics.json")).read_text())
    assert metrics["expressions"] == 300 and metrics["overall_IoU"] == pytest.approx(full, abs=1e-6)
    assert "precision@0.9" in metrics
    written = json.loads(next((tmp_path / "outputs").rglob("predictions/expressions.json")).read_text())
    assert len(written) == 300

    image = tmp_path / "scene.png"
    Image.fromarray(ShapesReferring("val")[0]["image"].permute(1, 2, 0).numpy()).resize((123, 77)).save(image)
    out = tmp_path / "pred"
    result = run_cli(
        "predict", f"ckpt={ckpt}", f"input={image}", "text=the red disc", f"output={out}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    mask = np.asarray(Image.open(out / "0000_scene.png"))
    assert mask.shape == (77, 123) and set(np.unique(mask)) <= {0, 255}
    assert json.loads((out / "expressions.json").read_text())[0]["expression"] == "the red disc"

    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("scene.png\tthe red disc\nscene.png\tthe blue square above the green triangle\n")
    result = run_cli(
        "predict", f"ckpt={ckpt}", f"input={pairs}", f"output={tmp_path / 'pairs_out'}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "pairs_out/0001_scene.png").is_file()

    result = run_cli("predict", f"ckpt={ckpt}", f"input={image}", f"output={tmp_path / 'x'}", cwd=tmp_path)
    assert result.returncode != 0 and "pass text=" in result.stderr

    onnx = tmp_path / "model.onnx"
    result = run_cli("export", f"ckpt={ckpt}", f"output={onnx}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads((tmp_path / "model.onnx.json").read_text())
    assert meta["vocabulary"] == stored["vocabulary"] and "tokens int64" in meta["input"]
    import onnxruntime as ort

    assert [i.name for i in ort.InferenceSession(str(onnx)).get_inputs()] == ["image", "tokens"]
    # The export predicts the same mask as the checkpoint.
    result = run_cli(
        "predict",
        f"ckpt={onnx}",
        f"input={image}",
        "text=the red disc",
        f"output={tmp_path / 'o'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o/0000_scene.png")), mask)


def test_referring_refuses_flips_and_flipped_inference(tmp_path):
    result = run_cli(*RUN, "data.train_transforms=[{_target_:albumentations.HorizontalFlip}]", cwd=tmp_path)
    assert (
        result.returncode != 0
        and "HorizontalFlip" in result.stderr
        and "expressions name sides" in result.stderr
    )
    # The referring task's inference settings have no flip; added on purpose, it is refused with the reason.
    result = run_cli(*RUN, "inference.flip=true", cwd=tmp_path)
    assert result.returncode != 0 and "Valid keys under 'inference': mask_threshold" in result.stderr
    result = run_cli(*RUN, "+inference.flip=true", cwd=tmp_path)
    assert result.returncode != 0 and "inference.flip=true would change what the expression" in result.stderr


def test_evaluation_from_logits_to_intersection_and_union():
    """Logits at the transformed, batch-padded size -> each expression's I and U on its image's own grid:
    item A (4x6) was scaled x2 into the top-left 8x12 of a 10x12 batch, item B (5x5) x2 into the top-left
    10x10. Logits are constant on 2x2 blocks, so bringing them back is exact; sigmoid > 0.5 is the mask
    (logit 0.1 is in, -0.1 out), and pixels labelled 255 count in neither I nor U."""
    from segtrain.tasks.referring.module import ReferringSegmentation

    block_logits = {
        "A": torch.tensor([[3.0, 3.0, -3.0, 0.1, -0.1, 3.0]] * 2 + [[-3.0, -3.0, 3.0, 3.0, -3.0, -3.0]] * 2),
        "B": torch.tensor([[0.1, -0.1, 3.0, -3.0, 3.0]] * 5),
    }
    logits = torch.full((2, 1, 10, 12), -50.0)  # beyond each item's region: padding the model also saw
    logits[0, 0, :8, :12] = block_logits["A"].repeat_interleave(2, 0).repeat_interleave(2, 1)
    logits[1, 0, :10, :10] = block_logits["B"].repeat_interleave(2, 0).repeat_interleave(2, 1)
    masks = {
        "A": torch.tensor([[1, 1, 0, 1, 1, 255], [1, 0, 0, 0, 1, 255]] + [[0, 0, 1, 1, 1, 0]] * 2),
        "B": torch.tensor([[1, 1, 1, 0, 0]] * 4 + [[255] * 5]),
    }
    batch_mask = torch.full((2, 5, 6), 255, dtype=torch.uint8)  # padded to the largest original size
    batch_mask[0, :4, :6] = masks["A"]
    batch_mask[1, :5, :5] = masks["B"]
    expected = []
    for name in ("A", "B"):
        predicted, target = block_logits[name].sigmoid() > 0.5, masks[name]
        intersection = union = 0
        for (i, j), label in zip(itertools.product(*map(range, target.shape)), target.flatten().tolist()):
            if label == 255:
                continue
            intersection += int(predicted[i, j] and label == 1)
            union += int(predicted[i, j] or label == 1)
        expected.append((intersection, union))

    class Task:
        threshold, ignore_index, overlaps = 0.5, 255, {"val": []}

        def __call__(self, image, tokens):
            return logits

    batch = {
        "image": torch.zeros(2, 3, 10, 12, dtype=torch.uint8),
        "tokens": torch.zeros(2, 4, dtype=torch.long),
        "mask": batch_mask,
        "meta": [
            {"size": [4, 6], "region": [[0, 8], [0, 12]]},
            {"size": [5, 5], "region": [[0, 10], [0, 10]]},
        ],
    }
    task = Task()
    predicted = ReferringSegmentation.evaluate_batch(task, batch, "val")
    assert predicted.shape == (2, 5, 6)
    (overlaps,) = task.overlaps["val"]
    assert [tuple(pair) for pair in overlaps.T.tolist()] == expected == [(8, 14), (8, 16)]


def test_predict_says_which_words_the_model_cannot_read_and_draws_nothing_for_unreadable_text(
    tmp_path, caplog
):
    """Out-of-vocabulary words are named and recorded; words past max_length are named as cut; a text of
    no known word gets no mask and is recorded as not answered."""
    from segtrain.tasks.referring.task import ReferringTask

    image = tmp_path / "scene.png"
    Image.fromarray(np.full((12, 16, 3), 100, np.uint8)).save(image)
    meta = {
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "vocabulary": [PAD, UNK, "the", "blue", "square", "left"],
        "max_length": 4,
        "palette": [[0, 0, 0], [255, 0, 0]],
        "classes": ["background", "object"],
    }
    seen = []

    def run(images, tokens):
        seen.append(tokens[0].tolist())
        return torch.ones(1, 1, *images.shape[-2:])

    requests = [
        (image, "the blue hexagon"),
        (image, "the blue square on the left"),
        (image, "zebra crossing"),
    ]
    names = {request: f"mask{index}" for index, request in enumerate(requests)}
    (tmp_path / "out" / "overlays").mkdir(parents=True)
    with caplog.at_level("WARNING"):
        message = ReferringTask.predict_images(
            run, meta, {"mask_threshold": 0.5}, None, requests, names, tmp_path / "out"
        )
    assert seen == [[0, 2, 3, 1], [2, 3, 4, 1]]  # 'hexagon' and 'on' read as <unk>; 'the left' cut
    warnings = caplog.text
    assert "'hexagon'" in warnings and "'on'" in warnings and "does not read 'the left'" in warnings
    assert "'zebra crossing': no word of it is in the model's vocabulary (4 words" in warnings
    written = json.loads((tmp_path / "out" / "expressions.json").read_text())
    assert [entry["unknown_words"] for entry in written] == [["hexagon"], ["on"], ["zebra", "crossing"]]
    assert [entry["cut_words"] for entry in written] == [[], ["the", "left"], []]
    assert [entry["answered"] for entry in written] == [True, True, False]
    assert written[2]["mask"] is None and not (tmp_path / "out" / "mask2.png").exists()
    assert "wrote 2 masks" in message and "none for 1 it cannot read" in message
