"""tools/make_bundled_model.py: a recipe of several stages travels with the shipped model."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from fcn_deploy.data import build_dataset  # noqa: E402
from fcn_deploy.models import build_model  # noqa: E402
from fcn_deploy.training import atomic_save, load_checkpoint  # noqa: E402
from fcn_deploy.training.checkpoint import make_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def load_tool():
    spec = importlib.util.spec_from_file_location("make_bundled_model", REPO / "tools" / "make_bundled_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_record_carries_the_stage_the_run_started_from(tmp_path):
    tool = load_tool()
    ds = build_dataset("synthetic", None, "val", size=(40, 56), count=2)
    model = build_model("fcn8s_resnet18", ds.num_classes, width=16)
    first, second = tmp_path / "stage1.pt", tmp_path / "stage2.pt"
    stage1 = {"lr": 0.02, "epochs": 60, "crop": [288, 384]}
    stage2 = {"lr": 0.01, "ema": 0.999, "init_from": str(first)}
    atomic_save(make_checkpoint(model, {"width": 16}, ds, "synthetic", {}, 60, stage1, 100.0), first)
    atomic_save(make_checkpoint(model, {"width": 16}, ds, "synthetic", {}, 16, stage2, 50.0), second)

    record = tool.training_record(load_checkpoint(second))
    assert record["recipe"] == stage2 and record["epoch"] == 16 and record["wall_time_s"] == 50.0
    assert record["previous_stage"] == {"epoch": 60, "wall_time_s": 100.0, "recipe": stage1}

    # Once shipped, the bundled checkpoint carries the earlier stage itself (its file may be gone).
    shipped = load_checkpoint(second)
    shipped["previous_stage"] = record["previous_stage"]
    first.unlink()
    assert tool.training_record(shipped)["previous_stage"]["recipe"] == stage1
    # Without the earlier stage's file (and not shipped yet) nothing is made up.
    assert "previous_stage" not in tool.training_record(load_checkpoint(tmp_path / "stage2.pt"))


def test_training_record_follows_every_stage_back_to_the_first(tmp_path):
    tool = load_tool()
    ds = build_dataset("synthetic", None, "val", size=(40, 56), count=2)
    model = build_model("fcn8s_resnet18", ds.num_classes, width=16)
    paths = [tmp_path / f"stage{i}.pt" for i in (1, 2, 3)]
    recipes = [{"lr": 0.02}, {"lr": 0.01, "init_from": str(paths[0])}, {"lovasz": 1.0, "init_from": str(paths[1])}]
    for i, (path, recipe) in enumerate(zip(paths, recipes)):
        atomic_save(make_checkpoint(model, {"width": 16}, ds, "synthetic", {}, i + 1, recipe, 10.0 * (i + 1)), path)
    record = tool.training_record(load_checkpoint(paths[2]))
    assert record["recipe"] == recipes[2]
    assert record["previous_stage"]["recipe"] == recipes[1]
    assert record["previous_stage"]["previous_stage"] == {"epoch": 1, "wall_time_s": 10.0, "recipe": recipes[0]}
