"""mmcore.bulk: the cyclic collector paused for a bulk build, and restored whatever happens."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from PIL import Image

import mmcore_plugins.datasets.manifest.dataset as dataset_module
from mmcore.bulk import collector_paused
from mmcore_plugins.datasets.manifest import load_manifest
from mmcore_plugins.datasets.manifest.rows import RowParser


@pytest.fixture(autouse=True)
def _collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was else gc.disable)()


def test_paused_inside_restored_after_even_when_the_block_raises():
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():  # nested: the outer pause holds after the inner one ends
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(KeyError), collector_paused():
        raise KeyError("x")
    assert gc.isenabled()


def test_a_collector_disabled_by_the_caller_stays_disabled():
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()


def test_cycles_made_while_paused_are_collected_after():
    class Node:
        pass

    with collector_paused():
        a, b = Node(), Node()
        a.other, b.other = b, a
        del a, b
    assert gc.collect() >= 2


def test_a_manifest_is_parsed_with_the_collector_paused_and_it_runs_again_after(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("image,label\na.png,x\na.png,y\n")
    seen = []
    real = RowParser.sample

    def sample(self, *args, **kwargs):
        seen.append(gc.isenabled())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(RowParser, "sample", sample)
    dataset_module._CACHE.clear()  # noqa: SLF001 - parse again
    data = load_manifest("train", str(tmp_path / "m.csv"), columns={"image": "image"}, target="label",
                         path_columns=["image"], val_fraction=0, test_fraction=0)
    assert len(data) == 2 and seen == [False, False]
    assert gc.isenabled()
