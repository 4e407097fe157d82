"""Reading images and label masks, with errors that name the file and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segtrain.errors import SegtrainError

#: File suffixes read as images (prediction inputs, folder datasets).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(directory: Path) -> list[Path]:
    """The image files directly in ``directory``, sorted by name."""
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


class UnreadableFileError(SegtrainError):
    """An image or mask that cannot be decoded."""


class MaskModeError(SegtrainError):
    """A colour or palette mask where single-channel class ids are expected.

    Constructed from the message alone, as DataLoader workers re-raise exceptions."""

    @classmethod
    def for_file(cls, path, mode: str) -> "MaskModeError":
        kind = "an RGB" if mode.startswith("RGB") else "a palette (mode P)"
        return cls(
            f"mask {path} is {kind} image, but single-channel class ids are expected. Convert it to a "
            "grayscale PNG of ids, or map its colours with data.color_map (e.g. data.color_map=palette)."
        )


def read_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """uint8 HxWxC; raises SegtrainError for unreadable or truncated files."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if channels == 3 else "L")
            array = np.array(img)
    except FileNotFoundError:
        raise UnreadableFileError(
            f"image {path} is missing; restore it or remove it from the split"
        ) from None
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise UnreadableFileError(
            f"cannot read image {path}: {err}. The file is unreadable or truncated; "
            "re-export it or remove it from the split list."
        ) from err
    return array if array.ndim == 3 else array[:, :, None]


def read_mask(path: str | Path, palette_ok: bool = False, colors: bool = False) -> np.ndarray:
    """uint8 HxW of stored values, or HxWx3 RGB when ``colors`` (masks coded by colour).

    A palette PNG stores ids as palette indices, which is how VOC publishes its masks
    (``palette_ok``); anywhere else a palette or RGB mask usually means colours were saved
    where ids are expected, which trains silently to a wrong model.
    """
    try:
        with Image.open(path) as img:
            if colors:
                return np.array(img.convert("RGB"))
            if img.mode in ("RGB", "RGBA") or (img.mode == "P" and not palette_ok):
                raise MaskModeError.for_file(path, img.mode)
            array = np.array(img)
    except FileNotFoundError:
        raise UnreadableFileError(
            f"mask {path} is missing; restore it or remove its image from the split"
        ) from None
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise UnreadableFileError(
            f"cannot read mask {path}: {err}. The file is unreadable or truncated; re-export it."
        ) from err
    if array.dtype != np.uint8:
        if array.max(initial=0) > 255:
            raise SegtrainError(f"mask {path} holds ids above 255 ({array.max()}); segtrain masks are 8-bit")
        array = array.astype(np.uint8)
    return array


def output_names(inputs: list[Path]) -> dict[Path, str]:
    """The mask name of each input: its stem, or its whole name where stems collide (a.png, a.jpg)."""
    stems: dict[str, int] = {}
    for path in inputs:
        stems[path.stem] = stems.get(path.stem, 0) + 1
    names: dict[Path, str] = {}
    for path in inputs:
        name = path.stem if stems[path.stem] == 1 else path.name.replace(".", "_")
        while name in names.values():  # a.png, a.jpg beside an a_png.png
            name += "_"
        names[path] = name
    return names
