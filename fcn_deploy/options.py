"""``KEY=VALUE`` build options from the command line (``--model-option width=16``)."""
from __future__ import annotations

import ast
import json
from typing import Any, Dict, Iterable, List, Tuple

from .errors import FcnDeployError


def parse_value(text: str) -> Any:
    """A Python literal where it is one (``8``, ``(64, 64)``, ``True``), else JSON (``true``),
    else the plain string (``16s``)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_key_value(text: str) -> Tuple[str, Any]:
    """``"drop-connect=0.1"`` -> ``("drop_connect", 0.1)``."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise FcnDeployError(f"expected KEY=VALUE (e.g. width=16), not {text!r}")
    return key, parse_value(value)


def parse_key_values(items: Iterable[str]) -> Dict[str, Any]:
    """Several ``KEY=VALUE`` strings as one dict."""
    return dict(parse_key_value(item) for item in items)


def parse_size(text: str, option: str = "size") -> Tuple[int, int]:
    """``"360x480"`` (height x width) -> ``(360, 480)``; one clear error naming ``option`` otherwise."""
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or min(int(p) for p in parts) < 1:
        raise FcnDeployError(f"{option}: bad size {text!r}; expected HEIGHTxWIDTH with positive integers, e.g. 360x480")
    return int(parts[0]), int(parts[1])


def parse_sizes(text: str, option: str = "sizes") -> List[Tuple[int, int]]:
    """``"97x131,256x256"`` -> ``[(97, 131), (256, 256)]``."""
    return [parse_size(part, option) for part in text.split(",") if part.strip()]
