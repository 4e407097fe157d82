"""Logger factories for the logger/ config group."""
from __future__ import annotations

import netrc
import os

from pytorch_lightning.loggers import WandbLogger


def wandb_has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger(**kwargs) -> WandbLogger:
    """A WandbLogger that runs offline when no API key is configured or WANDB_MODE=offline."""
    offline = os.environ.get("WANDB_MODE") == "offline" or not wandb_has_api_key()
    return WandbLogger(offline=offline, **kwargs)
