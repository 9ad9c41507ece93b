"""``fcn-deploy``: one command per workflow.

Each sub-command lives in ``fcn_deploy/commands/NAME.py`` with two functions:
``add_parser(subparsers)`` (argparse only, so ``--help`` stays instant) and ``run(args) -> int``
(which imports torch, onnxruntime or tensorrt inside, only when the command runs).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

from . import __version__
from .errors import FcnDeployError

# Order is the order shown by --help.
COMMANDS = ["run", "models", "train", "eval", "export", "build", "compare", "check"]


def _command_modules():
    for name in COMMANDS:
        try:
            yield importlib.import_module(f"fcn_deploy.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"fcn_deploy.commands.{name}":
                raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcn-deploy",
        description="FCN semantic segmentation: train, export to ONNX/TensorRT, run on video.",
    )
    parser.add_argument("--version", action="version", version=f"fcn-deploy {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        module.add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["run"] if "run" in parser._subparsers._group_actions[0].choices else ["--help"]
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr
    )
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except FcnDeployError as exc:
        print(f"fcn-deploy: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fcn-deploy: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
