"""Download, verify and unpack the folder dataset for segtrain.

python scripts/prepare_folder.py --root DIR (--help)
"""

from segtrain.data.prepare import main

if __name__ == "__main__":
    main("folder")
