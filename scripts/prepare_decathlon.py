"""Download, verify and unpack the decathlon dataset for segtrain.

python scripts/prepare_decathlon.py --root DIR (--help)
"""

from segtrain.data.prepare import main

if __name__ == "__main__":
    main("decathlon")
