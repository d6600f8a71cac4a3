"""`mmcore export`: the folder it writes (graph, front end, manifest), that the graph computes what the
run does on real files, that the front end runs without mmcore, and refusals before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from deploy_helpers import CLASSES, png_bytes, wav_bytes

import mmcore
from mmcore.cli import load_run, main
from mmcore.engine.evaluation import predict_output
from mmcore.model import build_model
from mmcore_plugins.deploy.export import ExportError, export_model


def _files(folder, label: str, seed: int) -> dict:
    (folder / f"{label}{seed}.png").write_bytes(png_bytes(label, seed))
    (folder / f"{label}{seed}.wav").write_bytes(wav_bytes(label, seed))
    return {"image": str(folder / f"{label}{seed}.png"), "audio": str(folder / f"{label}{seed}.wav")}


def test_the_folder_holds_graph_front_end_and_a_manifest_of_inputs(small_export):
    names = {p.name for p in small_export.iterdir()}
    assert {"manifest.json", "model.onnx", "model.int8.onnx", "model.pt2", "frontend.py"} <= names
    manifest = json.loads((small_export / "manifest.json").read_text())
    inputs = {i["name"]: i for i in manifest["inputs"]}
    for slot in ("image", "audio", "text", "profile"):
        assert inputs[f"{slot}.present"]["dtype"] == "bool", "presence of each modality is a graph input"
    assert inputs["image.pixels"]["shape"] == ["batch", 1, 16, 16] and inputs["image.pixels"]["missing"] == "zeros"
    assert inputs["text.ids"]["shape"] == ["batch", "text_tokens"]
    assert [o["name"] for o in manifest["outputs"]] == ["logits", "predictions", "probabilities"]
    assert manifest["head"] == {"name": "classification", "task": "classification", "classes": CLASSES}
    profile = manifest["slots"]["profile"]
    assert profile["columns"] == ["size"] and len(profile["mean"]) == 1, "the processors' fitted state travels as JSON"
    assert manifest["slots"]["audio"]["sample_rate"] == 8000 and manifest["slots"]["text"]["kind"] == "text_bytes"
    check = manifest["verification"]
    assert max(check["onnx"]["max_abs_diff"][k] for k in ("logits", "probabilities")) <= 1e-5
    assert check["front_end"]["max_abs_diff"]["probabilities"] <= 1e-5
    assert manifest["graph"]["file"] == "model.int8.onnx" and manifest["graph"]["int8"] is True
    assert manifest["graph"]["format"] == "onnx" and manifest["graph"]["formats"] == ["onnx", "pt2"]
    files = manifest["graph"]["files"]
    assert files["int8"]["bytes"] < files["onnx"]["bytes"]


def test_the_export_predicts_what_the_run_predicts_on_real_files(small_run, small_export, tmp_path):
    model, _ = load_run(small_run, mmcore.get_plugin_manager())
    records = [{**_files(tmp_path, "cross", 1), "text": "plus sign", "profile": {"size": 2.1}},
               {"text": "round ring"}, _files(tmp_path, "stripe", 2), {"profile": [3.3], "audio": _files(tmp_path, "circle", 3)["audio"]}]
    expected = predict_output(model, records).extras["probabilities"].numpy()
    sys.path.insert(0, str(small_export))
    try:
        import frontend
    finally:
        sys.path.pop(0)
    for graph, tolerance in (("model.onnx", 1e-5), ("model.int8.onnx", 0.05)):
        artefact = frontend.load(small_export, graph=graph)
        results = artefact.predict(records)
        got = np.array([[r["probabilities"][c] for c in CLASSES] for r in results])
        assert np.abs(got - expected).max() <= tolerance, graph
        assert [r["modalities"] for r in results] == [["audio", "image", "profile", "text"], ["text"], ["audio", "image"],
                                                     ["audio", "profile"]]
    assert [r["prediction"] for r in artefact.predict(records[:1])] == [CLASSES[int(expected[0].argmax())]]
    # paths relative to the table's folder, given as base= (the default is the current folder, as for mmcore predict)
    relative = [{**r, **{k: os.path.basename(r[k]) for k in ("image", "audio") if k in r}} for r in records]
    assert artefact.predict(relative, base=tmp_path) == results
    assert artefact.predict(records, base="/nowhere") == results, "an absolute path is read as it is"


def test_a_records_int8_answer_does_not_depend_on_its_batch(small_export, tmp_path):
    """Dynamic int8 quantises an activation with one scale over the whole graph call: a record's answer moved
    with the records predicted beside it. The int8 graph runs one record a call; the fp32 one keeps batching."""
    sys.path.insert(0, str(small_export))
    try:
        import frontend
    finally:
        sys.path.pop(0)
    records = [{**_files(tmp_path, "cross", 1), "text": "plus sign", "profile": {"size": 2.1}},
               {"text": "round ring"}, _files(tmp_path, "stripe", 2), {"profile": [9.5], "text": "bar line"},
               {**_files(tmp_path, "circle", 3), "profile": {"size": -4.0}}]
    int8 = frontend.load(small_export, graph="model.int8.onnx")
    assert int8.per_record and not frontend.load(small_export, graph="model.onnx").per_record
    together = int8.predict(records)
    alone = [int8.predict([r])[0] for r in records]
    reordered = int8.predict(records[::-1])[::-1]
    assert together == alone == reordered  # to the last digit of every probability


def test_every_clip_length_runs_through_the_exported_graphs(small_run, small_export, tmp_path):
    """One clip a call, at every frame count past the front end's least width (each residue of audio_cnn's
    pooling stride, 8, twice): an export used to trace the length it was shown only (a multiple of 8) and then
    failed on 7 clips in 8 (pt2: a guard; ONNX: a broadcast error)."""
    import soundfile

    model, _ = load_run(small_run, mmcore.get_plugin_manager())
    sys.path.insert(0, str(small_export))
    try:
        import frontend
    finally:
        sys.path.pop(0)
    first = frontend.MIN_AUDIO_FRAMES + 1
    records = []
    for frames in range(first, first + 16):  # a clip of n samples gives 1 + n // hop frames (hop 80)
        path = tmp_path / f"clip{frames}.wav"
        t = np.arange(80 * (frames - 1) + 7) / 8000
        soundfile.write(path, (0.3 * np.sin(2 * np.pi * (200 + 10 * frames) * t)).astype(np.float32), 8000)
        records.append({"audio": str(path), "text": "round ring"})
    expected = predict_output(model, records).extras["probabilities"].numpy()  # eager, the processors' path
    for graph in ("model.pt2", "model.onnx"):
        artefact = frontend.load(small_export, graph=graph)
        got = np.array([[artefact.predict([r])[0]["probabilities"][c] for c in CLASSES] for r in records])
        assert np.abs(got - expected).max() <= 1e-5, graph


def test_the_front_end_runs_without_mmcore(small_export, tmp_path):
    files = _files(tmp_path, "circle", 4)
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["mmcore"] = None          # any import of mmcore now fails
        sys.modules["mmcore_plugins"] = None
        sys.path.insert(0, {str(small_export)!r})
        import frontend
        model = frontend.load({str(small_export)!r}, graph="model.onnx")
        print(json.dumps(model.predict([{{"image": {files['image']!r}, "audio": {files['audio']!r}, "text": "round ring"}}])))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])[0]
    assert result["prediction"] in CLASSES and set(result["probabilities"]) == set(CLASSES)


def test_pt2_reproduces_the_model_exactly(small_export, tmp_path):
    # small_export holds model.pt2 and model.onnx written from one torch.export (--format onnx,pt2)
    manifest = json.loads((small_export / "manifest.json").read_text())
    assert set(manifest["verification"]["pt2"]["max_abs_diff"].values()) == {0.0}
    sys.path.insert(0, str(small_export))
    try:
        import frontend
    finally:
        sys.path.pop(0)
    records = [{"text": "bar line"}, {**_files(tmp_path, "stripe", 5), "profile": {"size": 3.0}}]
    a = frontend.load(small_export, graph="model.pt2").predict(records)
    b = frontend.load(small_export, graph="model.onnx").predict(records)
    for x, y in zip(a, b, strict=True):
        assert x["prediction"] == y["prediction"]
        assert max(abs(x["probabilities"][c] - y["probabilities"][c]) for c in CLASSES) <= 1e-5


def test_options_and_the_target_folder_are_checked_before_any_work(small_run, small_export, tmp_path, capsys):
    assert main(["export", str(small_run), "--format", "pt2", "--int8", "--out", str(tmp_path / "x")]) == 2
    assert "--int8 is written as an ONNX graph" in capsys.readouterr().err
    for bad in ("tflite", "onnx,onnx", "onnx,"):
        assert main(["export", str(small_run), "--format", bad, "--out", str(tmp_path / "x")]) == 2
        assert "--format: expected one of onnx, pt2 or several joined by commas" in capsys.readouterr().err
    assert main(["export", str(small_run), "--out", str(small_export)]) == 2
    assert "exists; choose a new folder or pass --overwrite" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["export", str(small_run), "--out", str(tmp_path / "mine"), "--overwrite"]) == 2
    assert "is not an mmcore export: it is never overwritten" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert main(["export", str(tmp_path / "no-run"), "--out", str(tmp_path / "y")]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


class _OwnProcessor(mmcore.Processor):
    def __call__(self, raw):
        return torch.tensor([float(raw)])

    def collate(self, items):
        return {"x": torch.stack([torch.zeros(1) if i is None else i for i in items]),
                "present": torch.tensor([i is not None for i in items])}


class _OwnEncoder(mmcore.Encoder):
    modality = "signal"

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.dim, self.linear = dim, torch.nn.Linear(1, dim)

    def processor(self):
        return _OwnProcessor()

    def forward(self, batch):
        return mmcore.Features.from_pooled(self.linear(batch["x"]), batch["present"])


class _OwnPlugin:
    @mmcore.hookimpl
    def mmcore_register(self, registry):
        registry.add_encoder("own_signal", _OwnEncoder, modality="signal")


def test_every_refusal_is_named_with_its_reason_and_nothing_is_written(tmp_path):
    with mmcore.register_plugin(_OwnPlugin(), "own-plugin"):
        spec = {"encoders": {"text": {"name": "text_transformer", "dim": 16, "heads": 2, "layers": 1},
                             "signal": {"name": "own_signal"}},
                "fusion": {"name": "concat", "dim": 16},
                "head": {"name": "captioning", "vocab": ["a", "b"], "dim": 16, "heads": 2, "layers": 1}}
        model = build_model(spec, mmcore.get_registry())
    with pytest.raises(ExportError) as caught:
        export_model(model, tmp_path / "out")
    message = str(caught.value)
    assert "encoder 'own_signal' (slot 'signal'): its processor" in message and "_OwnProcessor has no export front end" in message
    assert "head 'captioning': it generates captions word by word" in message
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []
