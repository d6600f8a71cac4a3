"""`mmcore shard` -> the `shards` data set gives what the manifest gives for the same rows: the same
raw values, the same processed tensors, the same targets and metadata; the folder rules; bad input
refused (exit 2, one line) before anything is written."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from shard_data import DATA, MODEL, SPLIT_ROWS

from mmcore.data import SPLITS
from mmcore.engine.datasets import model_data_options
from mmcore.plugin_manager import get_plugin_manager
from mmcore_plugins.shards.dataset import load_shards
from mmcore_plugins.shards.layout import INDEX, MARKER, ShardsError
from mmcore_plugins.shards.write import write_shards


def implied():
    return model_data_options(MODEL, get_plugin_manager().registry)


def manifest_splits(table):
    from mmcore_plugins.datasets.manifest import load_manifest

    options = {k: v for k, v in DATA.items() if k != "name"}
    return {split: load_manifest(split, path=str(table), **options, **implied()) for split in SPLITS}


def test_shards_give_the_manifests_samples_and_tensors(table, tmp_path):
    out = tmp_path / "shards"
    index = write_shards(str(table), DATA, implied(), out, shard_size=5)
    assert [len(index["splits"][s]["shards"]) for s in SPLITS] == [3, 1, 1]  # 13 rows: 5, 5, 3
    assert index["source"][0]["sha256"] and index["slots"]["image"]["kind"] == "file"
    assert index["slots"]["note"]["kind"] == "value"  # a text file's contents are the sample
    manifest = manifest_splits(table)
    from mmcore.model import build_model

    model = build_model({**MODEL, "head": {"name": "classification", "num_classes": 3}}, get_plugin_manager().registry)
    for split in SPLITS:
        shards = load_shards(split, out, **implied())
        assert len(shards) == len(manifest[split]) == SPLIT_ROWS[split]
        meta = {k: v for k, v in shards.metadata.items() if k != "shards"}
        assert meta == json.loads(json.dumps(manifest[split].metadata))
        for i in range(len(shards)):
            a, b = manifest[split][i], shards[i]
            assert list(a["inputs"]) == list(b["inputs"])
            assert a["target"] == b["target"] and a["origin"] == b["origin"]
            for slot, raw in a["inputs"].items():
                if slot in ("image", "sound"):
                    assert (raw is None) == (b["inputs"][slot] is None), slot
                    if raw is not None:
                        assert b["inputs"][slot].getvalue() == open(raw, "rb").read()
                else:
                    assert raw == b["inputs"][slot], slot
        batch_a = model.collate([manifest[split][i] for i in range(len(shards))])
        batch_b = model.collate([shards[i] for i in range(len(shards))])
        assert torch.equal(batch_a["targets"], batch_b["targets"]) if "targets" in batch_a else True
        flat_a, flat_b = torch.utils._pytree.tree_flatten(batch_a)[0], torch.utils._pytree.tree_flatten(batch_b)[0]
        assert len(flat_a) == len(flat_b)
        for x, y in zip(flat_a, flat_b, strict=True):
            if isinstance(x, torch.Tensor):
                assert torch.equal(x, y)
    assert manifest["train"][2]["inputs"]["image"] is None  # the missing cell stays missing
    assert manifest["train"][5]["inputs"]["table"] is None


def test_the_same_rows_give_the_same_bytes_and_resharding_replaces_only_its_own(table, tmp_path):
    out = tmp_path / "shards"
    write_shards(str(table), DATA, implied(), out, shard_size=4)
    first = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    assert "train-000003.tar" in first
    (out / "notes.txt").write_text("mine")
    write_shards(str(table), DATA, implied(), out, shard_size=100)  # our folder: written again, no --overwrite
    names = sorted(p.name for p in out.iterdir())
    assert names == [MARKER, INDEX, "notes.txt", "test-000000.tar", "train-000000.tar", "val-000000.tar"]
    assert (out / "notes.txt").read_text() == "mine"
    write_shards(str(table), DATA, implied(), out, shard_size=4)
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == first


def test_a_users_folder_is_refused_and_overwrite_keeps_their_files(table, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ShardsError, match="not empty and holds no mmcore shards"):
        write_shards(str(table), DATA, implied(), out, shard_size=5)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    (out / INDEX).write_text("{}")
    with pytest.raises(ShardsError, match="index.json is a file of yours"):
        write_shards(str(table), DATA, implied(), out, shard_size=5, overwrite=True)
    (out / INDEX).unlink()
    write_shards(str(table), DATA, implied(), out, shard_size=5, overwrite=True)
    assert (out / "keep.txt").read_text() == "x" and len(load_shards("train", out)) == SPLIT_ROWS["train"]


def test_a_changed_or_damaged_shard_is_named(table, tmp_path):
    out = tmp_path / "shards"
    write_shards(str(table), DATA, implied(), out, shard_size=5)
    shard = out / "val-000000.tar"
    data = bytearray(shard.read_bytes())
    data[100:160] = b"\xff" * 60  # the first member's tar header: same size, damaged bytes
    shard.write_bytes(bytes(data))
    dataset = load_shards("val", out)
    with pytest.raises(ShardsError, match="val-000000.tar"):
        for i in range(len(dataset)):
            dataset[i]
    shard.write_bytes(bytes(data) + b"\0" * 512)
    with pytest.raises(ShardsError, match="changed after"):
        load_shards("val", out)
    write_shards(str(table), DATA, implied(), out, shard_size=5)
    with pytest.raises(ShardsError, match="the model's head needs regression"):
        load_shards("train", tmp_path / "shards", target_type="regression")


def run_cli(capsys, *args):
    from mmcore.cli import main

    code = main(["shard", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_refuses_bad_rows_with_exit_2_before_writing(table, tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": DATA, "model": MODEL}))
    rows = table.read_text().splitlines()
    rows[4] = rows[4].replace("media/3.png", "media/none.png")
    bad = table.with_name("bad.csv")
    bad.write_text("\n".join(rows) + "\n")
    code, _, err = run_cli(capsys, bad, "--config", config, "--out", tmp_path / "out", "--shard-size", 4)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "bad.csv: row 4, column 'image'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    code, _, err = run_cli(capsys, table, "--config", config, "--out", tmp_path / "out", "--shard-size", 0)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--shard-size" in err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("x")
    code, _, err = run_cli(capsys, table, "--config", config, "--out", tmp_path / "mine", "--shard-size", 4)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--overwrite" in err
    code, _, err = run_cli(capsys, table, "--config", config, "--out", tmp_path / "out", "--shard-size", 4, "data.colums={}")
    assert code == 2 and "data.colums: unknown option" in err and "did you mean 'columns'" in err, err
    code, out, err = run_cli(capsys, table, "--config", config, "--out", tmp_path / "out", "--shard-size", 8)
    assert code == 0, err
    assert "train 13 samples in 2 shard(s)" in out


def test_a_members_bytes_are_keyed_by_content_and_perturbed_at_their_own_rate(table, tmp_path):
    """The frozen-feature cache keys a file's bytes by content; audio perturbations (trainer.augment,
    --robustness) read a member's bytes at the clip's own rate, as they read its file."""
    from mmcore.feature_cache import sample_key
    from mmcore_plugins.perturbations import AudioWhiteNoise

    write_shards(str(table), DATA, implied(), tmp_path / "shards", shard_size=5)
    shards, manifest = load_shards("train", tmp_path / "shards"), manifest_splits(table)["train"]
    a, b = shards[0]["inputs"]["image"], shards[0]["inputs"]["image"]
    assert a is not b and sample_key(a) == sample_key(b) != sample_key(shards[1]["inputs"]["image"])
    noise = AudioWhiteNoise(level=0.0)
    from_file = noise(manifest[0]["inputs"]["sound"], torch.Generator().manual_seed(0))
    from_bytes = noise(shards[0]["inputs"]["sound"], torch.Generator().manual_seed(0))
    assert from_file[1] == from_bytes[1] == 8000 and torch.equal(from_file[0], from_bytes[0])


def test_the_shards_dataset_keeps_the_dataset_contract(table, tmp_path):
    """mmcore.testing's dataset checks (what the conformance suite runs on every data set) on real shards."""
    from mmcore.testing import check_component

    write_shards(str(table), DATA, implied(), tmp_path / "shards", shard_size=5)
    registry = get_plugin_manager().registry
    built = check_component(registry.get("dataset", "shards"), options={"path": str(tmp_path / "shards")}, registry=registry)
    assert [len(built[s]) for s in SPLITS] == [SPLIT_ROWS[s] for s in SPLITS]
