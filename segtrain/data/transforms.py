"""Augmentation pipelines: albumentations transforms listed in the data config.

albumentations draws from its own generator, which ``seed_everything`` does not reach: each pipeline is
seeded from the run's ``seed``, and each DataLoader worker re-seeds it from the seed torch gave that
worker, so runs repeat and workers do not draw the same augmentations.

Evaluation pipelines also report where each image's original extent lies in the transformed image,
so that predictions can be mapped back and scored against the annotation at its own size, as the
official evaluation tools score (``segtrain.inference.to_original_size``). albumentations moves
keypoints with the image exactly, so the two opposite corners of the image travel through the
pipeline as keypoints.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import albumentations as A
import numpy as np
import torch

from segtrain.errors import SegtrainError

#: Per spatial axis (D, H, W or H, W), the ``(start, stop)`` pixels that the original image covers in
#: the transformed one.
Region = tuple[tuple[int, int], ...]


def _flatten(transforms: Sequence) -> Iterator[A.BasicTransform]:
    for transform in transforms:
        yield transform
        yield from _flatten(getattr(transform, "transforms", ()))


def compose(
    transforms: Sequence[A.BasicTransform] | None,
    seed: int | None = None,
    track_extent: bool = False,
    boxes: bool = False,
) -> A.Compose | None:
    """One albumentations pipeline over ``image`` and ``mask``; None when the list is empty.

    ``track_extent``: the pipeline also carries the image corners as keypoints (see ``transform_item``);
    only pipelines that move pixels need them. ``boxes``: it also moves xyxy boxes (with ``labels`` and
    their ``indices``) and drops those that leave the image or keep less than a pixel of area.
    """
    if not transforms:
        return None
    if boxes:
        box_params = A.BboxParams(
            format="pascal_voc", label_fields=["labels", "indices"], min_area=1.0, clip=True
        )
        return A.Compose(list(transforms), seed=seed, bbox_params=box_params)
    geometric = [t for t in _flatten(transforms) if isinstance(t, A.DualTransform)]
    keypoints = None
    if track_extent and geometric:
        volumetric = any(isinstance(t, A.Transform3D) for t in geometric)
        keypoints = A.KeypointParams(format="xyz" if volumetric else "xy", remove_invisible=False)
    return A.Compose(list(transforms), seed=seed, keypoint_params=keypoints)


def _axis_ends(shape: Sequence[int]) -> np.ndarray:
    """The origin and the far end of each axis of spatial ``shape``, as x, y[, z] keypoints."""
    xyz = list(reversed(shape))
    return np.array(
        [[0.0] * len(xyz)]
        + [[n if i == axis else 0.0 for i, n in enumerate(xyz)] for axis in range(len(xyz))],
        np.float32,
    )


def transform_item(
    transform: A.Compose | None, image: np.ndarray, mask: np.ndarray | None, original_mask: bool
) -> tuple[np.ndarray, np.ndarray | None, Region]:
    """Applies ``transform`` to a channel-last image (HxWxC, or DxHxWxC volume) and its mask.

    ``original_mask``: the mask stays as annotated, for scoring at the image's own resolution; the
    returned region says where the original image lies in the transformed one.
    """
    spatial = image.shape[:-1]
    if transform is None:
        return image, mask, tuple((0, n) for n in spatial)
    volumetric = len(spatial) == 3
    targets = {"volume" if volumetric else "image": image}
    if mask is not None and not original_mask:
        targets["mask3d" if volumetric else "mask"] = mask
    tracked = original_mask and "keypoints" in transform.processors
    if tracked:
        targets["keypoints"] = _axis_ends(spatial)
    out = transform(**targets)
    image = out["volume" if volumetric else "image"]
    if mask is not None and not original_mask:
        mask = out["mask3d" if volumetric else "mask"]
    if not tracked:
        return image, mask, tuple((0, n) for n in image.shape[:-1])
    return image, mask, _region(out["keypoints"], image.shape[:-1])


def _region(points: np.ndarray, shape: Sequence[int]) -> Region:
    # Resizes, pads and crops of whole-pixel images place the image's extent on whole pixels;
    # albumentations scales keypoints by the requested factor, before the size is rounded.
    points = np.rint(np.asarray(points)[:, ::-1]).astype(int)  # x, y[, z] -> [z,] y, x
    origin, ends = points[0], points[1:][::-1]
    region = tuple((int(origin[axis]), int(ends[axis][axis])) for axis in range(len(shape)))
    moved_off_axis = any(
        (np.delete(end, axis) != np.delete(origin, axis)).any() for axis, end in enumerate(ends)
    )
    if moved_off_axis or any(
        start >= stop or start < 0 or stop > size for (start, stop), size in zip(region, shape)
    ):
        raise SegtrainError(
            f"data.val_transforms crop, flip or rotate the image (its extent {list(map(list, region))} in "
            f"the transformed {list(shape)} image), so predictions cannot be mapped back onto the whole "
            "annotation. Evaluate with resizes and pads only, or score at the transformed size with "
            "inference.score_resolution=transformed"
        )
    return region


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: Lightning's seeding of numpy / random / torch, then the dataset's pipeline."""
    from lightning_fabric.utilities.seed import pl_worker_init_function

    pl_worker_init_function(worker_id)
    dataset = torch.utils.data.get_worker_info().dataset
    transform = getattr(dataset, "transform", None)
    if transform is not None:
        transform.set_random_seed(torch.initial_seed() % 2**32)
