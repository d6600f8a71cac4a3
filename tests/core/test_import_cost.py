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


def test_loading_a_saved_model_imports_no_dynamo(tmp_path):
    """``load_model`` (every ``mmcore predict``/``eval``/``serve``) checks a saved model's size under
    an allocation guard, not by a build on the meta device, whose ``torch._refs`` kernels import
    ``torch._dynamo`` (1.5-3 s of a cold start). A model with the ops that did it: ``nn.Embedding``'s
    ``normal_`` and ``torch.randn(...) * 0.02`` (text_transformer)."""
    import mmcore
    from mmcore.engine.checkpoint import save_model

    spec = {"encoders": {"text": {"name": "text_transformer", "dim": 8, "heads": 2, "layers": 1, "max_length": 8}},
            "head": {"name": "classification", "num_classes": 2}}
    save_model(mmcore.build_model(spec), tmp_path / "saved")
    code = (f"from mmcore.engine.checkpoint import load_model\nload_model({str(tmp_path / 'saved')!r})\n"
            "import sys\nprint('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
