"""Download, verify and unpack the ade20k dataset for segtrain.

python scripts/prepare_ade20k.py --root DIR (--help)
"""

from segtrain.data.prepare import main

if __name__ == "__main__":
    main("ade20k")
