"""ReferIt, RefCOCO, RefCOCO+ and RefCOCOg in the layout of the ``refer`` toolkit (Licheng Yu's API):

    data.root/
      refcoco/refs(unc).p          # refs: ref_id, ann_id, image_id, split, sentences [{"sent", ...}]
      refcoco/instances.json       # COCO instances: images, annotations (polygons or RLE), categories
      images/mscoco/images/train2014/COCO_train2014_000000000009.jpg
      refclef/refs(berkeley).p, refclef/instances.json, images/saiapr_tc-12/...   (ReferIt)

Each sentence of a ref is one item: the image, the sentence, and the mask of the ref's annotation.
``dataset``/``split_by`` pick the refs file (refcoco: unc or google; refcoco+: unc; refcocog: umd or
google; refclef: berkeley or unc); splits are the refs' own (train, val, test, testA, testB).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from segtrain.data.datasets.coco_instances import decode_mask
from segtrain.data.io import read_image
from segtrain.data.referring import ReferringDataset
from segtrain.errors import SegtrainError

LAYOUT = (
    "data.root/<dataset>/refs(<split_by>).p and data.root/<dataset>/instances.json (the refer toolkit's "
    "data folder), images under data.root/<image_dir>"
)


def load_refs(path: Path) -> list[dict]:
    if not path.is_file():
        raise SegtrainError(f"{path} does not exist. Expected layout: {LAYOUT}")
    try:
        with open(path, "rb") as handle:
            # The toolkit's refs files are Python 2 pickles: latin1 reads their byte strings.
            refs = pickle.load(handle, encoding="latin1")
    except Exception as err:
        raise SegtrainError(
            f"{path} is not a readable refs pickle ({type(err).__name__}: {str(err)[:120]}); it comes "
            "from the refer toolkit's data download"
        ) from None
    if not isinstance(refs, list) or (
        refs and not {"ann_id", "image_id", "split", "sentences"} <= set(refs[0])
    ):
        raise SegtrainError(
            f"{path} does not hold refer-toolkit refs (a list of dicts with ann_id, image_id, split and "
            "sentences)"
        )
    return refs


def load_instances(path: Path) -> dict:
    if not path.is_file():
        raise SegtrainError(f"{path} does not exist. Expected layout: {LAYOUT}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {
            "images": {image["id"]: image for image in data["images"]},
            "annotations": {ann["id"]: ann for ann in data["annotations"]},
        }
    except (ValueError, KeyError, TypeError) as err:
        raise SegtrainError(
            f"{path} is not a COCO instances json with images and annotations ({type(err).__name__}: "
            f"{str(err)[:120]})"
        ) from None


class Refer(ReferringDataset):
    layout = LAYOUT

    def __init__(
        self,
        root: str,
        split: str,
        dataset: str = "refcoco",
        split_by: str = "unc",
        image_dir: str = "images/mscoco/images/train2014",
        **kwargs,
    ):
        super().__init__(split, **kwargs)
        self.root = Path(root)
        folder = self.root / dataset
        refs_path = folder / f"refs({split_by}).p"
        refs = load_refs(refs_path)
        instances = load_instances(folder / "instances.json")
        self.images, self.annotations = instances["images"], instances["annotations"]
        self.image_dir = self.root / image_dir
        chosen = [ref for ref in refs if ref["split"] == split]
        if not chosen:
            found = sorted({str(ref["split"]) for ref in refs})
            raise SegtrainError(
                f"{refs_path} has no refs in split '{split}'; its splits are {', '.join(found)}. Set "
                "data.train_split / data.val_split / data.split to those"
            )
        missing = [ref["ann_id"] for ref in chosen if ref["ann_id"] not in self.annotations]
        if missing:
            raise SegtrainError(
                f"{len(missing)} refs of split '{split}' in {refs_path} name annotations that "
                f"{folder / 'instances.json'} lacks (e.g. ann_id {missing[0]}): the two files come from "
                "different datasets"
            )
        #: (ref, sentence) per item.
        self.items = [(ref, sentence["sent"]) for ref in chosen for sentence in ref["sentences"]]

    def __len__(self) -> int:
        return len(self.items)

    def expressions(self) -> list[str]:
        return [sentence for _, sentence in self.items]

    def read_raw(self, index: int) -> tuple[np.ndarray, np.ndarray, dict]:
        ref, sentence = self.items[index]
        info = self.images[ref["image_id"]]
        path = self.image_dir / info["file_name"]
        if not path.is_file():
            raise SegtrainError(
                f"{path} (image {ref['image_id']} of ref {ref.get('ref_id')}) does not exist. "
                f"Expected layout: {LAYOUT}"
            )
        image = read_image(path, self.in_channels)
        annotation = self.annotations[ref["ann_id"]]
        try:
            mask = decode_mask(annotation["segmentation"], image.shape[0], image.shape[1])
        except Exception as err:
            raise SegtrainError(
                f"annotation {ref['ann_id']} (ref {ref.get('ref_id')}) has no segmentation pycocotools can "
                f"decode ({type(err).__name__}: {str(err)[:100]})"
            ) from None
        meta = {
            "name": f"{ref.get('ref_id', index)}_{index}",
            "expression": sentence,
            "image_path": str(path),
            "ref_id": ref.get("ref_id"),
        }
        return image, mask, meta
