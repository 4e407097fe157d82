"""Instance segmentation: a box, a class and a mask per object, scored by COCO's box and mask AP
(``task.py``: what the commands ask of it; ``module.py``: its LightningModule)."""
