"""Every next step the CLI prints succeeds on the file it was printed for (issue 30).

A user copies the lines under ``next:`` / ``Next steps:`` into a shell. Here a tiny training run's
steps (``eval``, ``export``) are run as printed (split as a shell splits them), then the
``compare`` step that export prints. (``export --int8``'s compare step: tests/test_export_facts.py;
steps that need a camera or TensorRT cannot run here.)
"""
from __future__ import annotations

import shlex
from typing import List

import pytest

from fcn_deploy.cli import main

pytest.importorskip("torch")


def printed_steps(out: str, heading: str) -> List[List[str]]:
    """The commands under ``heading``: indented lines up to the first that is not, comments cut."""
    steps = []
    for line in out.split(heading, 1)[1].splitlines()[1:]:
        if not line.startswith("  "):
            break
        steps.append(shlex.split(line.split("#", 1)[0]))
    assert steps and all(step[0] == "fcn-deploy" for step in steps), out
    return steps


def test_the_steps_train_and_export_print_succeed_as_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--model", "fcn8s_resnet18", "--width", "16", "--dataset", "synthetic",
                 "--dataset-option", "size=(48,64)", "--dataset-option", "count=2", "--batch-size", "2",
                 "--crop", "none", "--scale-range", "none", "--pretrained-backbone", "none", "--no-progress",
                 "--threads", "1", "--no-channels-last", "--epochs", "1", "--out", "runs/tiny"]) == 0
    steps = printed_steps(capsys.readouterr().out, "next:")
    assert [step[:2] for step in steps] == [["fcn-deploy", "eval"], ["fcn-deploy", "export"]], steps
    assert main(steps[0][1:]) == 0
    assert "mean IU" in capsys.readouterr().out
    assert main(steps[1][1:]) == 0
    compares = [s for s in printed_steps(capsys.readouterr().out, "Next steps:") if s[1] == "compare"]
    assert compares == [["fcn-deploy", "compare", "model.onnx"]]
    assert main(compares[0][1:]) == 0
    assert "PASSED" in capsys.readouterr().out
