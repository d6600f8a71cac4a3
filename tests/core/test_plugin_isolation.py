"""Plugins fail alone: output captured at import, sys.exit contained, commands isolated, clashing
entry-point names, import times, and lifecycle hooks that raise during training."""

from __future__ import annotations

import copy
import json
import logging
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import mmcore
from mmcore.cli import main
from mmcore.errors import PluginHookError


def make_distribution(root, dist: str, module: str, source: str, entry_name: str | None = None) -> None:
    """An installed-looking distribution (module + dist-info with an ``mmcore`` entry point) in ``root``."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[mmcore]\n{entry_name or module} = {module}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path for fake distributions; the default manager rediscovers plugins."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    mmcore.reset_plugin_manager()
    yield root
    # Forget the fake modules, so no later test imports this test's version of a module name.
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", "") or "").startswith(str(root)):
            del sys.modules[name]


FUSION_PLUGIN = """
import mmcore
from mmcore_plugins.fusions.concat import ConcatFusion

class {cls}(ConcatFusion):
    '''A third-party concat.'''

@mmcore.hookimpl
def mmcore_register(registry):
    registry.add_fusion("{fusion}", {cls})
"""


def test_output_printed_at_import_is_captured_and_reported(site, capsys):
    make_distribution(site, "mmcore-chatty", "mmcore_chatty_mod", """
        import sys
        import mmcore
        print("hello from the chatty plugin")
        sys.stderr.write("chatty warning\\n")

        @mmcore.hookimpl
        def mmcore_register(registry):
            print("registering!")
    """)
    assert main(["plugins", "--json"]) == 0
    out, err = capsys.readouterr()
    listing = {p["name"]: p for p in json.loads(out)}  # stdout is exactly the JSON document
    chatty = listing["mmcore_chatty_mod"]
    assert chatty["status"] == "ok"
    assert chatty["output"] == "hello from the chatty plugin\nchatty warning\nregistering!\n"
    assert "hello from the chatty plugin" not in err
    assert main(["plugins"]) == 0
    table = capsys.readouterr().out
    assert "printed while loading: hello from the chatty plugin; chatty warning; registering!" in table


@pytest.mark.parametrize("code", ["sys.exit(3)", "sys.exit('bye')", "raise SystemExit"])
def test_sys_exit_at_import_is_contained(site, capsys, code):
    make_distribution(site, "mmcore-quitter", "mmcore_quitter_mod", f"import sys\n{code}\n")
    make_distribution(site, "mmcore-good", "mmcore_iso_good_mod", FUSION_PLUGIN.format(cls="Good", fusion="good_concat"))
    manager = mmcore.create_plugin_manager(env={})
    record = manager.records["mmcore_quitter_mod"]
    assert record.status == "failed" and record.error.startswith("called sys.exit(") and "while loading" in record.error
    assert manager.records["mmcore_iso_good_mod"].status == "ok"
    assert main(["plugins", "--json"]) == 0
    assert {p["name"]: p["status"] for p in json.loads(capsys.readouterr().out)}["mmcore_quitter_mod"] == "failed"


def test_keyboard_interrupt_at_import_is_not_swallowed(site):
    make_distribution(site, "mmcore-ctrlc", "mmcore_ctrlc_mod", "raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        mmcore.create_plugin_manager(env={})


def test_import_time_is_measured_and_shown(site, capsys):
    make_distribution(site, "mmcore-slow", "mmcore_slow_mod", "import time\ntime.sleep(0.06)\n")
    manager = mmcore.create_plugin_manager(env={})
    assert manager.records["mmcore_slow_mod"].import_ms >= 60  # sleep() waits at least that long
    assert all(r.import_ms is not None and r.import_ms >= 0 for r in manager.records.values() if r.status != "blocked")
    del sys.modules["mmcore_slow_mod"]  # the CLI's manager imports it afresh
    assert main(["plugins"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("mmcore_slow_mod"))
    assert line.startswith("mmcore_slow_mod  [ok]  (mmcore-slow 1.2.3, ") and line.endswith(" ms)")
    assert float(line.rsplit(", ", 1)[1].split()[0]) >= 60


COMMANDS_PLUGIN = """
import mmcore

def hello(args):
    print("hello", args.who)

@mmcore.hookimpl
def mmcore_add_commands(subparsers):
    {body}
"""


@pytest.mark.parametrize(("body", "error"), [
    ('p = subparsers.add_parser("broken-a"); p.set_defaults(handler=hello); raise RuntimeError("add_commands boom")',
     "RuntimeError: add_commands boom"),
    ('p = subparsers.add_parser("broken-a"); p.set_defaults(handler=hello); subparsers.add_parser("train")',
     "command 'train' already exists"),
    ('subparsers.add_parser("broken-a", aliases=["eval"])', "command 'eval' already exists"),
    ('import sys; sys.exit(4)', "called sys.exit(4)"),
])
def test_a_broken_add_commands_loses_only_its_own_commands(site, capsys, caplog, tmp_path, monkeypatch, body, error):
    for module in ("mmcore_broken_cmds_mod", "mmcore_hello_mod"):  # each case imports its own version
        monkeypatch.delitem(sys.modules, module, raising=False)
    make_distribution(site, "mmcore-broken-cmds", "mmcore_broken_cmds_mod", COMMANDS_PLUGIN.format(body=body))
    make_distribution(site, "mmcore-hello", "mmcore_hello_mod", COMMANDS_PLUGIN.format(
        body='p = subparsers.add_parser("hello"); p.add_argument("who"); p.set_defaults(handler=hello)'))
    with caplog.at_level(logging.WARNING, logger="mmcore.plugins"):
        assert main(["plugins", "--json"]) == 0
    listing = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    broken = listing["mmcore_broken_cmds_mod"]
    assert broken["status"] == "partial" and error in broken["error"] and broken["commands"] == []
    assert listing["mmcore_hello_mod"]["status"] == "ok" and listing["mmcore_hello_mod"]["commands"] == ["hello"]
    assert any("mmcore_broken_cmds_mod" in r.getMessage() and error in r.getMessage() for r in caplog.records)
    # every other command works; the broken plugin's half-added command is gone
    assert main(["hello", "world"]) == 0 and capsys.readouterr().out.strip() == "hello world"
    assert main(["broken-a"]) == 2
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "config file" in capsys.readouterr().err  # still mmcore's own train
    assert main(["eval", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_same_entry_point_name_in_two_distributions_both_load(site):
    make_distribution(site, "mmcore-alpha", "mmcore_alpha_mod", FUSION_PLUGIN.format(cls="Alpha", fusion="alpha_concat"),
                      entry_name="shared")
    make_distribution(site, "mmcore-beta", "mmcore_beta_mod", FUSION_PLUGIN.format(cls="Beta", fusion="beta_concat"),
                      entry_name="shared")
    manager = mmcore.create_plugin_manager(env={})
    first, second = manager.records["shared"], manager.records["mmcore-beta:shared"]
    assert first.status == second.status == "ok"
    assert (first.distribution, second.distribution) == ("mmcore-alpha", "mmcore-beta")
    assert "also declared by distribution mmcore-alpha" in second.error
    assert manager.registry.get("fusion", "alpha_concat").distribution == "mmcore-alpha"
    assert manager.registry.get("fusion", "beta_concat").distribution == "mmcore-beta"
    # either can be blocked on its own by its qualified name
    blocked = mmcore.create_plugin_manager(env={"MMCORE_DISABLE_PLUGINS": "mmcore-beta:shared"})
    assert blocked.records["mmcore-beta:shared"].status == "blocked" and blocked.records["shared"].status == "ok"
    blocked = mmcore.create_plugin_manager(env={"MMCORE_DISABLE_PLUGINS": "mmcore-alpha:shared"})
    assert blocked.records["shared"].status == "blocked" and blocked.records["mmcore-beta:shared"].status == "ok"


# ---------------------------------------------------------------------------- lifecycle hooks
WINE = {
    "data": {"name": "sklearn_tabular", "dataset": "wine", "seed": 0,
             "modalities": {"first": ["alcohol", "malic_acid", "ash", "alcalinity_of_ash", "magnesium", "total_phenols"]}},
    "model": {"encoders": {"first": {"name": "tabular_mlp", "num_features": 6, "dim": 8}},
              "head": {"name": "classification", "num_classes": 3}},
    "trainer": {"epochs": 2, "batch_size": 64, "progress": False, "plots": False, "tensorboard": False},
}

HOOK_PLUGIN = """
import mmcore

@mmcore.hookimpl
def {hook}(trainer):
    if trainer.epoch >= {epoch}:
        raise RuntimeError("the plugin's own bug")
"""


@pytest.mark.parametrize(("hook", "epoch", "checkpoint"), [
    ("mmcore_train_start", 0, None),
    ("mmcore_train_step_end", 2, "last"),   # fails in epoch 2: epoch 1's checkpoint is kept
    ("mmcore_epoch_end", 1, "last"),        # epoch 1 was checkpointed before its epoch_end hook
    ("mmcore_train_end", 0, "best"),
])
def test_a_raising_lifecycle_hook_stops_the_run_cleanly(site, tmp_path, capsys, hook, epoch, checkpoint):
    module = f"mmcore_{hook}_mod"
    make_distribution(site, f"mmcore-{hook.replace('_', '-')}", module, HOOK_PLUGIN.format(hook=hook, epoch=epoch))
    config = copy.deepcopy(WINE)
    config["trainer"]["run_dir"] = str(tmp_path / "run")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "c.yaml")]) == 1
    err = capsys.readouterr().err
    expected = (f"mmcore train: plugin {module!r} (distribution mmcore-{hook.replace('_', '-')} 1.2.3) "
                f"failed in {hook}: RuntimeError: the plugin's own bug")
    assert err.strip() == expected and "Traceback" not in err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["status"] == "failed" and report["error"] == expected.removeprefix("mmcore train: ")
    if checkpoint:
        assert (tmp_path / "run" / checkpoint / "model.safetensors").is_file()


def test_call_lifecycle_names_the_failing_plugin_and_calls_the_others(empty_manager):
    calls = []

    class Good:
        @mmcore.hookimpl
        def mmcore_epoch_end(self, epoch):
            calls.append(("good", epoch))

    class Bad:
        @mmcore.hookimpl
        def mmcore_epoch_end(self, epoch, metrics):
            raise ValueError(f"bad metrics {metrics}")

    mmcore.register_plugin(Good(), name="good", manager=empty_manager)
    empty_manager.call_lifecycle("mmcore_epoch_end", trainer=None, epoch=1, metrics={})
    assert calls == [("good", 1)]
    mmcore.register_plugin(Bad(), name="bad", manager=empty_manager)
    with pytest.raises(PluginHookError) as info:
        empty_manager.call_lifecycle("mmcore_epoch_end", trainer=None, epoch=2, metrics={"loss": 1.0})
    assert str(info.value) == "plugin 'bad' (registered at run time) failed in mmcore_epoch_end: ValueError: bad metrics {'loss': 1.0}"
    assert (info.value.plugin, info.value.hook) == ("bad", "mmcore_epoch_end")
    assert isinstance(info.value.__cause__, ValueError)

    class Interrupt:
        @mmcore.hookimpl
        def mmcore_train_start(self):
            raise KeyboardInterrupt

    mmcore.register_plugin(Interrupt(), name="ctrl-c", manager=empty_manager)
    with pytest.raises(KeyboardInterrupt):
        empty_manager.call_lifecycle("mmcore_train_start", trainer=None, config={})


# ---------------------------------------------------------------------------- the working folder
EVIL_PLUGIN = """
import pathlib
pathlib.Path({marker!r}).write_text("the working folder's plugin ran")
"""


@pytest.mark.parametrize("launcher", ["python", pytest.param("torchrun", marks=pytest.mark.slow)])
def test_python_m_mmcore_never_loads_plugins_from_the_working_folder(tmp_path, launcher):
    """Issue 28.1: ``python -m`` puts the working folder first on sys.path; a ``*.dist-info`` there
    (a downloaded data set, an unpacked wheel) must not make ``python -m mmcore`` run its code.
    One process checks both sides: the working folder's plugin never runs, while a folder the user
    put on the path on purpose (PYTHONPATH) stays on it and its plugin loads."""
    import os
    import subprocess

    cwd, chosen, marker = tmp_path / "downloads", tmp_path / "chosen", tmp_path / "ran.txt"
    cwd.mkdir()
    chosen.mkdir()
    make_distribution(cwd, "mmcore-evil", "mmcore_evil_mod", EVIL_PLUGIN.format(marker=str(marker)))
    make_distribution(chosen, "mmcore-chosen", "mmcore_chosen_mod", "")
    if launcher == "torchrun":  # `torchrun` is this module's console script (for this interpreter)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
                   "-m", "mmcore", "plugins"]
    else:
        command = [sys.executable, "-m", "mmcore", "plugins"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMCORE_")}
    result = subprocess.run(command, cwd=cwd, env={**env, "PYTHONPATH": str(chosen)}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "mmcore_evil_mod" not in result.stdout + result.stderr
    assert not marker.exists()
    assert "mmcore_chosen_mod" in result.stdout, "a folder on PYTHONPATH is the user's choice: its plugin loads"


def test_python_m_drops_only_the_entry_it_added(tmp_path, monkeypatch):
    """The working folder named again on purpose (PYTHONPATH=.) stays: only ``sys.path[0]`` goes."""
    import runpy

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), str(tmp_path), *sys.path])
    runpy.run_path(str(Path(mmcore.__file__).with_name("__main__.py")), run_name="not_main")
    assert sys.path[:2] != [str(tmp_path), str(tmp_path)] and sys.path[0] == str(tmp_path)
    monkeypatch.setattr(sys, "path", ["/elsewhere", str(tmp_path), *sys.path[1:]])
    runpy.run_path(str(Path(mmcore.__file__).with_name("__main__.py")), run_name="not_main")
    assert sys.path[:2] == ["/elsewhere", str(tmp_path)], "a first entry that is not the working folder stays"
