"""Panoptic segmentation: every pixel a stuff class or one instance of a thing class, scored by PQ
(``task.py``: what the commands ask of it; ``module.py``: its LightningModule; ``data.py``: its data module;
``merge.py``: detections and semantic map into one segmentation; ``quality.py``: PQ as panopticapi computes
it; ``checks.py``: check-data)."""
