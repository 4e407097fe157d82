"""segtrain: config-driven segmentation training on Hydra and Lightning."""

import time

__version__ = "0.1.0"

#: When this process imported segtrain: the start of "launch to first training step".
LAUNCHED_AT = time.monotonic()
