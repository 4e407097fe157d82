"""Segmentation models: plain ``nn.Module``s, one file per paper or family.

Contract: ``forward(x[B,C,H,W]) -> logits[B,K,H,W]`` at input size for any H, W, or
``{"out": logits, "aux": [logits, ...], "aux_weight": paper weights}`` in training mode when the model
has auxiliary heads.
"""
