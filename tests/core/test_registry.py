import pytest

import mmcore
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


class Wrapped:
    """A fusion whose first sentence is long enough to wrap (e.g. over the line limit) onto a second
    line. The rest is detail.

    More text.
    """


class NoSentence:
    """a summary without a full stop
    that wraps"""


def test_doc_is_the_whole_first_sentence_even_when_it_wraps():
    registry = Registry()
    plugin = PluginRegistry(registry, "p1", None)
    assert plugin.add_fusion("wrapped", Wrapped).doc == ("A fusion whose first sentence is long enough to wrap (e.g. over "
                                                         "the line limit) onto a second line.")
    assert plugin.add_fusion("no_sentence", NoSentence).doc == "a summary without a full stop that wraps"
    assert plugin.add_fusion("undocumented", type("Bare", (), {})).doc == ""


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


# ---------------------------------------------------------------------- modalities: one source, extensions
class _Signal(mmcore.Encoder):
    """A sensor-signal encoder (its modality is declared on the class)."""

    modality, dim = "signal", 4

    def processor(self):
        raise NotImplementedError

    def forward(self, batch):
        raise NotImplementedError


def test_an_encoders_modality_comes_from_its_class_and_a_disagreement_names_both():
    view = PluginRegistry(Registry(), "p", "dist-p")
    assert view.add_encoder("sig", _Signal).modality == "signal"
    assert view.add_encoder("sig2", _Signal, modality="signal").modality == "signal", "agreeing twice is fine"
    with pytest.raises(ValueError, match=r"encoder 'sig3': registered with modality='image' but _Signal.modality is 'signal'"):
        view.add_encoder("sig3", _Signal, modality="image")
    with pytest.raises(ValueError, match="modality must be a non-empty string"):
        view.add_encoder("fn", lambda: _Signal())  # a function: the modality must be given
    assert view.add_encoder("fn", lambda: _Signal(), modality="signal").modality == "signal"


def test_a_factory_function_building_another_modality_is_refused_when_the_model_is_built():
    registry = Registry()
    view = PluginRegistry(registry, "p")
    view.add_encoder("liar", lambda: _Signal(), modality="image")
    view.add_head("h", Alpha)
    with pytest.raises(TypeError, match="registered with modality 'image' but built a _Signal whose modality is 'signal'"):
        mmcore.build_model({"encoders": {"x": {"name": "liar"}}, "head": {"name": "h"}}, registry)


def test_modalities_declare_their_extensions_lazily_and_are_removed_with_their_plugin():
    registry = Registry()
    calls = []

    def signal_extensions():
        calls.append(1)
        return [".SIG", ".csvsig"]

    PluginRegistry(registry, "sig").add_modality("signal", extensions=signal_extensions, doc="a sensor trace")
    PluginRegistry(registry, "img").add_modality("image", extensions=(".png", ".jpg"))
    PluginRegistry(registry, "more").add_modality("image", extensions=(".heic",))  # a plugin adds a format
    assert calls == [], "declaring reads nothing"
    assert registry.extensions("image") == {".png", ".jpg", ".heic"}
    assert registry.modality_of("/data/run 1/trace.sig") == "signal" and registry.modality_of("a.JPG") == "image"
    assert registry.modality_of("notes.md") is None
    registry.remove_plugin("more")
    assert registry.modality_of("x.heic") is None
    assert list(registry.modalities()) == ["image", "signal"]


def test_an_extension_claimed_by_two_modalities_is_an_error_naming_both_or_left_unassigned():
    registry = Registry()
    PluginRegistry(registry, "img", "dist-img").add_modality("image", extensions=(".tif",))
    with pytest.raises(DuplicateComponentError, match=r"\['.tif'\] declared for modality 'scan' by plugin 'scan'.*"
                                                      r"modality 'image' by plugin 'img' from distribution 'dist-img'"):
        PluginRegistry(registry, "scan").add_modality("scan", extensions=(".tif",))
    PluginRegistry(registry, "lazy").add_modality("scan", extensions=lambda: (".tif", ".scn"))
    assert registry.modality_of("a.tif") is None, "ambiguous: the user names the slot"
    assert registry.modality_of("a.scn") == "scan"
    for bad, error in ((("png",), ValueError), (".png", TypeError), ((".p/ng",), ValueError)):
        with pytest.raises(error, match="extension"):
            PluginRegistry(Registry(), "p").add_modality("image", extensions=bad)


def test_predict_reads_extensions_from_the_registry():
    from mmcore.cli import EXTENSION_MODALITY

    assert EXTENSION_MODALITY[".png"] == "image" and EXTENSION_MODALITY[".wav"] == "audio"
    assert EXTENSION_MODALITY[".txt"] == "text" and ".sig" not in EXTENSION_MODALITY

    class SignalPlugin:
        @mmcore.hookimpl
        def mmcore_register(self, registry):
            registry.add_modality("signal", extensions=(".sig",))

    with mmcore.register_plugin(SignalPlugin(), "signal-plugin"):
        assert EXTENSION_MODALITY[".sig"] == "signal"
    assert ".sig" not in EXTENSION_MODALITY
