import pytest

from mmcore import ComponentInfo, DuplicateComponentError, PluginRegistry, Registry, UnknownComponentError


class Alpha:
    """Alpha fusion: first line.

    More text.
    """


def test_doc_defaults_to_first_docstring_line_and_owner_is_recorded():
    registry = Registry()
    info = PluginRegistry(registry, "p1", "dist-one").add_fusion("alpha", Alpha)
    assert info.doc == "Alpha fusion: first line."
    assert registry.get("fusion", "alpha").owner == "plugin 'p1' from distribution 'dist-one'"


def test_unknown_name_lists_registered_ones_and_closest_match():
    registry = Registry()
    view = PluginRegistry(registry, "p")
    view.add_fusion("concat", Alpha)
    view.add_fusion("gated", Alpha)
    with pytest.raises(UnknownComponentError) as err:
        registry.get("fusion", "conkat")
    assert str(err.value) == "unknown fusion 'conkat'; did you mean 'concat'? (registered fusions: concat, gated)"


def test_duplicate_names_both_owners():
    registry = Registry()
    PluginRegistry(registry, "first", "dist-a").add_head("cls", Alpha)
    with pytest.raises(DuplicateComponentError, match="by plugin 'first' from distribution 'dist-a' and by plugin 'second'"):
        PluginRegistry(registry, "second").add_head("cls", Alpha)


def test_same_name_of_different_kinds_is_fine():
    registry = Registry()
    view = PluginRegistry(registry, "p")
    view.add_head("x", Alpha)
    view.add_fusion("x", Alpha)
    assert registry.names("head") == ["x"] and registry.names("fusion") == ["x"]


def test_override_shadows_and_removal_restores_previous():
    registry = Registry()
    PluginRegistry(registry, "base").add_fusion("f", Alpha)

    class Beta:
        pass

    PluginRegistry(registry, "over").add_fusion("f", Beta, override=True)
    assert registry.get("fusion", "f").factory is Beta
    registry.remove_plugin("over")
    assert registry.get("fusion", "f").factory is Alpha


def test_encoder_needs_modality_and_factory_must_be_callable():
    view = PluginRegistry(Registry(), "p")
    with pytest.raises(ValueError, match="modality must be a non-empty string"):
        view.add_encoder("e", Alpha, modality="")
    with pytest.raises(TypeError, match="must be callable"):
        view.add_fusion("f", 42)
    with pytest.raises(ValueError, match="unknown component kind 'widget'"):
        view.add("widget", "w", Alpha)


def test_component_info_is_immutable():
    info = ComponentInfo(kind="head", name="h", factory=Alpha, plugin="p")
    with pytest.raises(AttributeError):
        info.name = "other"
