"""``mmcore plugins [NAME] [--json]``: components with their options, one component's options and documentation."""

from __future__ import annotations

import json

import mmcore
from mmcore.cli import main


class _SensorPlugin:
    @mmcore.hookimpl
    def mmcore_register(self, registry):
        registry.add_dataset("sensor_traces", load_sensor_traces)
        registry.add_modality("signal", extensions=(".sig",), doc="a sensor trace file")


def load_sensor_traces(split: str, path: str, window: int = 128, channels: list[str] | None = None):
    """Sensor traces cut into windows.

    Each row of ``path`` is one trace; ``window`` samples per example.
    """
    raise NotImplementedError


def test_one_component_prints_its_options_types_defaults_and_full_docstring(capsys):
    with mmcore.register_plugin(_SensorPlugin(), "sensor"):
        assert main(["plugins", "sensor_traces"]) == 0
    out = capsys.readouterr().out
    assert "dataset sensor_traces  (plugin 'sensor')" in out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("    ")}
    assert lines["path"] == ["str", "required"]
    assert lines["window"] == ["int", "default", "128"]
    assert "split" not in lines, "the framework fills split"
    assert "Each row of ``path`` is one trace" in out, "the whole docstring, not its first line"


def test_json_of_one_component_and_kind_prefix(capsys):
    assert main(["plugins", "--json", "fusion:concat"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "fusion" and {"name": "dim", "type": "int", "default": 256, "required": False} in info["options"]
    assert "input_dims" not in [o["name"] for o in info["options"]]


def test_the_listing_and_json_show_dataset_options_and_modalities(capsys):
    with mmcore.register_plugin(_SensorPlugin(), "sensor"):
        assert main(["plugins"]) == 0
        text = capsys.readouterr().out
        assert main(["plugins", "--json"]) == 0
        listing = json.loads(capsys.readouterr().out)
    assert "options: path (str, required), window (int) = 128, channels (list[str] | None) = null" in text
    assert "modality     signal" in text
    manifest = next(c for r in listing for c in r["components"] if c["name"] == "manifest")
    assert {"path", "columns"} <= {o["name"] for o in manifest["options"] if o["required"]}
    sensor = next(r for r in listing if r["name"] == "sensor")
    assert sensor["components"][0]["options"][0] == {"name": "path", "type": "str", "default": None, "required": True}


def test_an_unknown_name_is_a_one_line_error_with_the_closest_names(capsys):
    assert main(["plugins", "conkat"]) == 2
    assert "no component named 'conkat'; did you mean 'concat'" in capsys.readouterr().err


def test_a_closed_pipe_ends_the_command_quietly():
    """`mmcore plugins | head -1`: the reader leaves; no "internal error", no "Exception ignored", no
    traceback. The reading end is closed before anything is written, so every write fails."""
    import subprocess
    import sys

    for command in (["plugins"], ["plugins", "concat"]):  # a long listing, and one short enough to be written at exit
        process = subprocess.Popen([sys.executable, "-m", "mmcore", *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        process.stdout.close()
        _, err = process.communicate(timeout=120)
        assert err.decode() == "", command
        assert process.returncode in (0, 1)
