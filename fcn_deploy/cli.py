"""``fcn-deploy``: one command per workflow.

Each sub-command lives in ``fcn_deploy/commands/NAME.py`` with two functions:
``add_parser(subparsers)`` (argparse only, so ``--help`` stays instant) and ``run(args) -> int``
(which imports torch, onnxruntime or tensorrt inside, only when the command runs).
Every command's parser is built for any call, so every command module imports on the
runtime's oldest Python (3.8) even where the command itself needs PyTorch.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from typing import List, Optional, Tuple

from . import __version__
from .commands import build, check, compare, data, export, models, run, serve, train
from .commands import eval as eval_
from .commands import import_
from .commands._requirements import missing_module_message, require_torch
from .errors import FcnDeployError

# Order is the order shown by --help.
COMMANDS = (run, models, train, eval_, export, import_, build, compare, check, data, serve)
# Commands that run PyTorch whatever they are given; `eval` needs it for a checkpoint only.
TORCH_COMMANDS = frozenset({"models", "train", "export", "import", "compare"})


def _build() -> Tuple[argparse.ArgumentParser, argparse.Action]:
    parser = argparse.ArgumentParser(
        prog="fcn-deploy",
        description="FCN semantic segmentation: train, export to ONNX/TensorRT, run on video.",
    )
    parser.add_argument("--version", action="version", version=f"fcn-deploy {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser, sub


def build_parser() -> argparse.ArgumentParser:
    return _build()[0]


def command_names() -> List[str]:
    """The sub-commands, in --help order (CI runs each one's ``--help`` on every supported Python)."""
    return list(_build()[1].choices)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt.

    Python's default for SIGTERM ends the process on the spot: no ``finally`` runs, so a
    ``train``, ``export`` or ``data`` stopped by ``kill`` or a service manager would leave its
    temporary files and half-made folders behind. Raised as an exception, it unwinds like
    Ctrl-C, and what the command was making is removed. Commands with their own handling
    (``run``'s pipeline, ``serve``) install their own handlers over this one.
    """


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def _sigterm_unwinds():
    """For the duration of a command: SIGTERM raises :class:`Terminated` (where it would otherwise
    kill the process outright), then the previous handler is back."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv or ["run"])
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr
    )
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command in TORCH_COMMANDS:
            require_torch(args.command)
        with _sigterm_unwinds():
            return int(args.func(args) or 0)
    except FcnDeployError as exc:
        print(f"fcn-deploy: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_status", 1))
    except ModuleNotFoundError as exc:  # e.g. `eval` of a checkpoint where only the runtime is installed
        message = missing_module_message(args.command, exc)
        if not message:
            raise
        print(f"fcn-deploy: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        if isinstance(exc, Terminated):
            print("fcn-deploy: stopped by SIGTERM", file=sys.stderr)
            return 128 + signal.SIGTERM
        print("fcn-deploy: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
