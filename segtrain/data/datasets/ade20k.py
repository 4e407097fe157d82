"""ADE20K as released for the MIT Scene Parsing Benchmark (ADEChallengeData2016).

Zhou et al. "Scene Parsing through ADE20K Dataset", CVPR 2017. Annotations store 0 for "other"
and classes 1-150; ``data.reduce_zero_label=true`` ignores 0 and shifts the classes to 0-149.
"""

from __future__ import annotations

from segtrain.data.datasets.base import ImagesAnnotationsDataset


class ADE20K(ImagesAnnotationsDataset):
    layout = (
        "images/{training,validation}/ADE_*.jpg and annotations/{training,validation}/ADE_*.png; "
        "set data.root to ADEChallengeData2016/ (splits: train, val)."
    )
    split_dirs = {"train": "training", "val": "validation"}
