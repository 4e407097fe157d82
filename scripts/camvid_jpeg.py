"""CamVid as the SegNet paper used it (``../shared/data/camvid``: ``{train,val}/*.png`` and
``{train,val}annot/*.png``) in ``data=folder``'s layout with JPEG images (``images/{split}/*.jpg``, masks as
published in ``masks/{split}/*.png``): the real data of ``scripts/gpu_check.sh``. JPEGs at quality 95 are
about a third of the PNGs, so the whole set travels to the GPU machine.

    python scripts/camvid_jpeg.py SOURCE TARGET [--size N] [--count N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image


def convert(source: Path, target: Path, size: int | None = None, count: int | None = None) -> int:
    """Writes the train and val splits (the first ``count`` images of each, resized to ``size`` square if
    given); returns how many images were written."""
    written = 0
    for split in ("train", "val"):
        images = sorted((source / split).glob("*.png"))[:count]
        if not images:
            raise SystemExit(f"camvid_jpeg: no PNG images in {source / split}; pass CamVid's root as SOURCE")
        for kind in ("images", "masks"):
            (target / kind / split).mkdir(parents=True, exist_ok=True)
        for path in images:
            image = Image.open(path).convert("RGB")
            mask = Image.open(source / f"{split}annot" / path.name)
            if size:
                image, mask = image.resize((size, size)), mask.resize((size, size), Image.NEAREST)
            image.save(target / "images" / split / f"{path.stem}.jpg", quality=95)
            mask.save(target / "masks" / split / path.name)
            written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--size", type=int, help="resize to SIZE x SIZE (default: as published, 360x480)")
    parser.add_argument("--count", type=int, help="the first COUNT images of each split (default: all)")
    args = parser.parse_args()
    print(f"{convert(args.source, args.target, args.size, args.count)} images in {args.target}")


if __name__ == "__main__":
    main()
