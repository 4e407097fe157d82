"""Panoptic segmentation: PQ against the official evaluator, the data, the model and the commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segtrain.data.datasets.coco_panoptic import id_to_rgb, rgb_to_id
from segtrain.tasks.panoptic.quality import PanopticQuality
from tests.panoptic import CATEGORIES as PANOPTIC_CATEGORIES
from tests.panoptic import make_panoptic_tree

#: category id -> is a thing: two things (person, car) and two stuff classes (road, sky).
CATEGORIES = {24: True, 26: True, 7: False, 23: False}


def random_scene(generator: np.random.Generator, size=(48, 64)) -> tuple[np.ndarray, list[dict]]:
    """An id map of stuff bands, thing boxes over them, a void patch and sometimes a crowd region."""
    height, width = size
    ids = np.zeros(size, np.int64)
    segments = []
    cut = int(generator.integers(10, height - 10))
    for next_id, (category, rows) in enumerate(((23, slice(0, cut)), (7, slice(cut, height))), start=1):
        ids[rows] = next_id
        segments.append({"id": next_id, "category_id": category, "iscrowd": 0})
    for next_id in range(3, 3 + int(generator.integers(1, 5))):
        top, left = int(generator.integers(0, height - 8)), int(generator.integers(0, width - 8))
        box_height, box_width = int(generator.integers(4, 20)), int(generator.integers(4, 24))
        ids[top : top + box_height, left : left + box_width] = next_id
        crowd = int(generator.random() < 0.2)
        segments.append({"id": next_id, "category_id": int(generator.choice([24, 26])), "iscrowd": crowd})
    top, left = int(generator.integers(0, height - 6)), int(generator.integers(0, width - 6))
    ids[top : top + 5, left : left + 5] = 0
    present = set(np.unique(ids).tolist())
    return ids, [s for s in segments if s["id"] in present]


def perturbed(generator: np.random.Generator, ids: np.ndarray, segments: list[dict]):
    """A prediction near the truth: segments shifted, some relabelled, one split, one dropped, void kept
    as predicted void in places."""
    predicted = np.roll(
        ids, shift=(int(generator.integers(-2, 3)), int(generator.integers(-2, 3))), axis=(0, 1)
    )
    predicted_segments = []
    for segment in segments:
        category = segment["category_id"]
        if generator.random() < 0.15:
            category = int(generator.choice(list(CATEGORIES)))
        predicted_segments.append({"id": segment["id"], "category_id": category})
    if predicted_segments and generator.random() < 0.5:
        victim = predicted_segments[-1]["id"]
        rows, columns = np.nonzero(predicted == victim)
        if len(rows):
            half = columns > np.median(columns)
            predicted[rows[half], columns[half]] = 99
            predicted_segments.append({"id": 99, "category_id": predicted_segments[-1]["category_id"]})
    present = set(np.unique(predicted).tolist())
    return predicted, [s for s in predicted_segments if s["id"] in present]


def write_coco_panoptic(root, name: str, scenes: list[tuple[np.ndarray, list[dict]]], truth: bool) -> tuple:
    folder = root / name
    folder.mkdir()
    annotations = []
    for image_id, (ids, segments) in enumerate(scenes, start=1):
        file_name = f"{image_id:04d}.png"
        Image.fromarray(id_to_rgb(ids)).save(folder / file_name)
        listed = []
        for segment in segments:
            entry = dict(segment)
            if truth:
                entry["area"] = int((ids == segment["id"]).sum())
            listed.append(entry)
        annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": listed})
    categories = [{"id": c, "name": str(c), "isthing": int(thing)} for c, thing in CATEGORIES.items()]
    path = root / f"{name}.json"
    path.write_text(json.dumps({"annotations": annotations, "categories": categories}))
    return path, folder


def test_pq_equals_cityscapesscripts_on_the_written_files(tmp_path):
    """30 scenes with void, crowd regions, relabelled, shifted, split and dropped segments: PQ, SQ and RQ
    overall, for things, for stuff and per category equal cityscapesscripts' evaluatePanoptic (which
    follows panopticapi's pq_compute) run on the PNGs and json files, to 1e-6."""
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

    generator = np.random.default_rng(0)
    truths = [random_scene(generator) for _ in range(30)]
    predictions = [perturbed(generator, *truth) for truth in truths]
    gt_json, gt_folder = write_coco_panoptic(tmp_path, "truth", truths, truth=True)
    pred_json, pred_folder = write_coco_panoptic(tmp_path, "predicted", predictions, truth=False)
    official = evaluatePanoptic(gt_json, gt_folder, pred_json, pred_folder, tmp_path / "official.json")

    quality = PanopticQuality(CATEGORIES)
    listed = json.loads(gt_json.read_text())["annotations"]
    for index, (_, predicted_segments) in enumerate(predictions):
        # Read back from the files, as the official evaluator reads them.
        name = f"{index + 1:04d}.png"
        gt = rgb_to_id(np.asarray(Image.open(gt_folder / name)))
        pred = rgb_to_id(np.asarray(Image.open(pred_folder / name)))
        quality.update(gt, listed[index]["segments_info"], pred, predicted_segments)
    ours = quality.compute()
    for name, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for key in ("pq", "sq", "rq"):
            assert ours[f"{key.upper()}{suffix}"] == pytest.approx(official[name][key], abs=1e-6)
        assert ours[f"n{suffix}"] == official[name]["n"]
    assert 0.2 < ours["PQ"] < 0.95 and ours["n"] == 4  # neither trivial nor degenerate
    for category, scores in ours["per_category"].items():
        for key in ("pq", "sq", "rq"):
            assert scores[key] == pytest.approx(official["per_class"][category][key], abs=1e-6)


def scene_quality(truth: np.ndarray, truth_segments: list, predicted: np.ndarray, predicted_segments: list):
    quality = PanopticQuality(CATEGORIES)
    quality.update(truth, truth_segments, predicted, predicted_segments)
    return quality.compute()


def test_hand_made_predictions_have_their_known_pq():
    """Ground truth as prediction: PQ 100. A missed person: its TP becomes an FN. A car called a person:
    an FN for car and an FP for person. A person split in halves: neither half matches (IoU 0.5 is not
    above 0.5), so one FN and, since neither half lies on void, two FPs."""
    truth = np.ones((20, 20), np.int64)  # road
    truth[:, 10:] = 2  # sky
    truth[2:8, 2:8] = 3  # a person of 36 pixels
    truth[12:18, 12:18] = 4  # a car
    segments = [
        {"id": 1, "category_id": 7, "iscrowd": 0},
        {"id": 2, "category_id": 23, "iscrowd": 0},
        {"id": 3, "category_id": 24, "iscrowd": 0},
        {"id": 4, "category_id": 26, "iscrowd": 0},
    ]
    perfect = scene_quality(truth, segments, truth, segments)
    assert perfect["PQ"] == perfect["SQ"] == perfect["RQ"] == 1 and perfect["n"] == 4

    missed = truth.copy()
    missed[2:8, 2:8] = 1
    result = scene_quality(truth, segments, missed, [s for s in segments if s["id"] != 3])
    # The road (columns 0-9, 200 pixels less the person's 36) takes the person's pixels: 164 / 200.
    road_iou = (200 - 36) / 200
    assert result["per_category"][24] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    assert result["per_category"][7]["pq"] == pytest.approx(road_iou)
    assert result["PQ_th"] == pytest.approx((0 + 1) / 2)

    wrong_class = [dict(s, category_id=24) if s["id"] == 4 else s for s in segments]
    result = scene_quality(truth, segments, truth, wrong_class)
    # person: its own TP and the car as an FP -> 1 / (1 + 0.5); car: one FN -> 0.
    assert result["per_category"][24]["pq"] == pytest.approx(1 / 1.5)
    assert result["per_category"][26]["pq"] == 0.0

    split = truth.copy()
    split[2:8, 5:8] = 5
    result = scene_quality(truth, segments, split, [*segments, {"id": 5, "category_id": 24}])
    assert result["per_category"][24] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    quality = PanopticQuality(CATEGORIES)
    quality.update(truth, segments, split, [*segments, {"id": 5, "category_id": 24}])
    assert quality.counts[list(CATEGORIES).index(24)].tolist() == [0.0, 0.0, 2.0, 1.0]


def test_prediction_files_that_disagree_with_their_segments_are_refused():
    truth = np.zeros((4, 4), np.int64)
    truth[:2] = 1
    segments = [{"id": 1, "category_id": 7, "iscrowd": 0}]
    quality = PanopticQuality(CATEGORIES)
    with pytest.raises(ValueError, match=r"segment ids \[1\] are in the PNG but not in its segments_info"):
        quality.update(truth, segments, truth, [])
    with pytest.raises(ValueError, match=r"segment ids \[2\] are in segments_info but not in the PNG"):
        quality.update(truth, segments, truth, [*segments, {"id": 2, "category_id": 7}])
    with pytest.raises(ValueError, match=r"category ids \[5\]"):
        quality.update(truth, segments, truth, [{"id": 1, "category_id": 5}])


def test_ids_round_trip_through_rgb():
    ids = np.array([[0, 1, 255], [256, 65536, 256**3 - 1]])
    assert np.array_equal(rgb_to_id(id_to_rgb(ids)), ids)
    assert id_to_rgb(np.array([[256 + 2]]))[0, 0].tolist() == [2, 1, 0]


CLASSES = [name for name, _, _ in PANOPTIC_CATEGORIES]
IDS = [category for _, category, _ in PANOPTIC_CATEGORIES]
THINGS = [name for name, _, thing in PANOPTIC_CATEGORIES if thing]


@pytest.mark.parametrize("layout", ["coco", "cityscapes"])
def test_the_reader_derives_semantic_classes_and_thing_instances_from_one_annotation(layout, tmp_path):
    """Each pixel's class index (data.classes order; unlabelled ignored) and one instance per thing
    segment (labels 1..T in data.things order), from the PNG and its segments_info, in both layouts."""
    from segtrain.data.datasets.coco_panoptic import CocoPanoptic

    root = make_panoptic_tree(tmp_path, {"val": 3}, layout=layout)
    paths = (
        {}
        if layout == "coco"
        else {
            "annotation_file": "gtFine/cityscapes_panoptic_{split}.json",
            "segment_dir": "gtFine/cityscapes_panoptic_{split}",
            "image_dir": "leftImg8bit/{split}/{city}/{file_name}",
        }
    )
    dataset = CocoPanoptic(str(root), "val", CLASSES, IDS, THINGS, **paths)
    assert len(dataset) == 3
    for index in range(3):
        item = dataset[index]
        ids, segments = item["meta"]["panoptic"].numpy(), item["meta"]["segments"]
        expected = np.full(ids.shape, 255)
        for segment in segments:
            expected[ids == segment["id"]] = IDS.index(segment["category_id"])
        assert np.array_equal(item["semantic"].numpy(), expected) and (expected == 255).any()
        things = [s for s in segments if s["category_id"] in (11, 12)]
        assert len(item["labels"]) == len(things) > 0
        for segment, label, mask, box in zip(things, item["labels"], item["masks"], item["boxes"]):
            assert label == THINGS.index(CLASSES[IDS.index(segment["category_id"])]) + 1
            assert np.array_equal(mask.numpy().astype(bool), ids == segment["id"])
            x, y, w, h = segment["bbox"]
            assert box.tolist() == [x, y, x + w, y + h]
        assert item["image"].shape == (3, *ids.shape)


def test_the_reader_refuses_an_instances_json_a_missing_png_and_other_things(tmp_path):
    from segtrain.data.datasets.coco_panoptic import CocoPanoptic
    from segtrain.errors import SegtrainError

    root = make_panoptic_tree(tmp_path, {"val": 2})
    annotation = root / "annotations" / "panoptic_val2017.json"
    data = json.loads(annotation.read_text())
    with pytest.raises(SegtrainError, match=r"data\.things=\['disc'\]; list the file's thing classes"):
        CocoPanoptic(str(root), "val", CLASSES, IDS, ["disc"])
    (root / "annotations" / "panoptic_val2017" / data["annotations"][1]["file_name"]).unlink()
    dataset = CocoPanoptic(str(root), "val", CLASSES, IDS, THINGS)
    with pytest.raises(SegtrainError, match=r"the panoptic PNG .*000000000001\.png of image 2 .* is missing"):
        dataset[1]
    instances = {**data, "annotations": [{"id": 1, "image_id": 1, "bbox": [0, 0, 2, 2], "category_id": 11}]}
    annotation.write_text(json.dumps(instances))
    with pytest.raises(SegtrainError, match=r"is a COCO instances file .* Pass the panoptic json"):
        CocoPanoptic(str(root), "val", CLASSES, IDS, THINGS)
    with pytest.raises(SegtrainError, match=r"panoptic_train2017\.json does not exist; cityscapesscripts'"):
        CocoPanoptic(str(root), "train", CLASSES, IDS, THINGS)


def test_scores_are_plain_floats():
    """Scores end up in checkpoints (the training log), which hold plain values only."""
    truth = np.ones((4, 4), np.int64)
    result = scene_quality(
        truth, [{"id": 1, "category_id": 7, "iscrowd": 0}], truth, [{"id": 1, "category_id": 7}]
    )
    assert all(type(result[key]) is float for key in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st"))
    assert all(type(value) is float for value in result["per_category"][7].values())


def test_the_merge_places_things_by_score_then_fills_stuff():
    """Panoptic FPN's merge, by hand on a 10x10 image: A (0.9) is placed whole; B (0.8) has 60% of its
    pixels under A and is dropped; C (0.7) has 30% under A and keeps its free pixels; D (0.3) scores
    below the threshold. Stuff 1 covers the free left half (kept); stuff 2's 10 pixels are below
    stuff_area; "other" pixels no thing took stay unlabelled."""
    from segtrain.tasks.panoptic.merge import merge

    def box(rows, columns):
        mask = np.zeros((1, 10, 10), np.float32)
        mask[0, rows, columns] = 0.9
        return mask

    masks = np.stack(
        [
            box(slice(0, 5), slice(5, 10)),  # A: 25 pixels
            box(slice(0, 3), slice(5, 10)),  # B: 15 pixels, all under A
            box(slice(3, 8), slice(8, 10)),  # C: 10 pixels, 4 under A
            box(slice(8, 10), slice(0, 10)),  # D
        ]
    )
    semantic = np.zeros((10, 10), np.int64)  # "other"
    semantic[:, :5] = 1
    semantic[8:, 5:] = 2
    inference = {"score_threshold": 0.5, "mask_threshold": 0.5, "overlap_threshold": 0.5, "stuff_area": 11}
    labels, scores = np.array([1, 2, 1, 2]), np.array([0.9, 0.8, 0.7, 0.3])
    ids, segments = merge(labels, scores, masks, semantic, [11, 12], [3, 5], inference)

    expected = np.zeros((10, 10), np.int32)
    expected[0:5, 5:10] = 1  # A
    expected[5:8, 8:10] = 2  # C's free pixels
    expected[:, :5] = 3  # stuff 1 (category 3)
    assert np.array_equal(ids, expected)
    assert [(s["id"], s["category_id"], s["area"]) for s in segments] == [(1, 11, 25), (2, 11, 6), (3, 3, 50)]
    assert segments[1]["bbox"] == [8, 5, 2, 3] and segments[0]["score"] == pytest.approx(0.9)


#: A tiny Panoptic FPN on the drawn tree's classes (tests/panoptic.py), on CPU.
TINY = [
    "task=panoptic",
    "data=coco_panoptic",
    f"data.classes={CLASSES}".replace("'", ""),
    f"data.category_ids={IDS}",
    f"data.things={THINGS}".replace("'", ""),
    "data.palette=[[70,130,180],[90,160,60],[220,30,40],[240,220,30]]",
    "data.num_workers=0",
    "model.backbone.name=resnet18",
    "model.backbone.pretrained=false",
    "model.backbone.trainable_layers=5",
    "model.fpn_channels=32",
    "model.semantic_channels=32",
    "model.representation_size=64",
    "model.mask_channels=32",
    "model.min_size=64",
    "model.max_size=96",
    "inference.stuff_area=64",
    "inference.score_threshold=0.05",
    "callbacks.progress_bar=null",
]


@pytest.mark.slow
def test_panoptic_fpn_trains_evaluates_exports_and_predicts_through_the_commands(
    tmp_path, monkeypatch, capsys
):
    """Through the unchanged commands: train, eval (its PQ equals cityscapesscripts' evaluatePanoptic run
    on the files eval wrote, to 1e-6), export to ONNX and TorchScript (detections and semantic logits),
    predict from the checkpoint and from each export (the same segments); a panoptic checkpoint at
    task=semantic is refused."""
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

    from segtrain.cli import main

    root = make_panoptic_tree(tmp_path / "data", {"train": 8, "val": 3})
    monkeypatch.chdir(tmp_path)
    main([*TINY, f"data.root={root}", "trainer.max_epochs=2", "hydra.run.dir=run"])
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"

    main(["eval", f"ckpt={ckpt}", "save_predictions=true", "hydra.run.dir=eval"])
    scores = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    predictions = tmp_path / "eval" / "predictions"
    truth = root / "annotations"
    official = evaluatePanoptic(
        truth / "panoptic_val2017.json",
        truth / "panoptic_val2017",
        predictions / "panoptic.json",
        predictions / "panoptic",
        tmp_path / "official.json",
    )
    for name, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for key in ("pq", "sq", "rq"):
            assert scores[f"{key.upper()}{suffix}"] == pytest.approx(official[name][key], abs=1e-6)
    assert scores["PQ_st"] > 0.2  # the stuff is being learned; the equality above is not of zeros

    main(["export", f"ckpt={ckpt}", f"output={tmp_path / 'model.onnx'}", "hydra.run.dir=export"])
    script = ["format=torchscript", f"output={tmp_path / 'model.pt'}", "hydra.run.dir=script"]
    main(["export", f"ckpt={ckpt}", *script])
    outputs = []
    for source in (ckpt, tmp_path / "model.onnx", tmp_path / "model.pt"):
        out = tmp_path / f"predicted_{source.suffix[1:]}"
        images = root / "val2017"
        main(["predict", f"ckpt={source}", f"input={images}", f"output={out}", f"hydra.run.dir={out}_run"])
        written = json.loads((out / "panoptic.json").read_text())["annotations"]
        outputs.append([np.asarray(Image.open(out / "panoptic" / a["file_name"])) for a in written])
    for exported in outputs[1:]:
        for from_checkpoint, from_export in zip(outputs[0], exported):
            assert (from_checkpoint != from_export).any(-1).mean() < 1e-3

    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["eval", f"ckpt={ckpt}", "task=semantic", "hydra.run.dir=refused"])
    assert (
        "is a panoptic segmentation checkpoint, but the command says task=semantic" in capsys.readouterr().err
    )


def test_check_data_names_what_is_wrong_with_a_panoptic_tree(tmp_path, capsys):
    """A clean tree passes; ids a PNG holds that the json does not list, a listed segment absent from its
    PNG, an area that is not the PNG's and a PNG of another size are each one error with its fix, and a
    thing class without an instance is a warning."""
    from segtrain.commands.check_data import check_data
    from segtrain.config import compose
    from segtrain.errors import SegtrainError

    root = make_panoptic_tree(tmp_path, {"val": 4})
    overrides = [o for o in TINY if o.startswith(("task=", "data."))] + [f"data.root={root}"]
    report = check_data(compose("check_data", overrides))
    assert not report.errors and report.scan["disc"] + report.scan["square"] > 0
    assert capsys.readouterr().out.strip().endswith("OK: no errors found")

    annotation = root / "annotations" / "panoptic_val2017.json"
    data = json.loads(annotation.read_text())
    folder = root / "annotations" / "panoptic_val2017"
    first, second, third = data["annotations"][:3]
    first["segments_info"] = first["segments_info"][:-1]  # its PNG still holds the last segment
    second["segments_info"].append({"id": 250, "category_id": 3, "iscrowd": 0, "area": 1})
    third["segments_info"][0]["area"] += 5
    for entry in data["annotations"]:
        entry["segments_info"] = [s for s in entry["segments_info"] if s["category_id"] != 12]
    annotation.write_text(json.dumps(data))
    png = folder / data["annotations"][3]["file_name"]
    Image.fromarray(np.asarray(Image.open(png))[:-4]).save(png)
    with pytest.raises(SegtrainError, match="check-data found"):
        check_data(compose("check_data", overrides))
    out = capsys.readouterr().out
    assert "PNGs hold segment ids their segments_info does not list" in out
    assert "listed segments are not in their PNG" in out and "(segment 250)" in out
    assert "segments' areas are not their PNG's" in out and "PNGs are not the size of their images" in out
    assert "warning: thing classes without an instance in split val: ['square']" in out
    assert out.count("fix: ") == 4


def tiny_panoptic_fpn(**options):
    import torch

    from segtrain.models.panoptic_fpn import PanopticFPN

    torch.manual_seed(0)
    backbone = {"name": "resnet18", "trainable_layers": 5, "pretrained": False}
    return PanopticFPN(
        4, 2, backbone, fpn_channels=32, semantic_channels=32, representation_size=64, mask_channels=32,
        min_size=64, max_size=96, **options,
    )  # fmt: skip


def test_the_detector_transform_resizes_the_semantic_target_as_it_resizes_the_image():
    """A 60x70 image at min_size 64 / max_size 96 is scaled by min(64/60, 96/70) to 64x74 (floor, as
    torchvision's resize); its semantic target goes to the same size by nearest neighbour, labels kept."""
    import torch
    import torch.nn.functional as F

    model = tiny_panoptic_fpn().train()
    image = torch.rand(3, 60, 70)
    semantic = torch.randint(0, 3, (60, 70), dtype=torch.uint8)
    target = {
        "boxes": torch.tensor([[5.0, 5.0, 30.0, 40.0]]),
        "labels": torch.tensor([1]),
        "semantic": semantic,
    }
    target["masks"] = torch.zeros(1, 60, 70, dtype=torch.uint8)
    batch, targets = model.transform([image], [target])
    scale = min(64 / 60, 96 / 70)
    assert tuple(batch.image_sizes[0]) == (int(60 * scale), int(70 * scale)) == (64, 74)
    expected = F.interpolate(semantic[None, None].float(), size=(64, 74), mode="nearest")[0, 0].byte()
    assert torch.equal(targets[0]["semantic"], expected)


def test_the_semantic_loss_is_the_weighted_cross_entropy_of_the_branch_over_the_padded_batch():
    """loss_semantic = semantic_weight x the per-pixel cross-entropy of the branch's logits, upsampled to the
    padded batch, against each image's resized target with the padding ignored: written out here from the
    model's parts (the trunk is frozen BatchNorm, so the two passes see the same features)."""
    import torch
    import torch.nn.functional as F

    model = tiny_panoptic_fpn(semantic_weight=0.7).train()
    images = [torch.rand(3, 64, 80), torch.rand(3, 50, 60)]
    targets = []
    for image in images:
        masks = torch.zeros(1, *image.shape[-2:], dtype=torch.uint8)
        masks[0, 10:30, 10:30] = 1
        semantic = torch.randint(0, 3, image.shape[-2:], dtype=torch.uint8)
        semantic[:4] = 255  # unlabelled rows
        targets.append({"boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0]]), "labels": torch.tensor([1]),
                        "masks": masks, "semantic": semantic})  # fmt: skip
    losses = model([image.clone() for image in images], [dict(t) for t in targets])
    with torch.no_grad():
        batch, resized = model.transform(images, [dict(t) for t in targets])
        features = model.backbone(batch.tensors)
        logits = model.semantic_branch([features[level] for level in ("0", "1", "2", "3")])
        logits = F.interpolate(logits, size=batch.tensors.shape[-2:], mode="bilinear", align_corners=False)
        truth = torch.full((2, *batch.tensors.shape[-2:]), 255, dtype=torch.long)
        for index, target in enumerate(resized):
            height, width = target["semantic"].shape
            truth[index, :height, :width] = target["semantic"].long()
        pixels = truth != 255
        per_pixel = -logits.log_softmax(1).gather(1, truth.clamp(max=2)[:, None])[:, 0]
        expected = 0.7 * per_pixel[pixels].mean()
    assert tuple(batch.tensors.shape[-2:]) != tuple(batch.image_sizes[1])  # the second image is padded
    assert losses["loss_semantic"].item() == pytest.approx(expected.item(), rel=1e-5)
