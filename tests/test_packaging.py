"""What `pip install` puts in site-packages: `fcn_deploy` and nothing else at the top.

`converters/` lives at the top of the repository (the design card) and installs as
`fcn_deploy.converters` through pyproject's package-dir; `benchmarks/` runs from a checkout.
A generic top-level name (`converters`, `benchmarks`) in every user's site-packages would clash
with any other project that has one.
"""
from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11; the check is about the source tree

REPO = Path(__file__).resolve().parents[1]


def _setuptools_table() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def test_every_package_installs_under_fcn_deploy():
    table = _setuptools_table()
    listed = set(table["packages"])
    assert all(name == "fcn_deploy" or name.startswith("fcn_deploy.") for name in listed), listed
    mapped = table["package-dir"]
    assert mapped == {"fcn_deploy.converters": "converters"}
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "fcn_deploy").rglob("__init__.py")}
    on_disk |= {"fcn_deploy.converters"} if (REPO / "converters" / "__init__.py").is_file() else set()
    assert listed == on_disk, f"pyproject lists {sorted(listed - on_disk)} too many, {sorted(on_disk - listed)} missing"


def test_converters_import_under_the_namespace():
    import fcn_deploy.converters.resolve as resolve

    assert Path(resolve.__file__).resolve().parent == REPO / "converters"
