"""The files panoptic predictions are written as: the COCO panoptic format that panopticapi and
cityscapesscripts read (a PNG of segment ids per image, and one json of their segments)."""

from __future__ import annotations

#: The json beside the predicted PNGs.
PREDICTIONS_JSON = "panoptic.json"


def categories_of(meta: dict) -> list[dict]:
    """The json ``categories`` of a checkpoint's or an export's metadata."""
    things = set(meta["things"])
    return [
        {"id": category, "name": name, "isthing": int(name in things), "color": list(color)}
        for name, category, color in zip(meta["classes"], meta["category_ids"], meta["palette"])
    ]
