"""Cityscapes fine annotations, read as published (leftImg8bit/ and gtFine/).

Cordts et al. "The Cityscapes Dataset for Semantic Urban Scene Understanding", CVPR 2016.
The masks store 34 label ids; ``data.label_map=cityscapes`` maps the 19 evaluated classes to train
ids 0-18 and the rest to ignore, so no conversion pass (createTrainIdLabelImgs) is needed. Masks
already converted to ``*_gtFine_labelTrainIds.png`` read with ``mask_suffix`` and no label map.
"""

from __future__ import annotations

from pathlib import Path

from segtrain.data.datasets.base import FileDataset

#: cityscapesscripts.helpers.labels: id -> trainId for the 19 classes evaluated; every other id is ignored.
LABEL_ID_TO_TRAIN_ID = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}

IMAGE_SUFFIX = "_leftImg8bit.png"


class Cityscapes(FileDataset):
    layout = (
        "leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png and "
        "gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png. "
        "Set data.root to the directory holding leftImg8bit/ and gtFine/."
    )

    def __init__(
        self,
        root: str | Path,
        split: str,
        num_classes: int,
        mask_suffix: str = "_gtFine_labelIds.png",
        **kwargs,
    ):
        self.mask_suffix = mask_suffix
        super().__init__(root, split, num_classes, **kwargs)

    def find_samples(self) -> list[tuple[Path, Path]]:
        return self.pair_files(
            sorted((self.root / "leftImg8bit" / self.split).glob(f"*/*{IMAGE_SUFFIX}")),
            lambda image: (
                self.root
                / "gtFine"
                / self.split
                / image.parent.name
                / image.name.replace(IMAGE_SUFFIX, self.mask_suffix)
            ),
        )
