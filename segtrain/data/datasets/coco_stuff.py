"""COCO-Stuff 164k: COCO 2017 images with the stuffthingmaps PNG annotations.

Caesar et al. "COCO-Stuff: Thing and Stuff Classes in Context", CVPR 2018. The PNGs store
COCO category id - 1 (0-181) and 255 for unlabelled. Eleven thing ids were never used, leaving 80
things and 91 stuff classes: ``data.label_map=coco_stuff`` maps the 171 to train ids 0-170, in the
order of the class list in conf/data/coco_stuff.yaml.
"""

from __future__ import annotations

from segtrain.data.datasets.base import ImagesAnnotationsDataset

#: COCO category ids 1-91 without the 11 that have no annotations, then the stuff ids 92-182.
_UNUSED_THING_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91}
_CATEGORY_IDS = [i for i in range(1, 92) if i not in _UNUSED_THING_IDS] + list(range(92, 183))
STUFFTHINGMAP_TO_TRAIN_ID = {category_id - 1: train_id for train_id, category_id in enumerate(_CATEGORY_IDS)}


class COCOStuff(ImagesAnnotationsDataset):
    layout = (
        "images/{train2017,val2017}/*.jpg and annotations/{train2017,val2017}/*.png "
        "(stuffthingmaps_trainval2017); "
        "set data.root to the directory holding images/ and annotations/ (splits: train, val)."
    )
    split_dirs = {"train": "train2017", "val": "val2017"}
