"""Pascal VOC 2012 segmentation, read as published, with optional SBD augmentation.

Everingham et al. "The PASCAL Visual Object Classes Challenge", IJCV 2010.
Hariharan et al. "Semantic Contours from Inverse Detectors", ICCV 2011 (SBD; the 10,582-image
``train_aug`` set as DeepLab uses it, with masks converted to SegmentationClassAug/ PNGs).
"""

from __future__ import annotations

from pathlib import Path

from segtrain.data.datasets.base import FileDataset


class VOCSegmentation(FileDataset):
    layout = (
        "VOC2012/JPEGImages/*.jpg, VOC2012/SegmentationClass/*.png (palette PNGs, 255 = ignore), "
        "VOC2012/ImageSets/Segmentation/{train,val}.txt; with aug=true also "
        "SegmentationClassAug/*.png and ImageSets/Segmentation/train_aug.txt. "
        "Set data.root to the VOC2012 directory."
    )
    palette_masks = True

    def __init__(self, root: str | Path, split: str, num_classes: int, aug: bool = False, **kwargs):
        self.aug = aug
        super().__init__(root, split, num_classes, **kwargs)

    def find_samples(self) -> list[tuple[Path, Path]]:
        use_aug = self.aug and self.split == "train"
        list_name = "train_aug" if use_aug else self.split
        mask_dir = self.root / ("SegmentationClassAug" if use_aug else "SegmentationClass")
        rows = self.read_split_list(self.root / "ImageSets" / "Segmentation" / f"{list_name}.txt")
        return [(self.root / "JPEGImages" / f"{row[0]}.jpg", mask_dir / f"{row[0]}.png") for row in rows]
