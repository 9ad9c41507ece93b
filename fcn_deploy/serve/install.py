"""Where ``fcn-deploy serve`` finds a ``tritonserver`` that it can run, without breaking the install.

The one Triton on PyPI is the ``tritonserver`` binary (Triton 2.51, Python backend only)
inside NVIDIA's PyTriton wheel (``nvidia-pytriton==0.7.0``). PyTriton itself pins
``numpy<2``, which opencv-python-headless 5 (``numpy>=2``) cannot live with, so installing it
with its dependencies would break the rest of fcn-deploy. It is therefore never installed:
its wheel is fetched with ``pip download --no-deps`` (or given), and only the server's files
(``pytriton/tritonserver/`` and the bundled libraries ``nvidia_pytriton.libs/``) are unpacked
into fcn-deploy's cache. Nothing of PyTriton's Python package is imported.

The binary and its Python backend find their libraries through RPATHs relative to their own
place (``$ORIGIN/../../../../nvidia_pytriton.libs`` for the backend), so the layout is kept.
The backend's stub process embeds Python and must be the build for the Python that runs
fcn-deploy: the wheel ships one per version under ``python_backend_stubs/X.Y/``, and each
Python gets its own backend folder, ``tritonserver/backends-pyX.Y/python/``, at the same
depth, so that the RPATHs still hold.

Lookup order: ``source`` (``--tritonserver``: a wheel, or a folder holding
``tritonserver/bin/tritonserver``), ``$FCN_DEPLOY_TRITONSERVER``, a PyTriton installed by the
user (``pip install --no-deps nvidia-pytriton``), the cache, a wheel dropped in the cache
folder, then ``pip download`` (when ``download`` is allowed).
"""
from __future__ import annotations

import glob
import importlib.util
import logging
import os
import shutil
import site
import stat
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..errors import FcnDeployError
from ..fileio import unpacking_folder, user_cache_root

log = logging.getLogger(__name__)

PYTRITON_REQUIREMENT = "nvidia-pytriton==0.7.0"
TRITON_VERSION = "2.51"  # the server inside that wheel
ENV_VAR = "FCN_DEPLOY_TRITONSERVER"
_KEEP = ("pytriton/tritonserver/", "nvidia_pytriton.libs/")


def cache_dir() -> str:
    """Where wheels are dropped and unpacked: ``USER_CACHE/triton``."""
    return os.path.join(user_cache_root(), "triton")


@dataclass(frozen=True)
class TritonInstall:
    """An unpacked ``tritonserver`` (``root`` holds ``bin/``, ``backends/`` and ``python_backend_stubs/``)."""

    root: str

    @property
    def binary(self) -> str:
        return os.path.join(self.root, "bin", "tritonserver")

    def backend_dir(self) -> str:
        """The backend folder for this Python, its stub copied in (created on first use)."""
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = os.path.join(self.root, "python_backend_stubs", version, "triton_python_backend_stub")
        if not os.path.isfile(stub):
            have = sorted(os.listdir(os.path.join(self.root, "python_backend_stubs")))
            raise FcnDeployError(f"this Triton has no Python backend stub for Python {version} (it has {', '.join(have)}); "
                                 "run fcn-deploy serve with one of those")
        folder = os.path.join(self.root, f"backends-py{version}")
        target = os.path.join(folder, "python")
        if not os.path.isfile(os.path.join(target, "triton_python_backend_stub")):
            tmp = tempfile.mkdtemp(prefix=".backends-", dir=self.root)
            shutil.copytree(os.path.join(self.root, "backends", "python"), os.path.join(tmp, "python"))
            shutil.copy2(stub, os.path.join(tmp, "python", "triton_python_backend_stub"))
            try:
                os.replace(tmp, folder)
            except OSError:  # another serve made it meanwhile
                shutil.rmtree(tmp, ignore_errors=True)
        return folder

    def environment(self) -> Dict[str, str]:
        """The server's environment: the stub embeds this Python, so it needs libpython on the
        library path. (Its ``sys.path`` cannot be given here: the stub's interpreter is isolated
        and ignores ``PYTHONPATH``; :func:`python_settings` carries it instead.)"""
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        ldlibrary = sysconfig.get_config_var("LDLIBRARY") or ""
        if not sysconfig.get_config_var("Py_ENABLE_SHARED") and not glob.glob(os.path.join(libdir, "libpython3*.so*")):
            raise FcnDeployError(f"this Python ({sys.executable}) is built without a shared libpython ({ldlibrary}); "
                                 "Triton's Python backend embeds one: use a Python built with --enable-shared")
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
        env.pop("PYTHONPATH", None)  # ignored by the isolated stub; python_settings() carries the path
        env.setdefault("OMP_NUM_THREADS", "1")
        return env


def python_settings() -> Dict[str, Any]:
    """What the stub's isolated interpreter needs to see this interpreter's packages: its
    version, its ``sys.path`` (absolute folders only: not the working directory) and its site
    folders, whose ``.pth`` files install editable installs' import hooks. The model applies
    them before it imports anything (:func:`fcn_deploy.serve.triton_model.adopt_python`)."""
    sites = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        sites.append(site.getusersitepackages())
    paths = [os.path.abspath(p) for p in sys.path if p and os.path.isabs(p) and os.path.isdir(p)]
    return {
        "version": f"{sys.version_info.major}.{sys.version_info.minor}",
        "executable": sys.executable,
        "sys_path": list(dict.fromkeys(paths)),
        "site_dirs": [s for s in dict.fromkeys(sites) if os.path.isdir(s)],
    }


def _valid(root: str) -> bool:
    return os.path.isfile(os.path.join(root, "bin", "tritonserver"))


def unpack_wheel(wheel: str, into: Optional[str] = None) -> TritonInstall:
    """Unpack the server's files from a PyTriton wheel (once; later calls reuse them)."""
    if not zipfile.is_zipfile(wheel):
        raise FcnDeployError(f"{wheel} is not a wheel (zip) file")
    stem = os.path.basename(wheel)[: -len(".whl")] if wheel.endswith(".whl") else os.path.basename(wheel)
    target = os.path.join(into or cache_dir(), stem)
    root = os.path.join(target, "pytriton", "tritonserver")
    if _valid(root):
        return TritonInstall(root)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with unpacking_folder(os.path.dirname(target), ".unpack-") as work:
        if not _valid(root):  # another serve may have unpacked it while this one waited
            _unpack_members(wheel, target, work)
    return TritonInstall(root)


def _unpack_members(wheel: str, target: str, work: str) -> None:
    """The server's files from ``wheel`` into ``target``, through the empty folder ``work`` beside it."""
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.infolist() if m.filename.startswith(_KEEP)]
        if not any(m.filename.endswith("bin/tritonserver") for m in members):
            raise FcnDeployError(f"{wheel} holds no tritonserver binary (not a PyTriton wheel?)")
        for member in members:
            path = archive.extract(member, work)
            mode = member.external_attr >> 16
            if mode & 0o111 or path.endswith((".so", "tritonserver", "triton_python_backend_stub")) or ".so." in path:
                os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(work, target)
    log.info("unpacked Triton %s from %s into %s", TRITON_VERSION, os.path.basename(wheel), target)


def _from_path(path: str) -> TritonInstall:
    path = os.path.expanduser(path)
    if os.path.isfile(path):
        return unpack_wheel(path)
    for root in (path, os.path.join(path, "tritonserver"), os.path.join(path, "pytriton", "tritonserver")):
        if _valid(root):
            return TritonInstall(root)
    raise FcnDeployError(f"no tritonserver in {path}: give a PyTriton wheel or the folder holding tritonserver/bin")


def download_wheel(folder: str) -> str:
    """``pip download nvidia-pytriton==0.7.0 --no-deps`` into ``folder``: the wheel only, nothing installed."""
    os.makedirs(folder, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", folder, PYTRITON_REQUIREMENT]
    log.info("fetching Triton %s: %s", TRITON_VERSION, " ".join(command[2:]))
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(glob.glob(os.path.join(folder, "nvidia_pytriton-*.whl")))
    if done.returncode != 0 or not wheels:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise FcnDeployError(f"cannot fetch the Triton server ({PYTRITON_REQUIREMENT}): "
                             f"{lines[-1] if lines else 'pip download failed'}; give a wheel with --tritonserver")
    return wheels[-1]


def find_tritonserver(source: Optional[str] = None, download: bool = True) -> TritonInstall:
    """A runnable Triton (see the module docstring for the order), or one clear error."""
    if source:
        return _from_path(source)
    if os.environ.get(ENV_VAR):
        return _from_path(os.environ[ENV_VAR])
    if sys.platform != "linux":
        raise FcnDeployError("the pip-installable Triton server runs on Linux only; use NVIDIA's container elsewhere")
    spec = importlib.util.find_spec("pytriton")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            if _valid(os.path.join(location, "tritonserver")):
                return TritonInstall(os.path.join(location, "tritonserver"))
    folder = cache_dir()
    for root in sorted(glob.glob(os.path.join(folder, "nvidia_pytriton-*", "pytriton", "tritonserver")), reverse=True):
        if _valid(root):
            return TritonInstall(root)
    wheels = sorted(glob.glob(os.path.join(folder, "nvidia_pytriton-*.whl")), reverse=True)
    if wheels:
        return unpack_wheel(wheels[0])
    if not download:
        raise FcnDeployError(f"no Triton server found: fcn-deploy serve fetches it ({PYTRITON_REQUIREMENT}, "
                             f"--no-deps) into {folder}, or give one with --tritonserver or ${ENV_VAR}")
    return unpack_wheel(download_wheel(folder))
