"""Semantic segmentation: a class per pixel, scored by mIoU (``task.py``: what the commands ask of it;
``module.py``: its LightningModule)."""
