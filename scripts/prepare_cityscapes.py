"""Download, verify and unpack the cityscapes dataset for segtrain.

python scripts/prepare_cityscapes.py --root DIR (--help)
"""

from segtrain.data.prepare import main

if __name__ == "__main__":
    main("cityscapes")
