"""Download, verify and unpack the coco_stuff dataset for segtrain.

python scripts/prepare_coco_stuff.py --root DIR (--help)
"""

from segtrain.data.prepare import main

if __name__ == "__main__":
    main("coco_stuff")
