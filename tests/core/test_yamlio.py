"""The one YAML loader: 1.2 floats, plain data only, bounded aliases, errors with file:line:column."""

import pytest

from mmcore.engine.config import apply_overrides, load_config, validate_config
from mmcore.errors import ConfigError, UserInputError
from mmcore.yamlio import (
    MAX_ALIAS_NODES,
    MAX_DEPTH,
    YamlError,
    dump_yaml,
    load_override_value,
    load_yaml,
    load_yaml_file,
)


@pytest.mark.parametrize(("text", "value"), [
    ("1e-3", 1e-3), ("1E5", 1e5), (".5e-2", 0.005), ("-2e+3", -2000.0), ("+1.5e3", 1500.0), ("3.", 3.0),
    ("1.0e-05", 1e-05), ("2.5", 2.5), ("1_000.5", 1000.5), (".inf", float("inf")), ("-.inf", float("-inf")),
])
def test_yaml_1_2_floats(text, value):
    loaded = load_yaml(text)
    assert isinstance(loaded, float) and loaded == value


@pytest.mark.parametrize(("text", "value"), [
    ("7", 7), ("-5", -5), ("0x1F", 31), ("true", True), ("no", False), ("~", None), ("null", None),
    # strings that merely look odd stay the text written
    ("inf", "inf"), ("nan", "nan"), ("1e", "1e"), ("e5", "e5"), ("1.2.3", "1.2.3"), ("1e-3x", "1e-3x"),
    ("12:30", "12:30"), ("1:30.5", "1:30.5"), ("2024-01-01", "2024-01-01"), ("2024-01-01 10:00", "2024-01-01 10:00"),
    ("=", "="), ("'1e-3'", "1e-3"), ("!!str 1e-3", "1e-3"), ("!!float 1", 1.0),
])
def test_other_scalars(text, value):
    assert load_yaml(text) == value and type(load_yaml(text)) is type(value)


def test_nan_is_a_float():
    value = load_yaml(".nan")
    assert isinstance(value, float) and value != value


def test_floats_inside_nested_mappings_and_lists():
    data = load_yaml("trainer:\n  lr: 1e-3\n  lr_multipliers: {encoders.text: 1e-1, head: 2E0}\n  xs: [1e2, -1e-2]\n")
    assert data == {"trainer": {"lr": 0.001, "lr_multipliers": {"encoders.text": 0.1, "head": 2.0}, "xs": [100.0, -0.01]}}


@pytest.mark.parametrize(("text", "where", "words"), [
    ("a: 1\nb: !!python/object/apply:os.system ['echo hacked']\n", ":2:4:", "!!python/object/apply:os.system"),
    ("!!python/name:os.system\n", ":1:1:", "!!python/name:os.system"),
    ("a:\n  b: !!python/object:collections.OrderedDict {}\n", ":2:6:", "!!python/object:collections.OrderedDict"),
    ("x: !custom 3\n", ":1:4:", "'!custom'"),
    ("x: !!binary aGVsbG8=\n", ":1:4:", "!!binary"),
    ("x: !!set {a, b}\n", ":1:4:", "!!set"),
    ("x: !!timestamp 2024-01-01\n", ":1:4:", "!!timestamp"),
])
def test_every_tag_beyond_plain_data_is_refused_with_line_and_column(tmp_path, text, where, words):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(YamlError) as info:
        load_yaml_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}{where}") and words in message and "not allowed" in message
    assert isinstance(info.value, UserInputError) and isinstance(info.value, ValueError)


def billion_laughs(levels: int = 9) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_by_the_alias_budget(tmp_path):
    path = tmp_path / "lol.yaml"
    path.write_text(billion_laughs())  # ~700 bytes expanding to 9**9 strings
    with pytest.raises(YamlError, match=rf"aliases expand this document by more than {MAX_ALIAS_NODES} nodes") as info:
        load_yaml_file(path)
    assert info.value.line is not None and info.value.source == str(path)


def test_aliases_within_the_budget_load_as_independent_copies():
    data = load_yaml("base: &b {dim: 8, xs: [1, 2]}\nfirst: *b\nsecond:\n  <<: *b\n  dim: 16\n")
    assert data == {"base": {"dim": 8, "xs": [1, 2]}, "first": {"dim": 8, "xs": [1, 2]}, "second": {"dim": 16, "xs": [1, 2]}}
    data["first"]["xs"].append(3)
    assert data["base"]["xs"] == [1, 2], "an alias must not share state with its anchor"
    # just under the budget still loads
    items = ", ".join(["*a"] * (MAX_ALIAS_NODES // 11))
    assert len(load_yaml(f"a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nb: [{items}]")["b"]) == MAX_ALIAS_NODES // 11


def test_recursive_alias_deep_nesting_duplicates_and_size_are_refused(tmp_path):
    with pytest.raises(YamlError, match="recursive alias"):
        load_yaml("a: &x [1, *x]")
    with pytest.raises(YamlError, match=f"nested more than {MAX_DEPTH} levels"):
        load_yaml("[" * 5000 + "]" * 5000)
    with pytest.raises(YamlError, match=r"c.yaml:3:3: duplicate key 'lr' \(first given on line 2\)"):
        load_yaml("trainer:\n  lr: 1\n  lr: 2\n", source="c.yaml")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * (5 * 1024 * 1024) + b"\n")
    with pytest.raises(YamlError, match="larger than"):
        load_yaml_file(big)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("a: 1\nname: caf\xe9\n".encode("latin-1"))
    with pytest.raises(YamlError, match=r"latin.yaml:2: not UTF-8 text \(byte 0xe9"):
        load_yaml_file(latin)


def test_syntax_errors_name_line_and_column():
    with pytest.raises(YamlError, match=r"^c.yaml:3:2: not valid YAML") as info:
        load_yaml("a:\n  - b\n c: 1\n", source="c.yaml")
    assert (info.value.line, info.value.column) == (3, 2)
    with pytest.raises(YamlError, match="single document"):
        load_yaml("a: 1\n---\nb: 2\n")


def test_override_values():
    assert load_override_value("1e-3", source="o") == 0.001
    assert load_override_value("{head: 2e0}", source="o") == {"head": 2.0}
    # text that is not YAML is taken as typed (a glob, an unclosed bracket)
    assert load_override_value("*.png", source="o") == "*.png"
    assert load_override_value("[1, 2", source="o") == "[1, 2"
    with pytest.raises(YamlError, match=r"^override 'x=!!python/object/apply:os.system \[ls\]':1:1: the tag"):
        load_override_value("!!python/object/apply:os.system [ls]", source="override 'x=!!python/object/apply:os.system [ls]'")


def test_config_accepts_exponent_floats_in_files_overrides_and_mappings(tmp_path, manager):
    config = tmp_path / "c.yaml"
    config.write_text(
        "data: {name: sklearn_tabular, dataset: wine}\n"
        "model:\n  encoders: {first: {name: tabular_mlp, num_features: 13, dim: 8}}\n"
        "  head: {name: classification, num_classes: 3}\n"
        "trainer:\n  lr: 1e-3\n  weight_decay: 1E-2\n  lr_multipliers: {head: 5e-1}\n"
    )
    options = validate_config(load_config(config, ["trainer.grad_clip=2e0", "trainer.lr_multipliers.encoders=1e-1"]), manager.registry)
    assert options.lr == 1e-3 and options.weight_decay == 0.01 and options.grad_clip == 2.0
    assert options.lr_multipliers == {"head": 0.5, "encoders": 0.1}


def test_python_tag_in_an_override_is_a_config_error_not_a_folder_name():
    with pytest.raises(ConfigError, match=r"trainer.run_dir: override .* the tag !!python/object/apply:os.system is not allowed"):
        apply_overrides({}, ["trainer.run_dir=!!python/object/apply:os.system ['touch pwned']"])


def test_dump_reads_back_unchanged():
    data = {"trainer": {"lr": 1e-3, "name": "2024-01-01", "t": "12:30", "x": [1.5e-7, "inf"]}}
    assert load_yaml(dump_yaml(data)) == data


@pytest.mark.parametrize("text", ["1e3", "-2e+3", "1E5", ".5e-2", "3.", "+1", "007", "0x1f", "True", "yes", "null", "~",
                                  "1_000", ".inf", ".nan", "inf", "2024-01-01"])
def test_strings_that_look_like_numbers_stay_strings(text):
    """A class named "1e3" is a float to YAML 1.2 (our loader) but not to PyYAML's 1.1 dumper: it must be quoted."""
    data = {"classes": [text], "name": text}
    assert load_yaml(dump_yaml(data)) == data
