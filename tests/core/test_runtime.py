"""Runtime registration: register_plugin (and its context manager), and the per-kind decorators."""

import types

import pytest

import mmcore
from mmcore_plugins.fusions.concat import ConcatFusion


def plugin_module(**components):
    module = types.ModuleType("notebook_plugin")

    @mmcore.hookimpl
    def mmcore_register(registry):
        for name, factory in components.items():
            registry.add_fusion(name, factory)

    module.mmcore_register = mmcore_register
    return module


def test_register_plugin_as_context_manager_unregisters_on_exit(empty_manager):
    with mmcore.register_plugin(plugin_module(nb_concat=ConcatFusion), manager=empty_manager) as handle:
        assert [c.name for c in handle.components] == ["nb_concat"]
        assert empty_manager.registry.get("fusion", "nb_concat").factory is ConcatFusion
    assert "nb_concat" not in empty_manager.registry.names("fusion")
    assert handle.name not in empty_manager.records


def test_register_plugin_on_the_default_manager_is_visible_to_build_model():
    spec = {
        "encoders": {"a": {"name": "tabular_mlp", "num_features": 3, "dim": 8}, "b": {"name": "tabular_mlp", "num_features": 2, "dim": 4}},
        "fusion": {"name": "nb_concat", "dim": 6},
        "head": {"name": "classification", "num_classes": 2},
    }
    with mmcore.register_plugin(plugin_module(nb_concat=ConcatFusion)):
        model = mmcore.build_model(spec)
    assert isinstance(model.fusion, ConcatFusion) and model.fusion.dim == 6
    with pytest.raises(mmcore.ConfigError, match="unknown fusion 'nb_concat'"):
        mmcore.build_model(spec)


def test_duplicate_at_runtime_raises_and_leaves_nothing(manager):
    with pytest.raises(mmcore.DuplicateComponentError, match="plugin 'concat' from distribution 'mmcore'"):
        mmcore.register_plugin(plugin_module(concat=ConcatFusion), name="dupe", manager=manager)
    assert "dupe" not in manager.records and manager.get_plugin("dupe") is None
    assert manager.registry.get("fusion", "concat").plugin == "concat"


def test_override_replaces_until_unregistered(manager):
    class MyConcat(ConcatFusion):
        """Mine."""

    mod = types.ModuleType("override_plugin")

    @mmcore.hookimpl
    def mmcore_register(registry):
        registry.add_fusion("concat", MyConcat, override=True)

    mod.mmcore_register = mmcore_register
    with mmcore.register_plugin(mod, manager=manager):
        assert manager.registry.get("fusion", "concat").factory is MyConcat
    assert manager.registry.get("fusion", "concat").factory is ConcatFusion


def test_decorators_register_one_component_each(empty_manager):
    @mmcore.register_fusion("decorated_fusion", manager=empty_manager)
    class DecoratedFusion(ConcatFusion):
        """Decorated."""

    @mmcore.register_encoder("decorated_encoder", modality="tabular", manager=empty_manager)
    class DecoratedEncoder(mmcore.Encoder):
        """An encoder."""

    info = empty_manager.registry.get("fusion", "decorated_fusion")
    assert info.factory is DecoratedFusion and info.doc == "Decorated."
    assert empty_manager.registry.get("encoder", "decorated_encoder").modality == "tabular"
    DecoratedFusion.__mmcore_plugin__.unregister()
    assert empty_manager.registry.names("fusion") == []


def test_a_plugin_name_cannot_be_registered_twice(empty_manager):
    mmcore.register_plugin(plugin_module(), name="same", manager=empty_manager)
    with pytest.raises(ValueError, match="a plugin named 'same' is already registered"):
        mmcore.register_plugin(plugin_module(), name="same", manager=empty_manager)


def test_a_hookimpl_for_an_unknown_hook_is_rejected(empty_manager):
    mod = types.ModuleType("typo_plugin")

    @mmcore.hookimpl
    def mmcore_regster(registry):  # typo: pluggy validates against the hookspecs
        pass

    mod.mmcore_regster = mmcore_regster
    with pytest.raises(Exception, match="mmcore_regster"):
        mmcore.register_plugin(mod, manager=empty_manager)


def test_registering_an_already_installed_plugin_again_leaves_it_as_it_is(empty_manager):
    """A notebook that registers a module its package also installs (entry point loaded) gets a handle
    to that registration, not pluggy's "already registered under a different name"."""
    module = plugin_module(installed_max=ConcatFusion)
    empty_manager.load_plugin(module, "installed")  # as the entry point loaded it
    with mmcore.register_plugin(module, manager=empty_manager) as handle:
        assert handle.name == "installed" and not handle.owned
        assert ("fusion", "installed_max") in empty_manager.registry
    assert ("fusion", "installed_max") in empty_manager.registry, "still installed after the block"
