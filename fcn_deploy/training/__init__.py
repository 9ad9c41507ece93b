"""Training: the loop, schedules, losses, checkpoints and multi-process runs (torch only).

``config`` says what a run is, ``initialization`` sets it up, ``batches`` feeds it and
``loop`` runs it. ``load_checkpoint_model`` needs nothing beyond torch, so export and eval
use it freely; tqdm and matplotlib are imported only by the CLI and by the plot writer.
"""
from .checkpoint import CheckpointError, atomic_save, load_checkpoint, load_checkpoint_model
from .config import TrainConfig, config_for_resume, make_config
from .loop import TrainResult, train

__all__ = [
    "CheckpointError",
    "TrainConfig",
    "TrainResult",
    "atomic_save",
    "config_for_resume",
    "load_checkpoint",
    "load_checkpoint_model",
    "make_config",
    "train",
]
