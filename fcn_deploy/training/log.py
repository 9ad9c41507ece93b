"""The per-epoch record of a run: ``log.csv``, ``log.json`` and ``curves.png`` in the run folder.

Each row holds the epoch, iterations so far, mean training loss, learning rate, the
validation metrics (where the epoch was validated) and wall time. The history is also
stored in ``last.pt`` so that a resumed run rewrites the same files as an uninterrupted one.
"""
from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, List

from ..errors import FcnDeployError
from ..fileio import atomic_write, write_failure

log = logging.getLogger(__name__)

RECORD_FILES = ("log.csv", "log.json", "curves.png")  # what write_history writes into the run folder
COLUMNS = ["epoch", "iteration", "loss", "lr", "pixel_acc", "mean_acc", "mean_iu", "fw_iu", "epoch_time_s", "wall_time_s"]


def _plain(value: Any) -> Any:
    """JSON-safe value: nan and inf become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def write_history(run_dir: Path, history: List[Dict[str, Any]], plot: bool = True) -> None:
    """Rewrite the CSV, JSON and (optionally) PNG records of ``history`` (one dict per epoch).

    A write that fails (a full disk) is one :class:`~fcn_deploy.errors.FcnDeployError` line;
    each file is left as it was."""
    try:
        _write_history(Path(run_dir), history, plot)
    except OSError as exc:
        raise FcnDeployError(f"cannot write the training record in {run_dir}: {write_failure(exc)}") from None


def _write_history(run_dir: Path, history: List[Dict[str, Any]], plot: bool) -> None:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lines: List[str] = []

    class _Sink:
        def write(self, s: str) -> None:
            lines.append(s)

    writer = csv.DictWriter(_Sink(), fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS})
    atomic_write(run_dir / "log.csv", "".join(lines))
    atomic_write(
        run_dir / "log.json", json.dumps([{k: _plain(v) for k, v in row.items()} for row in history], indent=1) + "\n"
    )
    if plot:
        try:
            plot_history(history, run_dir / "curves.png")
        except ImportError:
            log.warning("matplotlib is not installed: no curves.png (pip install matplotlib)")


def plot_history(history: List[Dict[str, Any]], path: Path) -> None:
    """Training loss and validation mean IU per epoch, side by side, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    losses = [r.get("loss") for r in history]
    val = [(r["epoch"], r["mean_iu"]) for r in history if r.get("mean_iu") is not None]
    fig, (ax_loss, ax_iu) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, losses, marker=".")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_title("loss")
    ax_loss.grid(True, alpha=0.3)
    if val:
        ax_iu.plot([e for e, _ in val], [100.0 * v for _, v in val], marker="o", color="tab:green")
    ax_iu.set_xlabel("epoch")
    ax_iu.set_ylabel("validation mean IU (%)")
    ax_iu.set_title("mean IU")
    ax_iu.grid(True, alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=80))
    plt.close(fig)
