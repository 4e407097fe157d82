"""Label images to COCO instances json (one instance per connected region of the chosen values).

python scripts/labels_to_coco.py --images DIR --labels DIR --categories 255:cell --output FILE.json
  ISBI 2012:  --images image --labels label --categories 255:cell
  CamVid:     --images train --labels trainannot --categories 8:car,9:pedestrian --min-area 20
Then: segtrain task=instance data=instances_folder data.root=... data.annotation_file=... data.image_dir=...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segtrain.data.labels_to_coco import convert
from segtrain.errors import SegtrainError


def parse_categories(text: str) -> dict[int, str]:
    try:
        pairs = [item.split(":", 1) for item in text.split(",")]
        return {int(value): name for value, name in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected VALUE:NAME[,VALUE:NAME...], e.g. 8:car,9:pedestrian"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=Path, required=True, help="directory of images")
    parser.add_argument("--labels", type=Path, required=True, help="directory of label images (same stems)")
    parser.add_argument("--categories", type=parse_categories, required=True, help="VALUE:NAME,...")
    parser.add_argument("--output", type=Path, required=True, help="the json to write")
    parser.add_argument("--min-area", type=int, default=10, help="smaller regions are left out (pixels)")
    parser.add_argument("--connectivity", type=int, default=4, choices=(4, 8))
    args = parser.parse_args()
    try:
        data = convert(
            args.images, args.labels, args.categories, args.output, args.min_area, args.connectivity
        )
    except SegtrainError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {args.output}: {len(data['images'])} images, {len(data['annotations'])} instances")


if __name__ == "__main__":
    main()
