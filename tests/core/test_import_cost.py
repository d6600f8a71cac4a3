"""Discovery must stay light: heavy libraries are imported when a component is built, not before."""

import json
import subprocess
import sys

HEAVY = ["torchvision", "transformers", "triton", "sklearn", "scipy", "PIL", "matplotlib", "optuna", "mlflow", "torch_pruning"]


def _imported_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_mmcore_imports_no_heavy_library():
    assert _imported_after("import mmcore") == []


def test_discovering_every_plugin_imports_no_heavy_library():
    assert _imported_after("import mmcore; mmcore.get_plugin_manager()") == []


def test_mmcore_plugins_command_imports_no_heavy_library():
    code = "import io, contextlib, mmcore.cli\nwith contextlib.redirect_stdout(io.StringIO()): mmcore.cli.main(['plugins', '--json'])"
    assert _imported_after(code) == []
