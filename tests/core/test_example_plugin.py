"""The plugin authors' kit end to end: pip-install examples/mmcore-plugin-example into a throwaway
location, see it in ``mmcore plugins --json``, build and train a model naming its components, run
the example's own tests — then it is gone with the temporary directory (nothing is uninstalled
from the test environment because nothing was installed into it)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mmcore-plugin-example"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-compile", "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True, text=True,
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    return env


def run(env, *args, **kwargs):
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, **kwargs)


def test_installed_plugin_is_listed_with_its_components(installed):
    out = run(installed, "-m", "mmcore", "plugins", "--json", check=True)
    plugins = {p["name"]: p for p in json.loads(out.stdout)}
    example = plugins["example"]
    assert example["status"] == "ok", example["error"]
    assert example["distribution"] == "mmcore-plugin-example" and example["version"] == "0.1.0"
    assert {(c["kind"], c["name"], c["modality"]) for c in example["components"]} == {
        ("fusion", "example_max", None),
        ("encoder", "example_char_histogram", "text"),
        ("perturbation", "example_char_noise", "text"),
        ("dataset", "example_palindromes", None),
        ("logger", "example_jsonl", None),
        ("head", "example_margin", None),
    }
    dataset = next(c for c in example["components"] if c["kind"] == "dataset")
    assert [o["name"] for o in dataset["options"]] == ["size", "seed", "val_fraction", "test_fraction"]
    # Its command on the mmcore command line: the example's own test_command_prints_words, run below
    # (test_the_example_packages_own_tests_pass) in this same installation, checks it.


def test_a_model_naming_its_components_builds_and_trains(installed):
    script = textwrap.dedent("""
        import torch, mmcore
        torch.manual_seed(0)
        model = mmcore.build_model({
            "encoders": {"text": {"name": "example_char_histogram", "dim": 16},
                         "numbers": {"name": "tabular_mlp", "num_features": 2, "dim": 16}},
            "fusion": {"name": "example_max", "dim": 16},
            "head": {"name": "classification", "num_classes": 2},
        })
        words = ["zzzz", "aaaa"]
        samples = [{"inputs": {"text": words[i % 2], "numbers": None if i % 3 == 0 else [0.0, 1.0]}, "target": i % 2}
                   for i in range(16)]
        batch = model.collate(samples)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        losses = []
        for _ in range(40):
            out = model(batch["inputs"], batch["targets"])
            opt.zero_grad(); out.loss.backward(); opt.step(); losses.append(out.loss.item())
        print(losses[0], losses[-1])
    """)
    out = run(installed, "-c", script, check=True)
    first, last = map(float, out.stdout.split())
    assert last < 0.2 * first


def test_the_example_packages_own_tests_pass(installed):
    out = run(installed, "-m", "pytest", "-v", "-p", "no:cacheprovider", str(EXAMPLE / "tests"), cwd=EXAMPLE)
    assert out.returncode == 0, out.stdout + out.stderr
    # among them, the example's command on the mmcore command line (test_installed_plugin_is_listed... leaves it here)
    assert "test_kinds.py::test_command_prints_words PASSED" in out.stdout, out.stdout


# ---------------------------------------------------------------------- docs/plugins.md, as a newcomer reads it
DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
ROOT = Path(__file__).resolve().parents[2]


def _newcomer_blocks() -> list[str]:
    """The code blocks of docs/plugins.md's "From the README to a trained custom fusion", in order."""
    section = DOCS.read_text().split("## From the README to a trained custom fusion", 1)[1].split("\n## ", 1)[0]
    return [block.split("\n", 1)[1] for block in section.split("```")[1::2]]


def test_the_newcomer_path_from_the_docs_trains_a_custom_fusion_on_a_built_in_config(tmp_path, monkeypatch, capsys,
                                                                                     keep_threads):
    """Follow the docs' section literally: write my_fusion.py and pyproject.toml from its code blocks,
    run its check command, install the package, list it, see the partial override refused with the
    hint, train configs/tabular.yaml with the full mapping override, and run the notebook variant."""
    blocks = _newcomer_blocks()
    module = next(b for b in blocks if b.startswith("# my_fusion.py"))
    pyproject = next(b for b in blocks if b.startswith("# pyproject.toml"))
    check = next(b for b in blocks if b.startswith("cd my-fusion")).strip()
    train = next(b for b in blocks if b.startswith("mmcore train")).strip()
    notebook = next(b for b in blocks if b.startswith("import mmcore\nimport my_fusion"))
    package = tmp_path / "my-fusion"
    package.mkdir()
    (package / "my_fusion.py").write_text(module)
    (package / "pyproject.toml").write_text(pyproject)

    checked = subprocess.run(["bash", "-c", check.replace("python -c", f"{sys.executable} -c")], cwd=tmp_path,
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-compile",
                    "--target", str(site), str(package)], check=True, capture_output=True, text=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    listed = run(env, "-m", "mmcore", "plugins", "my_max", cwd=ROOT)
    assert listed.returncode == 0 and "fusion my_max  (plugin 'my_fusion' from distribution 'my-fusion')" in listed.stdout

    quick = ["trainer.epochs=1", f"trainer.run_dir={tmp_path / 'run'}", "trainer.progress=false", "trainer.plots=false"]
    partial = run(env, "-m", "mmcore", "train", "configs/tabular.yaml", "model.fusion.name=my_max", *quick, cwd=ROOT)
    assert partial.returncode == 2, partial.stderr
    assert "model.fusion.dropout: unknown option of fusion 'my_max' (valid options: dim)" in partial.stderr
    assert "override the whole mapping: 'model.fusion={name: my_max, ...}'" in partial.stderr
    assert not (tmp_path / "run" / "report.json").exists()

    command = train.split()[1:3] + [train.split("'")[1]]  # mmcore train configs/tabular.yaml '<override>'
    assert command == ["train", "configs/tabular.yaml", "model.fusion={name: my_max, dim: 64}"]
    trained = run(env, "-m", "mmcore", *command, *quick, cwd=ROOT)
    assert trained.returncode == 0, trained.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["status"] == "completed" and report["test"]["accuracy"] > 0.5

    script = notebook.replace('["model.fusion={name: my_max, dim: 64}"]',
                              repr(["model.fusion={name: my_max, dim: 64}", *quick[:1], f"trainer.run_dir={tmp_path / 'nb'}",
                                    *quick[2:]]))
    assert script != notebook
    # A notebook is a long-lived interpreter: the variant runs in this one (nothing of the package above is
    # installed here), with just the module importable from its folder.
    notebook_folder = tmp_path / "notebook"
    notebook_folder.mkdir()
    (notebook_folder / "my_fusion.py").write_text(module)
    monkeypatch.syspath_prepend(str(notebook_folder))
    monkeypatch.chdir(ROOT)
    capsys.readouterr()
    try:
        exec(compile(script, "notebook", "exec"), {"__name__": "__main__"})
    finally:
        sys.modules.pop("my_fusion", None)
    assert capsys.readouterr().out.split()[0] == "completed"
