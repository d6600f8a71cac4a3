"""`mmcore serve` through an in-process client: the JSON API and uploads for a run and for an export,
metadata, docs and the page; every malformed request a 4xx naming its field (the server goes on);
no path in a request is ever opened; micro-batching of concurrent requests; a full queue answers 503."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from deploy_helpers import CLASSES, png_bytes, wav_bytes
from fastapi.testclient import TestClient

from mmcore_plugins.deploy.backends import open_backend
from mmcore_plugins.deploy.serve import create_app


@pytest.fixture(scope="module")
def run_backend(small_run):
    return open_backend(small_run)


@pytest.fixture(scope="module")
def export_backend(small_export):
    return open_backend(small_export, graph="model.onnx")


def _upload(label: str, seed: int = 0) -> dict:
    return {"image": ("digit.png", png_bytes(label, seed), "image/png"), "audio": ("spoken.wav", wav_bytes(label, seed), "audio/wav")}


@pytest.mark.parametrize("which", ["run_backend", "export_backend"])
def test_json_records_and_an_upload_are_predicted(which, run_backend, export_backend):
    # Both named as arguments, not looked up by name (request.getfixturevalue): a test's own fixtures are what
    # tests/conftest.py sees to send it to the xdist worker holding the shared run and export ("deploy");
    # looked up, this test went to any worker, which trained and exported the run once more.
    backend = {"run_backend": run_backend, "export_backend": export_backend}[which]
    with TestClient(create_app(backend)) as client:
        answer = client.post("/predict", json={"records": [{"text": "round ring", "profile": {"size": 1.0}}, {"text": "bar line"},
                                                           {"profile": [3.2]}]})
        assert answer.status_code == 200
        results = answer.json()["predictions"]
        assert [r["modalities"] for r in results] == [["profile", "text"], ["text"], ["profile"]]
        for r in results:
            assert r["prediction"] in CLASSES and abs(sum(r["probabilities"].values()) - 1) < 1e-4
        answer = client.post("/predict", files=_upload("cross", 3), data={"text": "plus sign", "profile.size": "2.0"})
        assert answer.status_code == 200
        result = answer.json()["predictions"][0]
        assert result["modalities"] == ["audio", "image", "profile", "text"] and result["prediction"] == "cross"
        health = client.get("/healthz").json()
        assert health["status"] == "ok" and health["predicted"] == 4 and health["rejected"] == 0


def test_the_run_and_its_export_answer_alike(run_backend, export_backend):
    record = {"text": "plus sign", "profile": {"size": 2.2}}
    with TestClient(create_app(run_backend)) as a, TestClient(create_app(export_backend)) as b:
        x = a.post("/predict", files=_upload("stripe", 7), data={"text": "bar line"}).json()["predictions"][0]
        y = b.post("/predict", files=_upload("stripe", 7), data={"text": "bar line"}).json()["predictions"][0]
        assert x["prediction"] == y["prediction"] and max(abs(x["probabilities"][c] - y["probabilities"][c]) for c in CLASSES) < 1e-4
        x = a.post("/predict", json={"records": [record]}).json()["predictions"][0]
        y = b.post("/predict", json={"records": [record]}).json()["predictions"][0]
        assert max(abs(x["probabilities"][c] - y["probabilities"][c]) for c in CLASSES) < 1e-4


def test_metadata_docs_and_a_page_built_from_the_slots(run_backend):
    with TestClient(create_app(run_backend)) as client:
        meta = client.get("/metadata").json()
        assert {s["name"]: s["input"] for s in meta["slots"]} == {"audio": "file", "image": "file", "profile": "table", "text": "text"}
        assert meta["head"]["classes"] == CLASSES and meta["model"]["kind"] == "run" and "torch" in meta["versions"]
        spec = client.get("/openapi.json").json()
        assert set(spec["paths"]["/predict"]["post"]["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
        assert client.get("/docs").status_code == 200
        page = client.get("/").text
        assert 'type="file" id="image" name="image" accept="image/*"' in page
        assert 'type="file" id="audio" name="audio"' in page and '<textarea id="text" name="text"' in page
        assert 'type="number" step="any" id="profile.size" name="profile.size"' in page


def _malformed(tmp_path) -> list[dict]:
    """100 malformed requests: wrong types, missing fields, unknown slots, huge or corrupt files, wrong content types."""
    from PIL import Image

    bomb = io.BytesIO()
    Image.new("L", (12000, 12000)).save(bomb, format="PNG")  # 144 M pixels: over Pillow's bomb limit, 140 KB of file
    absurd_wav = b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x10\x00data\x00\x00\x00\x00"
    existing = tmp_path / "secret.png"
    existing.write_bytes(png_bytes("circle"))
    cases = [
        {"json": {"records": [{"image": str(existing)}]}},  # a path: never opened
        {"json": {"records": [{"audio": "/etc/passwd"}]}},
        {"json": {"records": []}}, {"json": {"records": {}}}, {"json": {"records": "text"}}, {"json": {}}, {"json": []},
        {"json": {"records": [{}]}}, {"json": {"records": [None]}}, {"json": {"records": [{"text": None}]}},
        {"json": {"records": [{"text": 5}]}}, {"json": {"records": [{"text": ["a"]}]}}, {"json": {"records": [{"nope": "x"}]}},
        {"json": {"records": [{"text": "ok"}], "extra": 1}}, {"json": {"records": [{"profile": {"size": "big"}}]}},
        {"json": {"records": [{"profile": {"size": None}}]}}, {"json": {"records": [{"profile": {"weight": 2}}]}},
        {"json": {"records": [{"profile": [1, 2]}]}}, {"json": {"records": [{"profile": ["x"]}]}},
        {"json": {"records": [{"profile": {"size": True}}]}}, {"json": {"records": [{"profile": "1.0"}]}},
        {"json": {"records": [{"text": "ok"}] * 300}},
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        {"content": b"\xff\xfe\x00", "headers": {"content-type": "application/json"}},
        {"content": b"text", "headers": {"content-type": "text/plain"}}, {"content": b"", "headers": {}},
        {"content": b"<xml/>", "headers": {"content-type": "application/xml"}},
        {"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=x"}},
        {"files": {"image": ("a.png", b"not a png at all", "image/png")}},
        {"files": {"image": ("a.png", png_bytes("circle")[:60], "image/png")}},
        {"files": {"image": ("bomb.png", bomb.getvalue(), "image/png")}},
        {"files": {"audio": ("a.wav", absurd_wav, "audio/wav")}},
        {"files": {"audio": ("a.wav", b"RIFF\xff\xff\xff\xffWAVEfmt " + b"\x00" * 40, "audio/wav")}},
        {"files": {"audio": ("a.wav", b"", "audio/wav"), "image": ("b.png", b"", "image/png")}},
        {"files": {"audio": ("a.mp3", png_bytes("circle"), "audio/mpeg")}},
        {"files": {"image": ("a.wav", wav_bytes("circle"), "image/png")}},
        {"files": {"text": ("t.txt", b"\xff\xfe\xfa bad utf-8", "text/plain")}},
        {"files": {"unknown": ("x.bin", b"1234", "application/octet-stream")}},
        {"data": {"image": "/etc/passwd"}}, {"data": {"profile.size": "abc"}}, {"data": {"profile.size": "nan"}},
        {"data": {"profile": "{not json"}}, {"data": {"nope": "x"}}, {"data": {"text": ""}}, {"data": {}},
        {"files": {"image": ("big.png", b"\x89PNG" + b"\x00" * (70 * 1024), "image/png")}},  # over the 64 KB test limit
    ]
    cases += [{"json": {"records": [{"text": "x" * i, "profile": {"size": "s" * i}}]}} for i in range(1, 11)]
    cases += [{"files": {"image": (f"{i}.png", bytes([i]) * (i + 1), "image/png")}} for i in range(20)]
    cases += [{"json": {"records": [{"profile": {"size": i, "extra": i}}]}} for i in range(10)]
    cases += [{"content": json.dumps({"records": [{"text": "a"}]}).encode()[: 5 + i],
               "headers": {"content-type": "application/json"}} for i in range(14)]
    return cases[:100]


def test_a_hundred_malformed_requests_get_4xx_naming_the_field_and_the_server_goes_on(run_backend, tmp_path, monkeypatch):
    import mmcore_plugins.io.text as text_io

    opened = []
    monkeypatch.setattr(text_io, "read_text", lambda *a, **k: opened.append(a) or "")
    cases = _malformed(tmp_path)
    assert len(cases) == 100
    with TestClient(create_app(run_backend, max_body_bytes=64 * 1024)) as client:
        for i, case in enumerate(cases):
            answer = client.post("/predict", **case)
            assert 400 <= answer.status_code < 500, (i, case.get("json") or case.get("data"), answer.status_code, answer.text)
            body = answer.json()
            assert set(body) == {"error", "field"} and body["error"], (i, body)
            assert "Traceback" not in answer.text
        named = {client.post("/predict", **cases[i]).json()["field"] for i in (0, 10, 12, 14, 29)}
        assert named == {"records[0].image", "records[0].text", "records[0].nope", "records[0].profile.size", "image"}
        assert client.get("/healthz").json()["rejected"] >= 100
        good = client.post("/predict", json={"records": [{"text": "round ring"}]})
        assert good.status_code == 200 and good.json()["predictions"][0]["prediction"] in CLASSES
    assert opened == [], "no request made the server read a file"


def test_limits_bombs_and_headers_are_named(run_backend):
    from PIL import Image

    bomb = io.BytesIO()
    Image.new("L", (12000, 12000)).save(bomb, format="PNG")
    with TestClient(create_app(run_backend, max_body_bytes=16 * 1024 * 1024)) as client:
        answer = client.post("/predict", files={"image": ("bomb.png", bomb.getvalue(), "image/png")})
        assert answer.status_code == 422 and answer.json()["field"] == "image"
        assert "decompression-bomb limit" in answer.json()["error"]
    with TestClient(create_app(run_backend, max_body_bytes=1000)) as client:
        answer = client.post("/predict", files=_upload("circle"))
        assert answer.status_code == 413 and "over the limit of 1000 bytes" in answer.json()["error"]


def test_concurrent_requests_are_micro_batched_and_none_is_lost(run_backend):
    app = create_app(run_backend, window_ms=200.0, max_batch=64)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            texts = [["round ring", "plus sign", "bar line"][i % 3] for i in range(24)]
            answers = await asyncio.gather(*(client.post("/predict", json={"records": [{"text": t}]}) for t in texts))
            health = (await client.get("/healthz")).json()
            return texts, answers, health

    texts, answers, health = asyncio.run(scenario())
    assert all(a.status_code == 200 for a in answers)
    with TestClient(create_app(run_backend)) as client:
        alone = {t: client.post("/predict", json={"records": [{"text": t}]}).json()["predictions"][0] for t in set(texts)}
    for text, answer in zip(texts, answers, strict=True):
        got = answer.json()["predictions"][0]
        assert got["prediction"] == alone[text]["prediction"], "each request gets its own record's answer"
        assert max(abs(got["probabilities"][c] - alone[text]["probabilities"][c]) for c in CLASSES) < 1e-5
    assert health["predicted"] == 24 and health["batches"] < 24 and health["largest_batch"] > 1


class _Gated:
    """A backend whose model calls wait for a gate (to hold the batch queue full)."""

    def __init__(self, inner) -> None:
        self.inner, self.gate, self.started = inner, threading.Event(), threading.Event()
        self.slots, self.head, self.description = inner.slots, inner.head, inner.description

    def __getattr__(self, name):  # every other Backend method as the real one (check, prepare, has_input, ...)
        return getattr(self.inner, name)

    def predict(self, items):
        self.started.set()
        self.gate.wait(30)
        return self.inner.predict(items)


def test_a_full_queue_answers_503_at_once_and_recovers(run_backend):
    gated = _Gated(run_backend)
    app = create_app(gated, max_queue=1, window_ms=0.0)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            body = {"records": [{"text": "round ring"}]}
            first = asyncio.create_task(client.post("/predict", json=body))
            while not gated.started.is_set():  # a first request that ends before the model fails here, never hangs
                assert not first.done(), (await first).text
                await asyncio.sleep(0.01)
            second = asyncio.create_task(client.post("/predict", json=body))  # waits in the queue
            await asyncio.sleep(0.2)
            third = await client.post("/predict", json=body)  # the queue is full
            gated.gate.set()
            return await first, await second, third, await client.post("/predict", json=body)

    first, second, third, later = asyncio.run(scenario())
    assert (first.status_code, second.status_code, third.status_code, later.status_code) == (200, 200, 503, 200)
    assert "queue is full" in third.json()["error"]


def test_scores_are_finite_and_ordered_like_the_classes(export_backend):
    with TestClient(create_app(export_backend)) as client:
        result = client.post("/predict", json={"records": [{"profile": [1.0]}]}).json()["predictions"][0]
    values = np.array(list(result["probabilities"].values()))
    assert list(result["probabilities"]) == CLASSES and np.isfinite(values).all()


def test_requests_that_arrive_during_a_batch_form_the_next_one_without_a_window(run_backend):
    gated = _Gated(run_backend)
    app = create_app(gated)  # the default window: 0 ms

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            body = {"records": [{"text": "round ring"}]}
            first = asyncio.create_task(client.post("/predict", json=body))
            while not gated.started.is_set():  # a first request that ends before the model fails here, never hangs
                assert not first.done(), (await first).text
                await asyncio.sleep(0.01)
            rest = [asyncio.create_task(client.post("/predict", json={"records": [{"text": t}]}))
                    for t in ["plus sign", "bar line"] * 4]
            while app.state.batcher.queue.qsize() < 8:  # all queued while the model is busy
                await asyncio.sleep(0.01)
            gated.gate.set()
            answers = [await first] + [await r for r in rest]
            return answers, (await client.get("/healthz")).json()

    answers, health = asyncio.run(scenario())
    assert all(a.status_code == 200 for a in answers)
    assert health["batch_sizes"] == {"1": 1, "8": 1} and health["batches"] == 2
    stages = dict(part.strip().split(";", 1) for part in answers[-1].headers["server-timing"].split(","))
    assert set(stages) == {"read", "parse", "prepare", "queue", "model", "batch"}
    assert stages["batch"] == 'desc="8 records"' and float(stages["queue"].removeprefix("dur=")) > 0


def test_a_bad_upload_decoded_in_the_model_thread_fails_alone(run_backend):
    from mmcore_plugins.deploy.backends import FieldError
    from mmcore_plugins.deploy.serve import MicroBatcher, _Job, _prepare_all

    loop = asyncio.new_event_loop()
    try:
        good = _Job(1, loop.create_future())
        good.items = [run_backend.prepare(run_backend.check({"text": "round ring"}))]
        bad = _Job(1, loop.create_future())  # a lone request: decoded in the model thread, with the batch
        bad.prepare = lambda: _prepare_all(run_backend, [run_backend.check({"image": b"not an image"})], [""])
        results, _, _ = MicroBatcher(run_backend)._run_batch([bad, good])
    finally:
        loop.close()
    assert isinstance(bad.error, FieldError) and bad.error.field == "image"
    assert len(results) == 1 and results[0]["modalities"] == ["text"]


def test_served_answers_equal_the_predictors_single_and_batched_with_missing_modalities(small_run, run_backend, tmp_path):
    """What the server answers for a record -- alone (decoded in the model thread) or in a batch (decoded in the
    pool, its spectrogram and image normalisation computed for the batch) -- is what ``mmcore.Predictor`` predicts
    for the same files, whichever modalities the record has."""
    import mmcore
    from mmcore_plugins.deploy.serve import _prepare_all

    assert set(run_backend.steps) == {"image", "audio"}  # the batched path is the one under test
    rows, records = [], []
    for i in range(8):
        label = CLASSES[i % 3]
        image, audio = tmp_path / f"{i}.png", tmp_path / f"{i}.wav"
        image.write_bytes(png_bytes(label, 10 + i))
        audio.write_bytes(wav_bytes(label, 20 + i))
        row = {"image": str(image), "audio": str(audio), "text": ["round ring", "plus sign", "bar line"][i % 3],
               "profile": {"size": 1.0 + i % 3}}
        for gone in [[], ["image"], ["audio"], ["image", "text"], ["audio", "profile"], ["text"], ["image", "audio"], []][i]:
            row[gone] = None
        rows.append(row)
        records.append({k: (Path(v).read_bytes() if k in ("image", "audio") else v) for k, v in row.items() if v is not None})
    expected = mmcore.Predictor.load(small_run).predict_proba(rows)
    expected = [dict(zip(expected.columns, map(float, r), strict=True)) for r in expected.to_numpy()]
    with TestClient(create_app(run_backend)) as client:
        alone = []
        for record in records:
            files = {k: (k, v, "application/octet-stream") for k, v in record.items() if isinstance(v, bytes)}
            data = {k: v for k, v in record.items() if isinstance(v, str)} | (
                {"profile.size": str(record["profile"]["size"])} if "profile" in record else {})
            answer = client.post("/predict", files=files, data=data)
            assert answer.status_code == 200, answer.text
            alone.append(answer.json()["predictions"][0])
    checked = [run_backend.check(r) for r in records]
    batched = run_backend.predict(_prepare_all(run_backend, checked, [""] * len(checked)))
    for got in (alone, batched):
        assert [r["modalities"] for r in got] == [sorted(k for k in r if r[k] is not None) for r in rows]
        for answer, probabilities in zip(got, expected, strict=True):
            assert answer["prediction"] == max(probabilities, key=probabilities.get)
            assert max(abs(answer["probabilities"][c] - probabilities[c]) for c in CLASSES) <= 2e-6  # rounded to 6 places


class _Recording:
    """A backend that records which thread ran each predict call and on how many records (and may fail)."""

    parallel_parts = True

    def __init__(self, inner, fail_on: int | None = None) -> None:
        self.inner, self.fail_on, self.calls = inner, fail_on, []
        self.lock = threading.Lock()

    def predict(self, items):
        with self.lock:
            self.calls.append((threading.current_thread().name, len(items)))
        if self.fail_on is not None and len(items) == self.fail_on:
            raise RuntimeError("this part failed")
        return self.inner.predict(items)


def test_a_large_batch_runs_in_parts_at_once_and_answers_as_one_call(run_backend):
    """A batch of >= 2 * PART_MIN records (eager run) is split into contiguous parts on the part threads; the
    answers are those of one call, in order; a batch too small to split, or a lone record, is one call in the
    model thread; an error in a part reaches the caller once every part is done."""
    from mmcore_plugins.deploy.serve import PART_MIN, MicroBatcher

    assert run_backend.parallel_parts
    texts, sizes = ["round ring", "plus sign", "bar line", None], [1.0, 2.5, None]
    records = [{k: v for k, v in {"text": texts[i % 4], "profile": {"size": sizes[i % 3]} if sizes[i % 3] else None,
                                  "image": png_bytes(CLASSES[i % 3], i) if i % 2 else None}.items() if v is not None}
               for i in range(2 * PART_MIN + 1)]
    items = [run_backend.prepare(run_backend.check(r)) for r in records]
    whole = run_backend.predict(items)
    recording = _Recording(run_backend)
    batcher = MicroBatcher(recording, batch_threads=2)
    failing = MicroBatcher(_Recording(run_backend, fail_on=PART_MIN + 1), batch_threads=2)
    try:
        split = batcher._predict(items)
        assert sorted(n for _, n in recording.calls) == [PART_MIN, PART_MIN + 1]
        assert all(name.startswith("mmcore-part") for name, _ in recording.calls)
        assert [r["modalities"] for r in split] == [r["modalities"] for r in whole]
        for a, b in zip(split, whole, strict=True):
            assert a["prediction"] == b["prediction"]
            assert max(abs(a["probabilities"][c] - b["probabilities"][c]) for c in CLASSES) <= 2e-6  # rounded to 6 places
        recording.calls.clear()
        assert len(batcher._predict(items[: 2 * PART_MIN - 1])) == 2 * PART_MIN - 1
        assert recording.calls == [(threading.current_thread().name, 2 * PART_MIN - 1)]  # too small: one call, here
        with pytest.raises(RuntimeError, match="this part failed"):
            failing._predict(items)
        assert len(failing.backend.calls) == 2
    finally:
        for b in (batcher, failing):
            asyncio.run(b.stop())
    one = MicroBatcher(recording, batch_threads=1)
    assert one.part_executor is None and one.batch_threads == 1
    default = MicroBatcher(_Gated(run_backend))  # parts are asked for: measured no faster on 2 cores
    assert default.batch_threads == 1 and default.part_executor is None
    plain = MicroBatcher(type("Plain", (), {"predict": run_backend.predict})(), batch_threads=4)
    assert plain.batch_threads == 1 and plain.part_executor is None  # a backend that does not allow parts: whole batches
