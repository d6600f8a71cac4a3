"""Discovery through real entry points: built-ins, broken plugins, blocking, strict mode."""

import json
import subprocess
import sys
import textwrap

import pytest

import mmcore
from mmcore.cli import main
from mmcore.errors import PluginError

BUILTINS = {"tabular", "concat", "classification", "sklearn_tabular"}


def make_distribution(root, dist: str, module: str, source: str, entry_name: str | None = None):
    """Write an installed-looking distribution (module + dist-info with an mmcore entry point) into root."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[mmcore]\n{entry_name or module} = {module}\n")


GOOD = """
import mmcore
from mmcore_plugins.fusions.concat import ConcatFusion

class OtherConcat(ConcatFusion):
    '''A third-party concat.'''

@mmcore.hookimpl
def mmcore_register(registry):
    registry.add_fusion("third_party_concat", OtherConcat)
"""


def test_builtins_load_through_entry_points(manager):
    records = manager.records
    for name in BUILTINS:
        assert records[name].status == "ok", records[name].error
        assert records[name].distribution == "mmcore"
    assert manager.registry.get("fusion", "concat").plugin == "concat"
    assert manager.registry.get("encoder", "tabular_mlp").modality == "tabular"


def test_broken_plugin_is_reported_and_others_keep_working(tmp_path, monkeypatch):
    make_distribution(tmp_path, "mmcore-broken", "mmcore_broken_mod", "raise RuntimeError('boom at import')")
    make_distribution(tmp_path, "mmcore-good", "mmcore_good_mod", GOOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    manager = mmcore.create_plugin_manager(env={})
    broken = manager.records["mmcore_broken_mod"]
    assert broken.status == "failed"
    assert broken.distribution == "mmcore-broken" and broken.version == "1.2.3"
    assert broken.error == "RuntimeError: boom at import"
    assert manager.records["mmcore_good_mod"].status == "ok"
    assert manager.registry.get("fusion", "third_party_concat").distribution == "mmcore-good"
    assert manager.registry.get("fusion", "concat").plugin == "concat"


def test_plugin_whose_registration_raises_leaves_nothing_behind(tmp_path, monkeypatch):
    make_distribution(tmp_path, "mmcore-half", "mmcore_half_mod", """
        import mmcore
        from mmcore_plugins.fusions.concat import ConcatFusion

        @mmcore.hookimpl
        def mmcore_register(registry):
            registry.add_fusion("half_registered", ConcatFusion)
            raise ValueError("second component is broken")
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    manager = mmcore.create_plugin_manager(env={})
    assert manager.records["mmcore_half_mod"].status == "failed"
    assert "second component is broken" in manager.records["mmcore_half_mod"].error
    assert "half_registered" not in manager.registry.names("fusion")


def test_strict_mode_turns_a_broken_plugin_into_an_error(tmp_path, monkeypatch):
    make_distribution(tmp_path, "mmcore-broken", "mmcore_broken_mod", "raise ImportError('missing dependency xyz')")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match=r"'mmcore_broken_mod' \(distribution mmcore-broken 1.2.3\).*missing dependency xyz"):
        mmcore.create_plugin_manager(env={"MMCORE_STRICT_PLUGINS": "1"})


def test_duplicate_component_from_third_party_fails_that_plugin_naming_both_owners(tmp_path, monkeypatch):
    make_distribution(tmp_path, "mmcore-dupe", "mmcore_dupe_mod", """
        import mmcore
        from mmcore_plugins.fusions.concat import ConcatFusion

        @mmcore.hookimpl
        def mmcore_register(registry):
            registry.add_fusion("concat", ConcatFusion)
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    manager = mmcore.create_plugin_manager(env={})
    record = manager.records["mmcore_dupe_mod"]
    assert record.status == "failed"
    assert "plugin 'concat' from distribution 'mmcore'" in record.error
    assert "plugin 'mmcore_dupe_mod' from distribution 'mmcore-dupe'" in record.error
    assert manager.registry.get("fusion", "concat").plugin == "concat"


def test_blocked_plugins_are_not_imported(tmp_path, monkeypatch):
    make_distribution(tmp_path, "mmcore-broken", "mmcore_broken_mod", "raise RuntimeError('must never be imported')")
    monkeypatch.syspath_prepend(str(tmp_path))
    manager = mmcore.create_plugin_manager(env={"MMCORE_DISABLE_PLUGINS": "mmcore_broken_mod, concat"})
    assert manager.records["mmcore_broken_mod"].status == "blocked"
    assert manager.records["concat"].status == "blocked"
    assert "concat" not in manager.registry.names("fusion")
    assert "mmcore_broken_mod" not in sys.modules


def test_disable_autoload_skips_third_party_but_keeps_builtins(tmp_path, monkeypatch):
    make_distribution(tmp_path, "mmcore-good", "mmcore_good_mod", GOOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    manager = mmcore.create_plugin_manager(env={"MMCORE_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert manager.records["mmcore_good_mod"].status == "blocked"
    assert "autoload" in manager.records["mmcore_good_mod"].error
    assert manager.records["concat"].status == "ok"


def test_plugin_manager_is_not_built_at_import_time():
    code = "import mmcore, mmcore.plugin_manager as pm; print(pm._default_manager is None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_cli_plugins_json_lists_each_plugin_with_status_and_components(tmp_path, monkeypatch, capsys):
    make_distribution(tmp_path, "mmcore-broken", "mmcore_broken_mod", "raise RuntimeError('boom')")
    monkeypatch.syspath_prepend(str(tmp_path))
    mmcore.reset_plugin_manager()
    assert main(["plugins", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    by_name = {p["name"]: p for p in listing}
    assert set(by_name["concat"]) == {"name", "distribution", "version", "status", "error", "components",
                                      "import_ms", "output", "entry_point", "commands"}
    assert by_name["concat"]["import_ms"] >= 0 and by_name["concat"]["entry_point"].startswith("concat = ")
    concat = mmcore.get_registry().get("fusion", "concat")
    assert {"kind": "fusion", "name": "concat", "modality": None, "doc": concat.doc,
            "options": concat.options()} in by_name["concat"]["components"]
    assert by_name["tabular"]["components"][0]["modality"] == "tabular"
    assert by_name["mmcore_broken_mod"]["status"] == "failed"
    assert by_name["mmcore_broken_mod"]["error"] == "RuntimeError: boom"


def test_cli_plugins_table_and_usage_errors(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "concat  [ok]" in out and "tabular_mlp" in out
    assert main(["plugins", "--no-such-flag"]) == 2
    assert main(["no-such-command"]) == 2


def test_version_flag(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mmcore {mmcore.__version__}"


def test_python_dash_m_mmcore_is_the_cli():
    out = subprocess.run([sys.executable, "-m", "mmcore", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip().startswith("mmcore ")
