""".ci/run installs as a user does: the README's "Set up" commands, in a fresh virtual environment.

CI passing says little if it installs differently from the README (it once installed into the
system interpreter, where `fcn-deploy serve` worked and from a venv it did not).
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CI = (ROOT / ".ci" / "run").read_text()


def _setup_commands():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def _ci_commands():
    """.ci/run's command lines as a user would type them (no `python3 -m` before pip, no -q)."""
    lines = [line.strip() for line in CI.splitlines()]
    return [re.sub(r"^python3 -m pip (\w+) -q", r"pip \1", line) for line in lines]


def test_ci_runs_the_readme_install_and_test_commands():
    commands, ci = _setup_commands(), _ci_commands()
    install = [c for c in commands if c.startswith("pip install -e")]
    tests = [c for c in commands if "pytest" in c]
    assert install and tests
    extras = max(install, key=len)  # the install with every extra
    assert extras in ci
    assert any(line.startswith(tests[-1] + " ") for line in ci)  # then piped to the log
    # PyTorch: the README's CPU index; CI's machines serve that wheel locally under the plain pin,
    # installed before anything that depends on torch.
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in commands
    assert ci.index("pip install torch==2.13.0") < ci.index(extras)


def test_ci_uses_a_fresh_venv_and_never_the_system_python():
    assert 'rm -rf "$VENV"' in CI and 'python3 -m venv "$VENV"' in CI
    assert "PATH=$VENV/bin:$PATH" in CI
    venv_at = CI.index('python3 -m venv "$VENV"')
    first_pip = min(m.start() for m in re.finditer(r"pip (install|download)", CI))
    assert venv_at < first_pip, "every pip call comes after the venv is on PATH"
    assert "python3 -m venv .venv" in "\n".join(_setup_commands())


def test_ci_script_parses():
    assert subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")]).returncode == 0
