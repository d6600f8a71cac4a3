"""Package discovery for mmcore's three import packages; everything else is in pyproject.toml.

The folders ``mmcore/``, ``plugins/`` and ``kernels/`` install as ``mmcore``, ``mmcore_plugins`` and
``mmcore_kernels`` (``[tool.setuptools.package-dir]`` in pyproject.toml). Setuptools' own discovery
(``[tool.setuptools.packages.find]``) names a package after its folder, which would install top-level
``plugins`` and ``kernels``; so each mapped folder is searched here with setuptools' ``find_packages``
and every package found is named under its import name. A new subpackage (a folder with an
``__init__.py``) is in the wheel without editing any list.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent


def package_dir() -> dict[str, str]:
    """``[tool.setuptools.package-dir]`` of pyproject.toml: import name -> folder."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the TOML reader setuptools itself uses
        from setuptools.config.pyprojecttoml import load_file

        config = load_file(ROOT / "pyproject.toml")
    else:
        config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return dict(config["tool"]["setuptools"]["package-dir"])


def packages(mapping: dict[str, str]) -> list[str]:
    """Every package under each mapped folder, named under the folder's import name."""
    found = []
    for name, folder in mapping.items():
        found += [name, *(f"{name}.{sub}" for sub in find_packages(where=str(ROOT / folder)))]
    return found


setup(packages=packages(package_dir()))
