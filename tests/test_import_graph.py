"""No import circles anywhere in fcn_deploy, its converters included.

A circle makes the import order decide what works: the module imported first sees the other
half-initialised. The model families export tables that one zoo module merges; nothing a
family imports may lead back to the zoo. Read from the source with ``ast`` (every import
statement, those inside functions too: a lazy import that closes a circle is still a
circle), so the check holds without importing anything. ``fcn_deploy.converters`` is the
repository's ``converters/`` folder (pyproject's package-dir), so it is read from there.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest

import fcn_deploy

ROOT = Path(fcn_deploy.__file__).resolve().parent.parent
# Installed package -> its folder in the checkout, where it differs from the package's name.
FOLDERS = {"fcn_deploy.converters": ROOT / "converters"}


def folder_of(package: str) -> Path:
    return FOLDERS.get(package, ROOT.joinpath(*package.split(".")))


def module_name(path: Path, package: str) -> str:
    parts = package.split(".") + list(path.relative_to(folder_of(package)).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(package: str, recursive: bool = False) -> Dict[str, Path]:
    """Module name -> file of every module in ``package`` (and, ``recursive``, its subpackages
    except those :data:`FOLDERS` maps elsewhere, which are read from their own folder)."""
    folder = folder_of(package)
    files = folder.rglob("*.py") if recursive else folder.glob("*.py")
    modules = {module_name(p, package): p for p in sorted(files)}
    if recursive:
        for name, other in FOLDERS.items():
            if name.startswith(package + "."):
                modules.update(package_modules(name, recursive=True))
    return modules


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> Optional[str]:
    """The absolute module an ``import from`` names (relative ones resolved against ``module``)."""
    if node.level == 0:
        return node.module
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, known: Set[str]) -> Set[str]:
    """The modules of ``known`` that ``module`` imports (a package's ``__init__`` counts as
    the package when a name is taken from it)."""
    found: Set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = resolve(module, path.name == "__init__.py", node)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != module)
    return found


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One cycle of ``graph`` as a path that ends where it starts, or None."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def import_graph(package: str, recursive: bool = False) -> Dict[str, Set[str]]:
    modules = package_modules(package, recursive)
    return {m: imports_of(m, p, set(modules)) for m, p in modules.items()}


@pytest.mark.parametrize("package", ["fcn_deploy.models", "fcn_deploy.training"])
def test_package_has_no_import_circle(package):
    graph = import_graph(package)
    assert len(graph) > 3  # the package was found and read
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def top_level_imports(path: Path) -> List[str]:
    """The modules a file imports when it is imported (not those inside functions)."""
    names = []
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    return names


def test_fcn_deploy_and_its_converters_have_no_import_circle():
    """Across every package, from the CLI down to the converters (a circle may run through
    several packages: the runtime and the converters import each other's modules).

    The root package is the public facade: its ``__init__`` re-exports ``Segmenter``,
    ``export`` and ``train`` from the modules below it when first used (PEP 562), and imports
    nothing of ours when imported, so a module that reads ``fcn_deploy.__version__`` leans on
    a package that is complete. Edges into the root are left out for that reason, and the
    reason is checked: a top-level import in the root would put them back.
    """
    root_imports = top_level_imports(ROOT / "fcn_deploy" / "__init__.py")
    assert not [name for name in root_imports if name.startswith((".", "fcn_deploy"))], root_imports
    graph = import_graph("fcn_deploy", recursive=True)
    graph = {module: targets - {"fcn_deploy"} for module, targets in graph.items()}
    for module in ("fcn_deploy.cli", "fcn_deploy.runtime.pipeline", "fcn_deploy.runtime.backends.openvino",
                   "fcn_deploy.converters.tensorrt_check", "fcn_deploy.converters.tensorrt_dla"):
        assert module in graph  # every folder was read, converters/ under its installed name
    assert "fcn_deploy.converters.tensorrt_graph" in graph["fcn_deploy.converters.tensorrt_dla"]
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_check_reads_imports_across_packages():
    """An absolute import of a converters module from a command (inside a function), and a
    relative one within the converters, both land on the installed names."""
    graph = import_graph("fcn_deploy", recursive=True)
    assert "fcn_deploy.converters.tensorrt_shapes" in graph["fcn_deploy.commands.build"]
    assert "fcn_deploy.converters.tensorrt_operators" in graph["fcn_deploy.converters.tensorrt_rules"]


def test_families_do_not_import_the_zoo():
    graph = import_graph("fcn_deploy.models")
    zoo = graph["fcn_deploy.models.zoo"]
    families = {"fcn_deploy.models.vgg", "fcn_deploy.models.resnet", "fcn_deploy.models.efficientnet_lite"}
    assert families <= zoo  # the zoo merges every family's table
    for family in families:
        assert "fcn_deploy.models.zoo" not in graph[family]
        assert "fcn_deploy.models" not in graph[family]  # nor the package, which imports the zoo


def test_the_check_finds_a_circle(tmp_path):
    """The old shape, a registry that imports the families that import it, is caught."""
    (tmp_path / "registry.py").write_text("def build():\n    from . import vgg\n")
    (tmp_path / "vgg.py").write_text("from .registry import build\n")
    known = {"pkg.registry", "pkg.vgg"}
    graph = {"pkg.registry": imports_of("pkg.registry", tmp_path / "registry.py", known),
             "pkg.vgg": imports_of("pkg.vgg", tmp_path / "vgg.py", known)}
    assert graph == {"pkg.registry": {"pkg.vgg"}, "pkg.vgg": {"pkg.registry"}}
    assert find_cycle(graph) == ["pkg.registry", "pkg.vgg", "pkg.registry"]


def test_zoo_merges_the_family_tables():
    from fcn_deploy.models import available_models, build_model
    from fcn_deploy.models.efficientnet_lite import EFFICIENTNET_LITE_MODELS
    from fcn_deploy.models.resnet import RESNET_MODELS
    from fcn_deploy.models.vgg import VGG_MODELS
    from fcn_deploy.models.zoo import MODELS, merge_tables

    tables = (VGG_MODELS, RESNET_MODELS, EFFICIENTNET_LITE_MODELS)
    assert available_models() == sorted(n for t in tables for n in t)
    assert all(MODELS[n] is t[n] for t in tables for n in t)
    with pytest.raises(TypeError):
        MODELS["extra"] = VGG_MODELS["fcn8s_vgg16"]  # fixed by the code, not at run time
    with pytest.raises(ValueError, match="fcn8s_vgg16"):
        merge_tables(VGG_MODELS, {"fcn8s_vgg16": RESNET_MODELS["fcn8s_resnet18"]})
    with pytest.raises(KeyError, match="no_such_net"):
        build_model("no_such_net", 3)
