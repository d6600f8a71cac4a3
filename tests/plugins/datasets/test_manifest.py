"""The manifest data set: missing cells, bad rows (error or skip), paths that escape, CSV and JSONL."""

import json

import numpy as np
import pytest

from mmcore_plugins.datasets.manifest import BadSampleError, load_manifest


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    return tmp_path


def test_missing_cells_are_missing_modalities(folder):
    m = write_jsonl(folder / "m.jsonl", [
        {"doc": "a.txt", "text": "hello", "x": 1, "y": "2.5", "label": 1},
        {"doc": "", "text": "hi", "x": None, "y": "", "label": 0},
    ])
    kwargs = {"columns": {"file": "doc", "text": "text", "table": ["x", "y"]}, "target": "label", "path_columns": ["doc"],
              "val_fraction": 0, "test_fraction": 0}
    data = load_manifest("train", str(m), **kwargs)
    first, second = sorted(data.samples, key=lambda s: -s["target"])
    assert first["inputs"] == {"file": str((folder / "a.txt").resolve()), "text": "hello", "table": [1.0, 2.5]}
    assert second["inputs"] == {"file": None, "text": "hi", "table": None}
    assert data.metadata["missing"] == {"file": 1, "text": 0, "table": 1}


def test_bad_rows_name_manifest_row_and_column_or_are_skipped(folder, caplog):
    m = write_jsonl(folder / "m.jsonl", [
        {"x": "oops", "label": 0},
        {"x": 3, "label": 1},
        {"x": "nan", "label": 1},
    ])
    kwargs = {"columns": {"t": ["x"]}, "target": "label", "val_fraction": 0, "test_fraction": 0}
    with pytest.raises(BadSampleError, match=r"m.jsonl: row \d, column 'x': expected a number, got 'oops'"):
        load_manifest("train", str(m), **kwargs)
    data = load_manifest("train", str(m), on_bad_sample="skip", **kwargs)
    assert [s["inputs"]["t"] for s in data.samples] == [[3.0]]
    assert data.metadata["skipped"] == 2
    assert sum("on_bad_sample=skip" in r.message for r in caplog.records) == 1, "logged once"


def test_paths_escaping_the_manifest_folder_are_refused(folder):
    (folder / "sub").mkdir()
    m = write_jsonl(folder / "sub" / "m.jsonl", [{"doc": "../a.txt", "label": 0}])
    kwargs = {"columns": {"f": "doc"}, "target": "label", "path_columns": ["doc"], "val_fraction": 0, "test_fraction": 0}
    with pytest.raises(BadSampleError, match="escapes the table's folder"):
        load_manifest("train", str(m), **kwargs)
    assert len(load_manifest("train", str(m), allow_outside_paths=True, **kwargs)) == 1
    write_jsonl(m, [{"doc": "missing.txt", "label": 0}])
    with pytest.raises(BadSampleError, match="does not exist"):
        load_manifest("train", str(m), **kwargs)


def test_csv_with_split_column(folder):
    m = folder / "m.csv"
    m.write_text("text,other,label,split\nun,a,1,train\ndeux,b,3,test\n,c,3,train\n")
    kwargs = {"columns": {"text": "text", "other": "other"}, "target": "label", "split_column": "split", "val_fraction": 0}
    train = load_manifest("train", str(m), **kwargs)
    test = load_manifest("test", str(m), **kwargs)
    assert [s["inputs"]["text"] for s in train.samples] == ["un", None]
    assert train.metadata["classes"] == test.metadata["classes"] == ["1", "3"]
    assert [s["target"] for s in test.samples] == [1], "label 3 is class #1 of the training split's labels"


def _png(path, size=8):
    from PIL import Image

    Image.fromarray(np.arange(size * size, dtype=np.uint8).reshape(size, size)).save(path)
    return path


def _wav(path, seconds=0.1, rate=8000):
    import wave

    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((np.sin(np.arange(int(seconds * rate)) * 0.3) * 8000).astype(np.int16).tobytes())
    return path


def test_unreadable_files_are_found_when_the_dataset_is_built(folder, caplog):
    _png(folder / "good.png")
    _wav(folder / "good.wav")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk")
    m = write_jsonl(folder / "m.jsonl", [
        {"img": "good.png", "snd": "good.wav", "label": 0},
        {"img": "broken.png", "snd": "good.wav", "label": 1},
        {"img": "good.png", "snd": "broken.wav", "label": 2},
        {"img": "good.png", "snd": "", "label": 3},
        {"img": "", "snd": "good.wav", "label": 4},
    ])
    kwargs = {"columns": {"image": "img", "audio": "snd"}, "target": "label", "path_columns": ["img", "snd"],
              "val_fraction": 0, "test_fraction": 0}
    with pytest.raises(BadSampleError, match=r"m.jsonl: row 2, column 'img': cannot read image"):
        load_manifest("train", str(m), **kwargs)
    data = load_manifest("train", str(m), on_bad_sample="skip", **kwargs)
    assert sorted(s["target"] for s in data.samples) == [0, 3, 4]
    assert data.metadata["missing"] == {"image": 1, "audio": 1}
    assert data.metadata["skipped"] == 2
    # validate=exists trusts the files (a generated data set); the processor reports them at read time.
    assert len(load_manifest("train", str(m), validate="exists", **kwargs)) == 5


def test_the_rows_reach_the_real_processors_with_missing_modalities_as_absent(folder):
    from mmcore_plugins.encoders.audio import AudioCNNEncoder
    from mmcore_plugins.encoders.image import SmallCNNEncoder

    _png(folder / "a.png")
    _wav(folder / "a.wav")
    m = write_jsonl(folder / "m.jsonl", [{"img": "a.png", "snd": "", "label": 0}, {"img": "", "snd": "a.wav", "label": 1}])
    data = load_manifest("train", str(m), columns={"image": "img", "audio": "snd"}, target="label",
                         path_columns=["img", "snd"], val_fraction=0, test_fraction=0)
    samples = sorted(data.samples, key=lambda s: s["target"])
    for slot, encoder in (("image", SmallCNNEncoder(dim=8, image_size=8, width=8)), ("audio", AudioCNNEncoder(dim=8, n_mels=16, width=8))):
        processor = encoder.processor()
        raws = [s["inputs"][slot] for s in samples]
        feats = encoder.eval()(processor.collate([None if r is None else processor(r) for r in raws]))
        assert feats.present.tolist() == [r is not None for r in raws]
        absent = ~feats.present
        assert feats.pooled[absent].abs().sum() == 0 and not feats.mask[absent].any()


def test_tabular_mapping_columns_lists_of_targets_and_separate_split_files(folder):
    m = write_jsonl(folder / "train.jsonl", [
        {"age": 30, "city": "Oslo", "y1": 1, "y2": "0.5"},
        {"age": "", "city": "", "y1": 0, "y2": 1},
        {"age": 41, "city": "", "y1": 0, "y2": 2},
    ])
    v = write_jsonl(folder / "val.jsonl", [{"age": "7", "city": "Rome", "y1": 1, "y2": 0}])
    kwargs = {"columns": {"profile": {"numeric": ["age"], "categorical": ["city"]}, "other": "y1"}, "target": ["y1", "y2"],
              "val_path": str(v), "test_fraction": 0}
    train = load_manifest("train", str(m), **kwargs)
    assert [s["inputs"]["profile"] for s in train.samples] == [{"age": 30.0, "city": "Oslo"}, None, {"age": 41.0, "city": None}]
    assert [s["target"] for s in train.samples] == [[1, 0.5], [0, 1], [0, 2]]
    assert len(load_manifest("test", str(m), **kwargs)) == 0, "a val file, no test file and test_fraction 0: no test split"
    with pytest.raises(ValueError, match="test_fraction: the test split is empty"):
        load_manifest("train", str(m), **{**kwargs, "test_fraction": None})
    assert [s["inputs"]["profile"] for s in load_manifest("val", str(m), **kwargs).samples] == [{"age": 7.0, "city": "Rome"}]
    write_jsonl(v, [{"age": "x", "city": "Rome", "y1": 1, "y2": 0}])
    # The whole data set is checked whichever split is built: a bad val row stops the training split too.
    for split in ("train", "val"):
        with pytest.raises(BadSampleError, match=r"val.jsonl: row 1, column 'age': expected a number, got 'x'"):
            load_manifest(split, str(m), **kwargs)
    with pytest.raises(ValueError, match="columns.profile: expected a column name"):
        load_manifest("train", str(m), columns={"profile": {"numbers": ["age"]}})


def test_a_byte_order_mark_is_not_part_of_the_first_column(folder):
    (folder / "m.csv").write_text("\ufefftext,label\nhello,1\nworld,0\n", encoding="utf-8")
    data = load_manifest("train", str(folder / "m.csv"), columns={"t": "text"}, target="label", val_fraction=0, test_fraction=0)
    assert sorted(s["inputs"]["t"] for s in data.samples) == ["hello", "world"]


def test_a_misspelt_column_is_an_error_not_a_silently_missing_modality(folder):
    m = write_jsonl(folder / "m.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": 0}])
    with pytest.raises(ValueError) as info:
        load_manifest("train", str(m), columns={"t": "txet", "n": ["text", "cnt"]}, target="lable")
    message = str(info.value)
    assert "columns.t: manifest" in message and "has no column 'txet'; did you mean 'text'?" in message
    assert "columns.n: manifest" in message and "has no column 'cnt'" in message
    assert "target: manifest" in message and "has no column 'lable'; did you mean 'label'?" in message


def test_a_non_finite_target_names_its_row(folder):
    m = write_jsonl(folder / "m.jsonl", [{"text": "a", "label": "1.5"}, {"text": "b", "label": "inf"}])
    with pytest.raises(BadSampleError, match=r"row 2, column 'label': expected a finite number \(a regression target\), got 'inf'"):
        load_manifest("train", str(m), columns={"t": "text"}, target="label", val_fraction=0, test_fraction=0)
    # "nan" is a placeholder for no value (mmcore.labels.MISSING_PLACEHOLDERS): an empty target, named as well
    m = write_jsonl(folder / "m.jsonl", [{"text": "a", "label": "1.5"}, {"text": "b", "label": "nan"}])
    with pytest.raises(BadSampleError, match=r"row 2, column 'label': the target is empty"):
        load_manifest("train", str(m), columns={"t": "text"}, target="label", val_fraction=0, test_fraction=0)


def test_a_path_column_may_name_a_folder_of_frames(folder):
    clip = folder / "clips" / "c1"
    clip.mkdir(parents=True)
    for t in range(3):
        _png(clip / f"frame_{t}.png")
    (folder / "clips" / "empty").mkdir()
    m = write_jsonl(folder / "m.jsonl", [{"video": "clips/c1", "label": 1}, {"video": "clips/empty", "label": 0}])
    with pytest.raises(BadSampleError, match=r"row 2, column 'video': video folder .*empty.* holds no frame images"):
        load_manifest("train", str(m), columns={"video": "video"}, target="label", path_columns=["video"],
                      val_fraction=0, test_fraction=0)
    data = load_manifest("train", str(m), columns={"video": "video"}, target="label", path_columns=["video"],
                         val_fraction=0, test_fraction=0, on_bad_sample="skip")
    assert [s["inputs"]["video"] for s in data.samples] == [str(clip.resolve())]
