"""The argument helpers ``train`` and ``eval`` share (``fcn_deploy.commands._args``), parsed as a
user types them: parsing needs no PyTorch, so these run in the Jetson-environment job too."""
from __future__ import annotations

import argparse
import sys

import pytest

from fcn_deploy.cli import build_parser, command_names
from fcn_deploy.commands._args import DATA_ENV, NONE, BooleanOptionalAction, resolve_root, size_or_none
from fcn_deploy.errors import FcnDeployError

pytestmark = pytest.mark.runtime


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_boolean_flags_have_a_no_form_and_default_to_not_given():
    args = parse("train", "--no-flip", "--jitter", "--no-amp")
    assert (args.flip, args.jitter, args.amp, args.channels_last) == (False, True, False, None)


def test_train_help_lists_both_forms(capsys):
    with pytest.raises(SystemExit) as info:
        parse("train", "--help")
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "--flip, --no-flip" in text and "--channels-last, --no-channels-last" in text
    assert "[--flip | --no-flip]" in text or sys.version_info < (3, 9)  # 3.8's usage line shows [--flip]


def test_a_standalone_boolean_action():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fast", action=BooleanOptionalAction, default=True, help="go fast")
    assert parser.parse_args([]).fast is True
    assert parser.parse_args(["--no-fast"]).fast is False
    assert parser.parse_args(["--fast"]).fast is True


def test_sizes_ranges_and_explicit_none():
    args = parse("train", "--crop", "none", "--scale-range", "0.5,2", "--val-size", "96x128")
    assert (args.crop, args.scale_range, args.val_size) == (NONE, (0.5, 2.0), (96, 128))
    args = parse("train", "--crop", "288x384", "--scale-range", "none", "--val-size", "full")
    assert (args.crop, args.scale_range, args.val_size) == ((288, 384), NONE, None)
    assert parse("eval", "--model", "camvid", "--size", "360x480").size == (360, 480)
    assert size_or_none("none") is None


@pytest.mark.parametrize("argv, message", [
    (["train", "--crop", "3x"], "argument --crop: size: bad size '3x'"),
    (["train", "--scale-range", "2,1"], "argument --scale-range: need 0 < LO <= HI"),
    (["train", "--dataset-option", "count"], "argument --dataset-option: expected KEY=VALUE"),
    (["eval", "--model", "camvid", "--size", "0x4"], "argument --size: size: bad size '0x4'"),
])
def test_bad_values_are_argparse_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_resolve_root(tmp_path, monkeypatch):
    (tmp_path / "CamVid").mkdir()
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert resolve_root("camvid", None) == str(tmp_path / "CamVid")
    assert resolve_root("voc_aug", None) == str(tmp_path)
    assert resolve_root("synthetic", None) is None
    with pytest.raises(FcnDeployError, match="dataset root not found"):
        resolve_root("camvid", str(tmp_path / "nope"))
    monkeypatch.delenv(DATA_ENV)
    with pytest.raises(FcnDeployError, match="needs --root DIR"):
        resolve_root("camvid", None)


def test_every_command_is_registered_under_its_module_name():
    names = command_names()
    assert names[0] == "run" and {"models", "train", "eval", "export", "build", "compare"} <= set(names)
    for name in names:
        assert parse(name, *(["--model", "camvid"] if name == "eval" else []),
                     *(["x.onnx"] if name in ("build", "compare", "check", "import") else []),
                     *(["camvid", "--root", "d"] if name == "data" else [])).func.__module__ == \
            f"fcn_deploy.commands.{name}{'_' if name == 'import' else ''}"  # `import` is a keyword
