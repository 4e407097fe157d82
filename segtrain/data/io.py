"""Reading images and label masks, with errors that name the file and the fix."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segtrain.errors import SegtrainError


def read_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """uint8 HxWxC; raises SegtrainError for unreadable or truncated files."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if channels == 3 else "L")
            array = np.array(img)
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise SegtrainError(
            f"cannot read image {path}: {err}. The file is unreadable or truncated; "
            "re-export it or remove it from the split list."
        ) from err
    return array if array.ndim == 3 else array[:, :, None]


def read_mask(path: str | Path, palette_ok: bool = False) -> np.ndarray:
    """uint8 HxW class ids.

    A palette PNG stores ids as palette indices, which is how VOC publishes its masks
    (``palette_ok``); anywhere else a palette or RGB mask usually means colours were saved
    where ids are expected, which trains silently to a wrong model.
    """
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode in ("RGB", "RGBA") or (mode == "P" and not palette_ok):
                kind = "an RGB" if mode.startswith("RGB") else "a palette (mode P)"
                raise SegtrainError(
                    f"mask {path} is {kind} image, but single-channel class ids are expected. "
                    "Convert it to a grayscale PNG of ids, or map its colours with data.color_map."
                )
            array = np.array(img)
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise SegtrainError(
            f"cannot read mask {path}: {err}. The file is unreadable or truncated; re-export it."
        ) from err
    if array.dtype != np.uint8:
        if array.max(initial=0) > 255:
            raise SegtrainError(f"mask {path} holds ids above 255 ({array.max()}); segtrain masks are 8-bit")
        array = array.astype(np.uint8)
    return array


def check_pair(image: np.ndarray, mask: np.ndarray, mask_path, num_classes: int, ignore_index: int) -> None:
    """Size and value checks that catch a wrongly encoded dataset on its first batches."""
    if image.shape[:2] != mask.shape[:2]:
        raise SegtrainError(
            f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image is "
            f"{image.shape[1]}x{image.shape[0]}; masks must match their images pixel for pixel"
        )
    if mask.max(initial=0) >= num_classes:
        values = np.unique(mask)
        bad = [int(v) for v in values if v >= num_classes and v != ignore_index]
        if bad:
            hint = (
                " It looks like a {0, 255} binary mask: set data.label_map={255: 1}."
                if set(values.tolist()) <= {0, 255}
                else ""
            )
            raise SegtrainError(
                f"mask {mask_path} has label values {bad} >= num_classes={num_classes} "
                f"(ignore_index={ignore_index}).{hint} Fix the masks or data.classes."
            )
