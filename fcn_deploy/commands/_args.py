"""Argument types and groups shared by the sub-commands (``train`` and ``eval`` read datasets alike).

argparse only, and nothing newer than Python 3.8: every command's parser is built for any
``fcn-deploy`` call, so what lives here must import on the runtime's oldest Python (JetPack 5's).
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Callable, Optional, Sequence, Tuple

from ..errors import FcnDeployError
from ..options import parse_key_value, parse_size

DATA_ENV = "FCN_DEPLOY_DATA"
NONE = "none"


def size_or_none(text: str) -> Optional[Tuple[int, int]]:
    """argparse type: ``HxW`` (e.g. ``360x480``) -> (H, W) as :func:`fcn_deploy.options.parse_size`
    reads it; ``none``/``full`` -> None (each image at its own size)."""
    if text.lower() in ("none", "full", ""):
        return None
    try:
        return parse_size(text)
    except FcnDeployError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_range(text: str) -> Optional[Tuple[float, float]]:
    """``LO,HI`` (e.g. ``0.5,2``) -> (LO, HI); ``none`` -> None."""
    if text.lower() in ("none", ""):
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI such as 0.5,2.0, not {text!r}") from None
    if not 0 < lo <= hi:
        raise argparse.ArgumentTypeError(f"need 0 < LO <= HI, not {text!r}")
    return lo, hi


def parse_option(text: str) -> Tuple[str, Any]:
    """argparse type for ``KEY=VALUE`` options."""
    try:
        return parse_key_value(text)
    except FcnDeployError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def or_none(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse``, but the word ``none`` comes back as :data:`NONE` (an explicit "no")."""

    def wrapped(text: str):
        return NONE if text.lower() == NONE else parse(text)

    wrapped.__name__ = parse.__name__
    return wrapped


class BooleanOptionalAction(argparse.Action):
    """``--flag`` / ``--no-flag``, for a setting whose default comes from elsewhere (a preset).

    argparse has its own only from Python 3.9, and every parser is built even for ``run`` on a
    Jetson's Python 3.8; one class on every Python keeps ``--help`` the same everywhere.
    """

    def __init__(self, option_strings: Sequence[str], dest: str, default: Any = None,
                 help: Optional[str] = None, **kwargs: Any) -> None:
        strings = []
        for option in option_strings:
            strings.append(option)
            if option.startswith("--"):
                strings.append("--no-" + option[2:])
        super().__init__(strings, dest, nargs=0, default=default, help=help, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, not (option_string or "").startswith("--no-"))

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def resolve_root(dataset: str, root: Optional[str]) -> Optional[str]:
    """``--root``, else ``$FCN_DEPLOY_DATA/<dataset folder>`` (matched case-insensitively), else
    ``$FCN_DEPLOY_DATA`` itself; ``synthetic`` needs none."""
    if root:
        if os.path.exists(root) and not os.path.isdir(root):
            raise FcnDeployError(f"dataset root {root} is a file; give the dataset's folder")
        if not os.path.isdir(root):
            raise FcnDeployError(f"dataset root not found: {root}")
        return root
    if dataset == "synthetic":
        return None
    base = os.environ.get(DATA_ENV)
    if not base:
        raise FcnDeployError(f"dataset {dataset!r} needs --root DIR (or {DATA_ENV}=DIR holding it)")
    if not os.path.isdir(base):
        raise FcnDeployError(f"{DATA_ENV}={base} is not a directory")
    wanted = {dataset.lower(), dataset.lower().split("_")[0]}
    for entry in sorted(os.listdir(base)):
        if entry.lower() in wanted and os.path.isdir(os.path.join(base, entry)):
            return os.path.join(base, entry)
    return base


def add_data_arguments(p: argparse.ArgumentParser, dataset_required: bool) -> None:
    """``--dataset``, ``--root`` and ``--dataset-option``, as train and eval both take them."""
    p.add_argument("--dataset", required=False, default=None,
                   help="camvid, voc, voc_aug, cityscapes, folder or synthetic" + ("" if dataset_required else
                        " (default: the model's training dataset)"))
    p.add_argument("--root", default=None, help=f"dataset folder (default: from ${DATA_ENV})")
    p.add_argument("--dataset-option", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                   help="extra dataset option, e.g. size=(64,64) count=32 for synthetic; repeatable")
