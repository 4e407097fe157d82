"""Download, verify and unpack the camvid dataset for segtrain.

python scripts/prepare_camvid.py --root DIR (--help)
"""

from segtrain.data.prepare import main

if __name__ == "__main__":
    main("camvid")
