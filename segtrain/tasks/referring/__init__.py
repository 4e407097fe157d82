"""Referring segmentation: the mask of the one object an expression names, scored by overall IoU
(``task.py``: what the commands ask of it; ``module.py``: its LightningModule)."""
