"""Every package folder is in the wheel under its import name (issue 24.5). The list lives in
pyproject.toml (setuptools' discovery cannot rename plugins/ -> mmcore_plugins, and the top level is
fixed, so no setup.py); this test fails, naming the package, when a folder with an __init__.py is
missing from it. The built wheel itself is checked by .ci/wheel_check (build, clean venv,
mmcore plugins, a training), which CI runs before the tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def package_folders(mapping: dict[str, str]) -> set[str]:
    """Every package (a folder with ``__init__.py``) under each mapped folder, by its import name."""
    found = set()
    for name, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            if "__pycache__" not in relative and not any(part.startswith(".") for part in relative):
                found.add(".".join((name, *relative)))
    return found


def test_every_package_folder_is_listed_under_its_import_name():
    setuptools = _pyproject()["tool"]["setuptools"]
    mapping, listed = setuptools["package-dir"], setuptools["packages"]
    assert mapping == {"mmcore": "mmcore", "mmcore_plugins": "plugins", "mmcore_kernels": "kernels"}
    folders = package_folders(mapping)
    missing, gone = sorted(folders - set(listed)), sorted(set(listed) - folders)
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml, or the wheel lacks them"
    assert not gone, f"{gone} are listed in pyproject.toml but have no folder with an __init__.py"
    assert len(listed) == len(set(listed))


def test_the_ci_runs_the_wheel_check_and_the_script_is_valid_bash():
    assert "bash .ci/wheel_check" in (ROOT / ".ci" / "run").read_text()
    subprocess.run(["bash", "-n", str(ROOT / ".ci" / "wheel_check")], check=True)
