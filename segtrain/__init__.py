"""segtrain: config-driven segmentation training on Hydra and Lightning."""

__version__ = "0.1.0"
