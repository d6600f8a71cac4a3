"""The wheel's package list is found, not kept by hand (issue 24.5): setup.py names every package folder
under mmcore/, plugins/ and kernels/ by its import name, and never installs a top-level `plugins` or
`kernels`. The built wheel itself is checked by .ci/wheel_check (build, clean venv, mmcore plugins, a
training), which CI runs before the tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import setuptools

ROOT = Path(__file__).resolve().parents[1]


def _setup_packages(monkeypatch) -> list[str]:
    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    namespace = {"__file__": str(ROOT / "setup.py"), "__name__": "setup_under_test"}
    exec(compile((ROOT / "setup.py").read_text(), str(ROOT / "setup.py"), "exec"), namespace)
    return captured["packages"]


def test_every_package_folder_is_in_the_wheel_under_its_import_name(monkeypatch):
    packages = _setup_packages(monkeypatch)
    expected = set()
    for name, folder in {"mmcore": "mmcore", "mmcore_plugins": "plugins", "mmcore_kernels": "kernels"}.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            if "__pycache__" not in relative:
                expected.add(".".join((name, *relative)))
    assert set(packages) == expected and len(packages) == len(expected)
    assert "mmcore_plugins.datasets.manifest" in packages  # the subpackage the hand-kept list lacked
    assert not {p.split(".")[0] for p in packages} - {"mmcore", "mmcore_plugins", "mmcore_kernels"}


def test_the_ci_runs_the_wheel_check_and_the_script_is_valid_bash():
    assert "bash .ci/wheel_check" in (ROOT / ".ci" / "run").read_text()
    subprocess.run(["bash", "-n", str(ROOT / ".ci" / "wheel_check")], check=True)
