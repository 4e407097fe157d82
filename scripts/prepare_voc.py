"""Download, verify and unpack the voc dataset for segtrain.

python scripts/prepare_voc.py --root DIR (--help)
"""

from segtrain.data.prepare import main

if __name__ == "__main__":
    main("voc")
