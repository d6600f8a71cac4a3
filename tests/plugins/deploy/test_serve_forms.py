"""`mmcore serve`'s multipart form parsing (python-multipart's parser, files kept in memory): the fields, files and
charsets Starlette's form parser gives, its limits, and a malformed form answered 400 while the server goes on."""

from __future__ import annotations

import httpx
import pytest
from deploy_helpers import png_bytes, wav_bytes
from fastapi.testclient import TestClient

from mmcore_plugins.deploy.backends import open_backend
from mmcore_plugins.deploy.serve import MAX_FIELD_BYTES, Upload, create_app, multipart_form


def _encoded(**request) -> tuple[bytes, str]:
    built = httpx.Request("POST", "http://test/predict", **request)
    return built.read(), built.headers["content-type"]


def _fields(**fields: str) -> tuple[bytes, str]:
    """A multipart body of text fields only (httpx would send them url-encoded)."""
    parts = [f'--b\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    return b"".join(parts) + b"--b--\r\n", "multipart/form-data; boundary=b"


def test_a_form_gives_its_fields_in_order_files_as_bytes_and_text_decoded():
    image = png_bytes("circle", 3)
    body, kind = _encoded(files=[("image", ("digit.png", image, "image/png")), ("frames", ("a.png", b"1", "image/png")),
                                 ("frames", ("b.png", b"22", "image/png")), ("empty", ("", b"", "application/octet-stream"))],
                          data={"text": "größer als 5 €", "profile.size": "2.5"})
    form = multipart_form(body, kind, max_files=8, max_fields=8)
    assert form.keys() == ["text", "profile.size", "image", "frames", "empty"]
    assert form.getlist("text") == ["größer als 5 €"] and form.getlist("profile.size") == ["2.5"]
    assert form.getlist("image") == [Upload("digit.png", image)] and form.getlist("image")[0].size == len(image)
    assert [u.data for u in form.getlist("frames")] == [b"1", b"22"]
    assert form.getlist("empty") == [""] and form.getlist("missing") == []  # no file name sent: a text field, as Starlette


def test_a_form_in_another_charset_and_one_without_a_charset_decode_as_starlette_decodes_them():
    body = (b'--b\r\nContent-Disposition: form-data; name="text"\r\n\r\n\xe9t\xe9\r\n--b--\r\n')
    assert multipart_form(body, "multipart/form-data; boundary=b; charset=latin-1", max_files=1,
                          max_fields=1).getlist("text") == ["été"]
    assert multipart_form(body, "multipart/form-data; boundary=b", max_files=1, max_fields=1).getlist("text") == ["été"]  # not UTF-8: Latin-1


@pytest.mark.parametrize("body, kind, message", [
    (b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n", "multipart/form-data; boundary=b", '"name"'),
    (b"--b\r\n\r\nx\r\n--b--\r\n", "multipart/form-data; boundary=b", '"name"'),
    (b"x", "multipart/form-data", "boundary"),
])
def test_a_part_without_a_name_or_a_body_without_a_boundary_is_refused(body, kind, message):
    with pytest.raises(ValueError, match=message):
        multipart_form(body, kind, max_files=1, max_fields=1)


def test_the_limits_on_files_fields_and_a_text_fields_size_hold():
    files, kind = _encoded(files=[("frames", (f"{i}.png", b"x", "image/png")) for i in range(3)])
    assert len(multipart_form(files, kind, max_files=3, max_fields=0).getlist("frames")) == 3
    with pytest.raises(ValueError, match="too many files: at most 2"):
        multipart_form(files, kind, max_files=2, max_fields=9)
    fields, kind = _fields(a="1", b="2")
    with pytest.raises(ValueError, match="too many fields: at most 1"):
        multipart_form(fields, kind, max_files=9, max_fields=1)
    big, kind = _fields(text="x" * (MAX_FIELD_BYTES + 1))
    with pytest.raises(ValueError, match="text field is over"):
        multipart_form(big, kind, max_files=1, max_fields=1)
    upload, kind = _encoded(files={"text": ("t.txt", b"x" * (MAX_FIELD_BYTES + 1), "text/plain")})  # a file: no field limit
    assert multipart_form(upload, kind, max_files=1, max_fields=1).getlist("text")[0].size == MAX_FIELD_BYTES + 1


def test_malformed_forms_are_answered_400_naming_the_body_and_good_ones_are_predicted(small_run):
    backend = open_backend(small_run)
    with TestClient(create_app(backend)) as client:
        bad = [(b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n", "multipart/form-data; boundary=b"),
               (b"--b\r\nnot a header line\r\n\r\n", "multipart/form-data; boundary=b"),
               (b"whatever", "multipart/form-data"),
               _encoded(files=[("image", (f"{i}.png", b"x", "image/png")) for i in range(65)])]
        for body, kind in bad:
            answer = client.post("/predict", content=body, headers={"content-type": kind})
            assert answer.status_code == 400 and answer.json()["field"] == "body", answer.text
        answer = client.post("/predict", files={"image": ("d.png", png_bytes("circle", 1), "image/png"),
                                                "audio": ("s.wav", wav_bytes("circle", 1), "audio/wav")},
                             data={"text": "round ring"})
        assert answer.status_code == 200, answer.text
        assert sorted(answer.json()["predictions"][0]["modalities"]) == ["audio", "image", "text"]
        assert client.post("/predict", data={"text": "round ring"}).status_code == 200  # url-encoded: Starlette's parser
        assert client.get("/healthz").json()["status"] == "ok"
