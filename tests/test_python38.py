"""The runtime on the Pythons JetPack ships: nothing the runtime imports may need Python > 3.8.

JetPack 5 runs Python 3.8 and JetPack 6 Python 3.10, so every module that ``fcn-deploy`` imports
for the runtime and its commands (``run``, ``eval`` of an ONNX or engine, ``build``, every
``--help``) must import and run there. Two checks:

- static, here on any Python: the runtime's import closure, found by reading the sources, is
  fed to vermin, which knows which syntax and standard-library features came after 3.8;
- live, marked ``runtime``: the Jetson-environment job (``.ci/jetson-env``) runs these tests
  in Python 3.8 and 3.10 venvs with numpy 1.x and OpenCV 4.5/4.8, without PyTorch.
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("fcn_deploy",)
# Folders at the top of the repository that install under our namespace (pyproject's package-dir).
MAPPED_PACKAGES = {"fcn_deploy.converters": "converters"}
OLDEST_PYTHON = "3.8"
# Engines a runtime module may import that a given machine may lack (not a Python-version matter).
OPTIONAL_ENGINES = {"tensorrt", "cuda", "pycuda", "onnxruntime", "tqdm"}

# A fresh interpreter in which `import torch` fails, as on a Jetson without PyTorch.
NO_TORCH = "import sys\nsys.modules['torch'] = None\n"


# -- the runtime's import closure, read from the sources ---------------------------------------------


def module_file(name: str) -> Optional[Path]:
    """The source file of project module ``name``, or None for anything outside the project."""
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    for package, folder in MAPPED_PACKAGES.items():
        if name == package or name.startswith(package + "."):
            name = folder + name[len(package):]
    base = REPO.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else None


def _imported_names(name: str, top_level_only: bool) -> List[str]:
    """Every module ``name`` imports (with their parent packages); function bodies too unless
    ``top_level_only``."""
    path = module_file(name)
    assert path is not None, name
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: List[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and top_level_only:
                continue
            if isinstance(child, ast.Import):
                found.extend(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1])
                    base = f"{base}.{child.module}" if child.module else base
                else:
                    base = child.module or ""
                found.append(base)
                found.extend(f"{base}.{alias.name}" for alias in child.names)  # `from pkg import module`
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    names = []
    for full in found:
        parts = full.split(".")
        names.extend(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return sorted(set(n for n in names if n))


def _needs_torch(name: str, memo: Dict[str, bool]) -> bool:
    """Whether importing project module ``name`` imports torch (directly or through the
    project modules it imports at top level): such a module is on the training side."""
    if name not in memo:
        memo[name] = False  # an import cycle does not by itself mean torch
        deps = _imported_names(name, top_level_only=True)
        memo[name] = any(d == "torch" or d.startswith("torch.") for d in deps) or any(
            _needs_torch(d, memo) for d in deps if d != name and module_file(d) is not None
        )
    return memo[name]


def runtime_modules() -> Dict[str, Path]:
    """The project modules a torch-free install can import: from ``fcn_deploy.cli`` and every
    runtime module, all imports followed (lazy ones too), except into training-side modules and
    the ``run()`` of the commands that need PyTorch anyway."""
    from fcn_deploy.cli import TORCH_COMMANDS

    torch_commands = {f"fcn_deploy.commands.{c}" for c in TORCH_COMMANDS}
    roots = ["fcn_deploy", "fcn_deploy.cli"] + sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts).replace(".__init__", "")
        for p in (REPO / "fcn_deploy" / "runtime").rglob("*.py")
    )
    memo: Dict[str, bool] = {}
    seen: Set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or module_file(name) is None or _needs_torch(name, memo):
            continue
        seen.add(name)
        todo.extend(_imported_names(name, top_level_only=name in torch_commands))
    return {name: module_file(name) for name in sorted(seen)}


def test_the_closure_is_the_runtime_and_its_commands_without_the_training_side():
    modules = runtime_modules()
    for expected in ("fcn_deploy.cli", "fcn_deploy.commands.run", "fcn_deploy.commands.eval",
                     "fcn_deploy.commands.build", "fcn_deploy.commands.train", "fcn_deploy.commands._args",
                     "fcn_deploy.runtime.pipeline", "fcn_deploy.runtime.backends.tensorrt",
                     "fcn_deploy.evaluation", "fcn_deploy.data", "fcn_deploy.options",
                     "fcn_deploy.converters.tensorrt_build", "fcn_deploy.converters.tensorrt_shapes"):
        assert expected in modules, expected
    for training_side in ("fcn_deploy.models.registry", "fcn_deploy.training.loop", "fcn_deploy.training",
                          "fcn_deploy.converters.onnx_export"):
        assert training_side not in modules, training_side


# -- static: vermin on the closure --------------------------------------------------------------------


def too_new_for_oldest_python(paths: Iterable[Path]) -> List[str]:
    """vermin's report of what in ``paths`` needs a Python newer than :data:`OLDEST_PYTHON`.

    ``--eval-annotations``: vermin cannot tell ``list[int]`` in an annotation (fine under
    ``from __future__ import annotations``) from one evaluated at run time (an alias, a cast,
    a dataclass that reads its types), so the runtime writes ``typing.List`` throughout.
    """
    pytest.importorskip("vermin")
    result = subprocess.run(
        [sys.executable, "-c", "import sys, vermin; sys.argv[0] = 'vermin'; sys.exit(vermin.main())",
         f"--target={OLDEST_PYTHON}-", "--violations", "--eval-annotations", "--no-tips", "--processes=1",
         *map(str, paths)],
        capture_output=True, text=True, timeout=300,
    )
    report = [line for line in result.stdout.splitlines()
              if line.strip() and not line.startswith(("Detecting", "Analyzing"))]
    if result.returncode == 0:
        return []
    return report or [result.stderr.strip()]


def test_runtime_modules_need_nothing_newer_than_python_3_8():
    problems = too_new_for_oldest_python(runtime_modules().values())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("source, feature", [
    ("import argparse\nargparse.BooleanOptionalAction\n", "BooleanOptionalAction"),
    ("from __future__ import annotations\nSizes = list[int]\n", "list[..]"),
    ("import functools\n@functools.cache\ndef f():\n    return 1\n", "functools.cache"),
    ("def f(a, b):\n    return a | b if isinstance(a, dict) else {**a} | {}\n", "dict union"),
])
def test_the_check_catches_what_broke_python_3_8(tmp_path, source, feature):
    path = tmp_path / "newer.py"
    path.write_text(source)
    report = "\n".join(too_new_for_oldest_python([path]))
    assert feature in report and "3.9" in report, report


# -- live: what the Jetson-environment job runs on Python 3.8 and 3.10 --------------------------------


def _python(script: str, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *args], cwd=str(REPO), capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.runtime
def test_every_runtime_module_imports_here_without_torch():
    names = [n for n in runtime_modules() if n != "fcn_deploy.cli"] + ["fcn_deploy.cli"]
    script = NO_TORCH + textwrap.dedent(
        f"""
        import importlib
        optional = {sorted(OPTIONAL_ENGINES)!r}
        for name in sys.argv[1:]:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                if (exc.name or "").split(".")[0] not in optional:
                    raise
        print(len(sys.argv) - 1, "modules")
        """
    )
    result = _python(script, *names)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(len(names)), "modules"]


@pytest.mark.runtime
def test_help_of_every_command_without_torch():
    script = NO_TORCH + textwrap.dedent(
        """
        import contextlib, io
        from fcn_deploy.cli import command_names, main
        for name in [None] + command_names():
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                try:
                    main([name, "--help"] if name else ["--help"])
                except SystemExit as exc:
                    assert exc.code == 0, (name, exc.code)
            prog = "fcn-deploy" + (" " + name if name else "")
            assert out.getvalue().startswith("usage: " + prog), out.getvalue()[:200]
            print(prog)
        assert sys.modules.get("torch") is None
        """
    )
    result = _python(script)
    assert result.returncode == 0, result.stderr
    from fcn_deploy.cli import command_names

    assert result.stdout.split("\n")[:-1] == ["fcn-deploy"] + [f"fcn-deploy {c}" for c in command_names()]
    assert {"run", "eval", "build", "train"} <= set(command_names())


@pytest.mark.runtime
@pytest.mark.parametrize("args", [
    ["train", "--model", "fcn8s_resnet18", "--dataset", "synthetic"],
    ["export", "--fp16"],
    ["compare", "model.onnx"],
    ["models"],
    ["eval", "--model", "{checkpoint}", "--dataset", "synthetic"],
])
def test_commands_that_need_torch_say_so_in_one_line(tmp_path, args):
    checkpoint = tmp_path / "run.pt"
    checkpoint.write_bytes(b"")
    args = [a.replace("{checkpoint}", str(checkpoint)) for a in args]
    result = _python(NO_TORCH + "from fcn_deploy.cli import main\nsys.exit(main(sys.argv[1:]))", *args)
    assert result.returncode == 1, result.stderr
    # PyTorch first, then whatever else of the train extra this command needs and this venv lacks.
    wanted = (rf"fcn-deploy: error: fcn-deploy {args[0]} needs PyTorch(, [a-z0-9-]+)* "
              rf"\(pip install -e '\.\[train\]'; Python >= 3\.10")
    if sys.version_info < (3, 10):
        wanted += rf", this is {sys.version_info[0]}\.{sys.version_info[1]}\."
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.match(wanted, lines[0]), result.stderr


def _clip_frames(count: int, height: int, width: int) -> List[np.ndarray]:
    from fcn_deploy.runtime.assets import demo_clip

    cap = cv2.VideoCapture(str(demo_clip()))
    frames = []
    while len(frames) < count:
        ok, frame = cap.read()
        assert ok, "the bundled clip ended early"
        frames.append(cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA))
    cap.release()
    return frames


@pytest.mark.runtime
def test_run_writes_the_labels_the_backend_computes_without_torch(tmp_path):
    from fcn_deploy.runtime.assets import BUNDLED_MODELS, bundled_asset
    from fcn_deploy.runtime.backends import open_backend

    frames = _clip_frames(3, 96, 128)
    source = tmp_path / "frames"
    source.mkdir()
    for i, frame in enumerate(frames):
        assert cv2.imwrite(str(source / f"f{i}.png"), frame)
    result = _python(NO_TORCH + "from fcn_deploy.cli import main\nsys.exit(main(sys.argv[1:]))",
                     "run", "--source", str(source), "--labels-dir", str(tmp_path / "labels"), "--output", "none",
                     "--threads", "1", "--input-size", "native")
    assert result.returncode == 0, result.stderr
    assert "wrote 3 label PNGs" in result.stdout
    with open_backend(bundled_asset(BUNDLED_MODELS["camvid"]), "cpu", threads=1) as backend:
        expected = backend.infer_labels(np.stack(frames))
    for i in range(3):
        written = cv2.imread(str(tmp_path / "labels" / f"f{i}.png"), cv2.IMREAD_UNCHANGED)
        assert written.dtype == np.uint8 and written.shape == (96, 128)
        np.testing.assert_array_equal(written, expected[i])


@pytest.mark.runtime
def test_eval_of_the_bundled_onnx_without_torch(tmp_path):
    root = tmp_path / "CamVid"
    (root / "test").mkdir(parents=True)
    (root / "testannot").mkdir()
    rng = np.random.default_rng(0)
    for i, frame in enumerate(_clip_frames(2, 72, 96)):
        cv2.imwrite(str(root / "test" / f"f{i}.png"), frame)
        cv2.imwrite(str(root / "testannot" / f"f{i}.png"), rng.integers(0, 12, frame.shape[:2], dtype=np.uint8))
    result = _python(NO_TORCH + "from fcn_deploy.cli import main\nsys.exit(main(sys.argv[1:]))",
                     "eval", "--model", "camvid", "--root", str(root), "--split", "test", "--threads", "1", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["dataset"] == "camvid" and report["images"] == 2
    assert 0.0 <= report["mean_iu"] <= 1.0 and report["runs_on"].startswith("OnnxRuntimeBackend")


@pytest.mark.runtime
def test_a_camera_that_does_not_open_is_one_line():
    result = _python(NO_TORCH + "from fcn_deploy.cli import main\nsys.exit(main(sys.argv[1:]))",
                     "run", "--camera", "97", "--output", "none")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "fcn-deploy: error: cannot open camera 97: no such camera, or it is in use (see `v4l2-ctl --list-devices`)"
    ]


def test_the_jetson_job_installs_with_the_documented_commands():
    """.ci/jetson-env runs the Jetson commands of docs/tensorrt.md and the README word for word."""
    script = (REPO / ".ci" / "jetson-env").read_text()
    commands = [line.split("=", 1)[1].strip("'") for line in script.splitlines()
                if line.startswith(("DOC_INSTALL_SELF=", "DOC_INSTALL_DEPS="))]
    assert len(commands) == 2 and all(c.startswith("pip install ") for c in commands), commands
    for doc in ("docs/tensorrt.md", "README.md"):
        text = (REPO / doc).read_text()
        for command in commands:
            assert command in text, f"{doc} lacks `{command}`"
