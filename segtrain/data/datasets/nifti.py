"""3D NIfTI volumes in the Medical Segmentation Decathlon layout (imagesTr/, labelsTr/, dataset.json).

Antonelli et al. "The Medical Segmentation Decathlon", Nature Communications 2022. Only the
training cases carry labels, so train and val are folds of them: case i is in val when
i % num_folds == fold, as a 5-fold cross-validation does (nnU-Net).

Volumes are read with nibabel and returned as DxHxWxC float32 (NIfTI's x, y, z reversed to
z, y, x), normalised per modality as nnU-Net does: CT is clipped to its 0.5-99.5 percentiles and
standardised; MR and other modalities are standardised over their non-zero voxels. Training
patches come from albumentations' 3D transforms (PadIfNeeded3D, RandomCrop3D) in the data config.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from segtrain.data.datasets.base import SegmentationDataset
from segtrain.errors import SegtrainError

LAYOUT = (
    "dataset.json, imagesTr/<case>.nii.gz and labelsTr/<case>.nii.gz as listed under 'training' in "
    "dataset.json; set data.root to the task folder, e.g. Task09_Spleen/."
)


def read_volume(path: Path) -> np.ndarray:
    """z, y, x[, channel] array of a NIfTI file, with the file named in the error when it cannot be read."""
    import nibabel as nib

    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as err:
        raise SegtrainError(
            f"cannot read volume {path}: {err}. Re-export it or remove it from dataset.json"
        ) from err
    order = (2, 1, 0, 3) if data.ndim == 4 else (2, 1, 0)
    return np.ascontiguousarray(data.transpose(order))


def normalize(volume: np.ndarray, modality: str) -> np.ndarray:
    volume = volume.astype(np.float32)
    if modality.upper() == "CT":
        low, high = np.percentile(volume, [0.5, 99.5])
        volume = volume.clip(low, high)
        values = volume
    else:
        values = volume[volume != 0] if np.any(volume) else volume
    return ((volume - values.mean()) / max(float(values.std()), 1e-8)).astype(np.float32)


class DecathlonDataset(SegmentationDataset):
    layout = LAYOUT

    def __init__(
        self, root: str | Path, split: str, num_classes: int, fold: int = 0, num_folds: int = 5, **kwargs
    ):
        super().__init__(split, num_classes, **kwargs)
        self.root = Path(root)
        manifest = self.root / "dataset.json"
        if not manifest.is_file():
            raise SegtrainError(f"{manifest} does not exist. Expected layout: {LAYOUT}")
        info = json.loads(manifest.read_text())
        self.modalities = [info.get("modality", {}).get(str(i), "MR") for i in range(self.in_channels)]
        cases = sorted(info.get("training", []), key=lambda case: case["image"])
        if split != "all":
            if split not in ("train", "val"):
                raise SegtrainError(
                    f"split '{split}': a Decathlon task has train and val folds (and all); "
                    "set data.split / data.val_split to one of them"
                )
            cases = [case for i, case in enumerate(cases) if (i % num_folds == fold) == (split == "val")]
        self.samples = [(self.root / case["image"], self.root / case["label"]) for case in cases]
        if not self.samples:
            raise SegtrainError(f"split '{split}' (fold {fold} of {num_folds}) of {manifest} is empty")

    def __len__(self) -> int:
        return len(self.samples)

    def save_prediction(self, ids: np.ndarray, meta: dict, directory: Path, palette) -> Path:
        """``<case>.nii.gz`` on the label volume's voxel grid, with its affine and header, as the
        Decathlon's evaluation reads predictions."""
        import nibabel as nib

        label = nib.load(meta["mask_path"])
        path = directory / f"{meta['name']}.nii.gz"
        volume = nib.Nifti1Image(self.encoding.inverse(ids).transpose(2, 1, 0), label.affine, label.header)
        volume.set_data_dtype(np.uint8)
        nib.save(volume, str(path))
        return path

    def read_raw(self, index: int) -> tuple[np.ndarray, np.ndarray, dict]:
        image_path, label_path = self.samples[index]
        volume = read_volume(image_path)
        if volume.ndim == 3:
            volume = volume[..., None]
        if volume.shape[-1] != self.in_channels:
            raise SegtrainError(
                f"volume {image_path} has {volume.shape[-1]} channels but data.in_channels={self.in_channels}"
            )
        image = np.stack([normalize(volume[..., c], m) for c, m in enumerate(self.modalities)], axis=-1)
        label = read_volume(label_path)
        if label.min() < 0 or label.max() > 255:
            raise SegtrainError(f"label volume {label_path} holds values outside 0..255")
        name = image_path.name.removesuffix(".gz").removesuffix(".nii")
        return (
            image,
            label.astype(np.uint8),
            {"name": name, "path": str(image_path), "mask_path": str(label_path)},
        )
