"""Make the bundled ``camvid`` model from a finished training run.

    python3 tools/make_bundled_model.py --run runs/camvid-lite0 --root ../shared/datasets/CamVid
    python3 tools/make_bundled_model.py --root ../shared/datasets/CamVid   # re-export only

1. the run's ``best.pt`` (chosen on CamVid val) becomes ``fcn_deploy/assets/camvid.pt``,
   without optimiser state;
2. it is exported to ``fcn_deploy/assets/camvid.onnx`` (pre-processing and arg-max folded in);
3. the ONNX is scored once on CamVid **test** through ONNX Runtime, exactly as
   ``fcn-deploy eval --model camvid --split test`` does, and that mean IU is written into the
   ONNX metadata (``mean_iu``, with ``extra.mean_iu_split = "test"``; the val score that chose the
   checkpoint stays in ``extra.val_mean_iu``) and into the checkpoint (``test_metrics``).

The recipe and wall time of the run travel inside both files. Without ``--run`` the bundled
checkpoint is kept byte for byte and only steps 2 and 3 run: what to do after the exporter
changes, so the shipped ONNX is what `fcn-deploy export` writes today.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import onnx

from fcn_deploy.converters import onnx_passes
from fcn_deploy.converters.onnx_export import export
from fcn_deploy.converters.resolve import resolve_model
from fcn_deploy.data import build_dataset
from fcn_deploy.fileio import sha256_file
from fcn_deploy.evaluation import BackendPredictor, evaluate, json_safe
from fcn_deploy.runtime.backends import open_backend
from fcn_deploy.runtime.metadata import ModelMetadata
from fcn_deploy.runtime.model_files import bundled_checkpoint, bundled_onnx
from fcn_deploy.training.checkpoint import atomic_save, load_checkpoint

NAME = "camvid"


def training_record(ckpt: dict) -> dict:
    """Epoch, wall time and recipe of the run, with those of the stage it started from
    (``--init-from``, and so on back to the first stage) where those checkpoints are still at
    hand: a recipe of several stages is then reproducible from the metadata alone."""
    record = {"epoch": ckpt.get("epoch"), "wall_time_s": ckpt.get("wall_time_s"), "recipe": ckpt.get("recipe")}
    if "previous_stage" in ckpt:  # a re-export: the bundled checkpoint already carries it
        record["previous_stage"] = ckpt["previous_stage"]
        return record
    start = (ckpt.get("recipe") or {}).get("init_from")
    if start and Path(start).is_file():
        record["previous_stage"] = training_record(load_checkpoint(start))
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="training run folder (holds best.pt); omit to re-export the bundled checkpoint")
    parser.add_argument("--root", required=True, help="CamVid root (SegNet layout)")
    args = parser.parse_args()

    if args.run:
        ckpt = load_checkpoint(Path(args.run) / "best.pt")
        ckpt.pop("training_state", None)
        atomic_save(ckpt, bundled_checkpoint(NAME))
    else:
        ckpt = load_checkpoint(bundled_checkpoint(NAME))

    onnx_path = str(bundled_onnx(NAME))
    export(resolve_model(NAME), onnx_path)

    dataset = build_dataset("camvid", args.root, "test")
    with open_backend(onnx_path, "cpu") as backend:
        scores = evaluate(dataset, BackendPredictor(backend)).scores()
    print(f"CamVid test through ONNX Runtime: mean IU {100 * scores['mean_iu']:.2f}, "
          f"pixel acc {100 * scores['pixel_acc']:.2f}")

    model = onnx.load(onnx_path)
    meta = ModelMetadata.from_props(onnx_passes.get_metadata(model))
    meta.extra.update({
        "mean_iu_split": "test",
        "val_mean_iu": ckpt["metrics"].get("mean_iu"),
        "test_scores": json_safe(scores),
        "training": training_record(ckpt),
    })
    meta.mean_iu = float(scores["mean_iu"])
    if args.run:  # a re-export leaves the checkpoint (and its sha256) alone
        ckpt["test_metrics"] = json_safe(scores)
        if "previous_stage" in meta.extra["training"]:
            ckpt["previous_stage"] = meta.extra["training"]["previous_stage"]
        atomic_save(ckpt, bundled_checkpoint(NAME))
    meta.source["sha256"] = sha256_file(str(bundled_checkpoint(NAME)))
    onnx_passes.set_metadata(model, meta.to_props())
    onnx_passes.save_atomic(model, onnx_path)
    print(f"wrote {bundled_checkpoint(NAME)} and {onnx_path}" if args.run else f"wrote {onnx_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
