"""Download, verify and unpack the isbi2012 dataset for segtrain.

python scripts/prepare_isbi2012.py --root DIR (--help)
"""

from segtrain.data.prepare import main

if __name__ == "__main__":
    main("isbi2012")
