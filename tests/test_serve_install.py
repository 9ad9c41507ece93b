"""Unpacking Triton's server from a PyTriton wheel (``fcn_deploy.serve.install``), on a small
wheel-shaped zip made here: the server's files only, executable, once, and what a killed
unpack left behind removed by the next one."""
from __future__ import annotations

import os
import stat
import zipfile

import pytest

from fcn_deploy.errors import FcnDeployError
from fcn_deploy.serve.install import unpack_wheel


def make_wheel(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o644 << 16  # as pip's wheels often store them: no x bit
            archive.writestr(info, data)
    return path


WHEEL_MEMBERS = {
    "pytriton/tritonserver/bin/tritonserver": b"\x7fELF server",
    "pytriton/tritonserver/backends/python/libtriton_python.so": b"\x7fELF backend",
    "nvidia_pytriton.libs/libz.so.1": b"\x7fELF lib",
    "pytriton/__init__.py": b"# the client library: not needed",
}


def test_the_server_files_are_unpacked_executable_once_and_leftovers_removed(tmp_path):
    wheel = make_wheel(tmp_path / "nvidia_pytriton-0.7.0-py3-none-manylinux_2_35_x86_64.whl", WHEEL_MEMBERS)
    cache = tmp_path / "cache"
    killed = cache / ".unpack-k1ll3d" / "pytriton" / "tritonserver" / "bin"
    killed.mkdir(parents=True)
    (killed / "tritonserver").write_bytes(b"half a server")
    install = unpack_wheel(str(wheel), str(cache))
    server = os.path.join(install.root, "bin", "tritonserver")
    assert open(server, "rb").read() == b"\x7fELF server" and os.stat(server).st_mode & stat.S_IXUSR
    target = cache / wheel.name[: -len(".whl")]
    assert not (target / "pytriton" / "__init__.py").exists()  # only the server's files
    assert sorted(os.listdir(cache)) == [target.name]  # the killed run's folder is gone
    before = os.stat(server).st_mtime_ns
    assert unpack_wheel(str(wheel), str(cache)).root == install.root and os.stat(server).st_mtime_ns == before


def test_a_zip_without_the_server_is_refused_and_leaves_nothing(tmp_path):
    wheel = make_wheel(tmp_path / "other-1.0-py3-none-any.whl", {"other/__init__.py": b""})
    cache = tmp_path / "cache"
    with pytest.raises(FcnDeployError, match="holds no tritonserver binary"):
        unpack_wheel(str(wheel), str(cache))
    assert os.listdir(cache) == []


def test_the_stub_gets_this_pythons_packages_through_settings_not_pythonpath(monkeypatch, tmp_path):
    # Triton's stub runs an isolated interpreter: PYTHONPATH would be ignored, so it is not passed
    # on; the model adopts python_settings() instead (fcn_deploy.serve.triton_model.adopt_python).
    import site
    import sys

    from fcn_deploy.serve.install import TritonInstall, python_settings

    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setattr(sys, "path", ["", str(tmp_path), "relative/dir", *sys.path])
    if sysconfig_shared():
        assert "PYTHONPATH" not in TritonInstall(str(tmp_path)).environment()
    settings = python_settings()
    assert settings["version"] == "%d.%d" % sys.version_info[:2]
    assert "" not in settings["sys_path"] and "relative/dir" not in settings["sys_path"]
    assert str(tmp_path) in settings["sys_path"]
    assert all(os.path.isabs(p) for p in settings["sys_path"])
    assert [d for d in site.getsitepackages() if os.path.isdir(d)] == [d for d in settings["site_dirs"]
                                                                      if d in site.getsitepackages()]
    import fcn_deploy

    # fcn_deploy is found from these folders, or through an import hook one of their .pth files installs
    here = os.path.dirname(os.path.dirname(os.path.abspath(fcn_deploy.__file__)))
    hooks = [f for d in settings["site_dirs"] for f in os.listdir(d) if f.endswith(".pth")]
    assert here in settings["sys_path"] or hooks


def sysconfig_shared() -> bool:
    import glob
    import sysconfig

    libdir = sysconfig.get_config_var("LIBDIR") or ""
    return bool(sysconfig.get_config_var("Py_ENABLE_SHARED") or glob.glob(os.path.join(libdir, "libpython3*.so*")))
