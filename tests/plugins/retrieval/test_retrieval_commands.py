"""`mmcore embed` / `mmcore search` end to end on a tiny real run (PNG digits + words), and `embed()`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml

from mmcore.cli import main
from mmcore_plugins.retrieval.embedding import embed, read_embeddings, write_embeddings
from mmcore_plugins.retrieval.index import brute_force_topk

pytest.importorskip("faiss")
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def write_digits(folder, n: int = 80) -> str:
    """``n`` real 8x8 handwritten digits as PNGs + their word, in a CSV manifest with ids and splits."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    (folder / "img").mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8), mode="L").save(folder / "img" / f"{i}.png")
        label = int(digits.target[i])
        rows.append({"id": f"d{i:03d}", "image": f"img/{i}.png", "text": WORDS[label] if i % 4 else "",
                     "label": label, "split": "test" if i % 5 == 0 else "val" if i % 5 == 1 else "train"})
    with open(folder / "digits.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(folder / "digits.csv")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("retrieval")
    manifest = write_digits(folder)
    config = {
        "data": {"name": "manifest", "path": manifest, "columns": {"image": "image", "text": "text"},
                 "path_columns": ["image"], "target": "label", "split_column": "split"},
        "model": {"encoders": {"image": {"name": "image_cnn", "image_size": 8, "width": 8, "dim": 16},
                               "text": {"name": "text_transformer", "dim": 16, "heads": 2, "layers": 1, "max_length": 8}},
                  "fusion": {"name": "concat", "dim": 16},
                  # pair ids = digit classes: every image/word of the same digit is a positive
                  "head": {"name": "contrastive", "modalities": ["image", "text"], "embed_dim": 8}},
        "trainer": {"epochs": 2, "batch_size": 16, "run_dir": str(folder / "run"), "progress": False, "plots": False},
    }
    (folder / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(folder / "c.yaml")]) == 0
    return folder


def test_embed_a_manifest_writes_every_vector_with_ids(run, capsys):
    out = run / "emb.parquet"
    assert main(["embed", str(run / "run"), "--data", str(run / "digits.csv"), "--out", str(out)]) == 0
    vectors, ids, targets = read_embeddings(out)
    assert ids[:3] == ["d000", "d001", "d002"] and len(ids) == 80
    assert targets[:3] == [0, 1, 2]
    assert set(vectors) == {"fused", "image", "text", "head.image", "head.text"}
    assert vectors["fused"].shape == (80, 16) and vectors["head.image"].shape == (80, 8)
    # Rows without text (every 4th) have NaN text vectors, finite image and fused vectors.
    no_text = np.arange(80) % 4 == 0
    assert np.isnan(vectors["text"][no_text]).all() and np.isfinite(vectors["text"][~no_text]).all()
    assert np.isnan(vectors["head.text"][no_text]).all() and np.isfinite(vectors["fused"]).all()
    np.testing.assert_allclose(np.linalg.norm(vectors["head.image"], axis=1), 1.0, atol=1e-5)
    assert "embedded 80 rows" in capsys.readouterr().out


def test_embed_function_matches_the_command_and_each_format_round_trips(run, tmp_path):
    from mmcore.engine.checkpoint import load_model

    model, _ = load_model(run / "run" / "best")
    image = str(run / "img" / "7.png")
    direct = embed(model, [{"image": image, "text": "seven"}, {"image": image}])
    assert np.isnan(direct["text"][1]).all() and np.isfinite(direct["head.image"]).all()
    np.testing.assert_allclose(direct["head.image"][0], direct["head.image"][1], atol=1e-6), "one modality's head vector ignores the other"
    for name in ("e.npz", "e.npy", "e.parquet"):
        write_embeddings(tmp_path / name, direct, ["a", "b"], [7, 7])
        vectors, ids, targets = read_embeddings(tmp_path / name)
        assert ids == ["a", "b"] and targets == [7, 7] and set(vectors) == set(direct)
        for key in direct:
            np.testing.assert_array_equal(vectors[key], direct[key])
    assert np.load(tmp_path / "e.npy").shape == direct["fused"].shape, "the .npy file itself holds the fused vectors"
    with pytest.raises(ValueError, match="unknown modality"):
        embed(model, [{"audio": "x.wav"}])
    with pytest.raises(ValueError, match="none of the model's modalities"):
        embed(model, [{"image": None}])


def test_embed_split_builds_an_index_and_search_equals_brute_force(run, capsys):
    out, index = run / "test.npz", run / "test.faiss"
    assert main(["embed", str(run / "run"), "--split", "test", "--out", str(out), "--index", str(index),
                 "--vector", "head.image"]) == 0
    assert "flat" in capsys.readouterr().out
    meta = json.loads((run / "test.faiss.json").read_text())
    assert meta["vector"] == "head.image" and meta["kind"] == "flat" and meta["ids"][0] == "test:0"
    vectors, ids, targets = read_embeddings(out)
    # Cross-modal: a word against the image gallery, ranked exactly as numpy ranks it.
    assert main(["search", str(run / "run"), "--index", str(index), "--query", "three", "-k", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["slot"] == "text" and len(result["neighbours"]) == 5
    from mmcore.engine.checkpoint import load_model

    query = embed(load_model(run / "run" / "best")[0], [{"text": "three"}])["head.text"]
    scores, positions = brute_force_topk(vectors["head.image"], query, 5)
    assert [n["id"] for n in result["neighbours"]] == [ids[p] for p in positions[0]]
    np.testing.assert_allclose([n["score"] for n in result["neighbours"]], scores[0], atol=1e-4)
    assert [n["target"] for n in result["neighbours"]] == [targets[p] for p in positions[0]]
    # An image file query: its modality comes from the extension; a table is printed.
    assert main(["search", str(run / "run"), "--index", str(index), "--query", str(run / "img" / "3.png"), "-k", "3"]) == 0
    table = capsys.readouterr().out
    assert "(image)" in table and "rank" in table and len(table.strip().splitlines()) == 5


def test_search_rejects_bad_queries_and_foreign_indexes(run, capsys):
    index = run / "fused.faiss"
    assert main(["embed", str(run / "run"), "--split", "val", "--out", str(run / "val.parquet"), "--index", str(index),
                 "--vector", "fused"]) == 0
    assert main(["search", str(run / "run"), "--index", str(index), "--query", "seven", "-k", "2"]) == 0
    capsys.readouterr()
    cases = {
        ("--query", str(run / "missing.png")): "does not exist",
        ("--query", str(run / "digits.csv")): "cannot tell which",
        ("-k", "0"): "positive number",
    }
    for (option, value), message in cases.items():
        args = ["search", str(run / "run"), "--index", str(index), "--query", "seven", "-k", "2"]
        args[args.index(option) + 1] = value
        assert main(args) == 2, (option, value)
        assert message in capsys.readouterr().err
    assert main(["search", str(run / "run"), "--index", str(run / "nope.faiss"), "--query", "one"]) == 2
    assert "does not exist" in capsys.readouterr().err
    # The index belongs to the best checkpoint; the last one (another epoch's weights) is refused.
    sidecar = json.loads((run / "fused.faiss.json").read_text())
    sidecar["weights_sha256"] = "0" * 64
    (run / "fused.faiss.json").write_text(json.dumps(sidecar))
    assert main(["search", str(run / "run"), "--index", str(index), "--query", "one"]) == 2
    assert "another model" in capsys.readouterr().err


def test_embed_rejects_bad_options_before_any_work(run, capsys):
    base = ["embed", str(run / "run")]
    assert main([*base, "--out", str(run / "x.csv")]) == 2
    assert "unknown embedding format" in capsys.readouterr().err
    assert main([*base, "--out", str(run / "x.npz"), "--data", str(run / "digits.csv"), "--split", "test"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main([*base, "--out", str(run / "x.npz"), "--data", str(run / "digits.csv"), "--id-column", "key"]) == 2
    assert "no column 'key'" in capsys.readouterr().err
    (run / "other.csv").write_text("a,b\n1,2\n")
    assert main([*base, "--out", str(run / "x.npz"), "--data", str(run / "other.csv")]) == 2
    err = capsys.readouterr().err  # the rule of predict (issue 20.1): each absent column named
    assert "has no column 'image'" in err and "has no column 'text'" in err
    assert main([*base, "--out", str(run / "x.npz"), "--index", str(run / "x.faiss"), "--vector", "audio"]) == 2
    assert "unknown vector 'audio'" in capsys.readouterr().err


def test_embed_names_the_bad_rows_of_a_manifest(run, capsys):
    rows = (run / "digits.csv").read_text().splitlines()
    rows[3] = rows[3].replace("img/2.png", "img/missing.png")
    rows[5] = rows[5].replace("img/4.png", "../outside.png")
    (run / "bad.csv").write_text("\n".join(rows) + "\n")
    assert main(["embed", str(run / "run"), "--data", str(run / "bad.csv"), "--out", str(run / "bad.npz")]) == 2
    err = capsys.readouterr().err
    assert "row 3" in err and "row 5" in err and "'image'" in err
    assert not (run / "bad.npz").exists(), "nothing written"


def test_embed_applies_predicts_column_rule_and_reports_ids(run, capsys):
    """Issue 20.1/20.8: a column the model reads is in the table or declared --missing; empty ids are
    an error naming their rows, repeated ids are reported (each row kept under its id)."""
    rows = list(csv.DictReader(open(run / "digits.csv")))
    images_only = [{"id": r["id"], "image": r["image"]} for r in rows[:10]]
    with open(run / "images.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "image"])
        writer.writeheader()
        writer.writerows(images_only)
    base = ["embed", str(run / "run"), "--data", str(run / "images.csv")]
    assert main([*base, "--out", str(run / "img.npz")]) == 2
    err = capsys.readouterr().err  # one problem, one line (issue 20: the CLI's rule), the columns it has named
    assert "has no column 'text'" in err and "its columns: id, image" in err and len(err.strip().splitlines()) == 1
    assert not (run / "img.npz").exists()
    assert main(["predict", str(run / "run"), "--data", str(run / "images.csv")]) == 2
    err = capsys.readouterr().err
    assert "has no column 'text'" in err and len(err.strip().splitlines()) == 1
    assert main([*base, "--out", str(run / "img.npz"), "--missing", "text"]) == 0
    vectors, ids, _ = read_embeddings(run / "img.npz")
    assert len(ids) == 10 and np.isnan(vectors["text"]).all() and np.isfinite(vectors["image"]).all()
    assert main([*base, "--out", str(run / "img2.npz"), "--missing", "txt"]) == 2
    assert "'txt' is not a column the model reads" in capsys.readouterr().err
    capsys.readouterr()
    with open(run / "ids.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "image"])
        writer.writeheader()
        writer.writerows([{**r, "id": "same" if i in (2, 5) else r["id"]} for i, r in enumerate(images_only)])
    assert main(["embed", str(run / "run"), "--data", str(run / "ids.csv"), "--missing", "text",
                 "--out", str(run / "ids.npz")]) == 0
    err = capsys.readouterr().err
    assert "1 id(s) repeat" in err and "'same' rows 3, 6" in err
    # an index of them: search names each hit's row, and which ids are shared
    assert main(["embed", str(run / "run"), "--data", str(run / "ids.csv"), "--missing", "text", "--out",
                 str(run / "ids2.npz"), "--index", str(run / "ids.faiss"), "--vector", "head.image"]) == 0
    capsys.readouterr()
    assert main(["search", str(run / "run"), "--index", str(run / "ids.faiss"), "--query", str(run / "img" / "2.png"),
                 "-k", "10", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["neighbours"]
    assert sorted(h["row"] for h in hits if h["id"] == "same") == [3, 6]
    assert main(["search", str(run / "run"), "--index", str(run / "ids.faiss"), "--query", str(run / "img" / "2.png"),
                 "-k", "10"]) == 0
    assert "id(s) 'same' belong to several rows" in capsys.readouterr().out
    with open(run / "noid.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "image"])
        writer.writeheader()
        writer.writerows([{**r, "id": "" if i in (1, 4) else r["id"]} for i, r in enumerate(images_only)])
    assert main(["embed", str(run / "run"), "--data", str(run / "noid.csv"), "--missing", "text",
                 "--out", str(run / "noid.npz")]) == 2
    assert "rows 2, 5 have no 'id' id" in capsys.readouterr().err


# ---------------------------------------------------------------------------- outputs and option errors (issue 28, 20.10)
def test_embed_never_replaces_a_file_it_did_not_write(run, tmp_path, capsys):
    """``embed --out x.npy`` wrote x.<slot>.npy beside it and replaced a user's emb.image.npy."""
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "emb.npy"
    (folder / "emb.image.npy").write_bytes(b"the user's own vectors")
    base = ["embed", str(run / "run"), "--split", "test", "--out", str(out)]
    for extra in ([], ["--overwrite"]):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert "emb.image.npy exists and mmcore did not write it" in err and len(err.strip().splitlines()) == 1
        assert sorted(p.name for p in folder.iterdir()) == ["emb.image.npy"], "nothing written"
    assert (folder / "emb.image.npy").read_bytes() == b"the user's own vectors"
    (folder / "emb.image.npy").unlink()
    assert main(base) == 0
    written = sorted(p.name for p in folder.iterdir())
    assert main(base) == 2 and "emb.npy exists; pass --overwrite" in capsys.readouterr().err
    assert main([*base, "--overwrite"]) == 0, "mmcore's own earlier output (listed by emb.npy.json) is replaced"
    assert sorted(p.name for p in folder.iterdir()) == written
    # A sidecar JSON of the user's in the way is not replaced either.
    other = folder / "b.npy"
    (folder / "b.npy.json").write_text('{"mine": 1}')
    assert main(["embed", str(run / "run"), "--split", "test", "--out", str(other), "--overwrite"]) == 2
    assert (folder / "b.npy.json").read_text() == '{"mine": 1}' and not other.exists()


@pytest.mark.parametrize("name", ["e.npz", "e.parquet", "e.npy"])
def test_embed_and_index_never_follow_a_link_planted_at_a_temporary_or_output_name(run, tmp_path, capsys, name):
    """Fixed temporary names (.out.jsonl.tmp, .e.npz.tmp.npz) followed a planted link."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    folder = tmp_path / "out"
    folder.mkdir()
    out, index = folder / name, folder / "g.faiss"
    for planted in (f".{name}.tmp", f".{name}.tmp{out.suffix}", ".g.faiss.tmp", ".g.faiss.json.tmp", f".{name}.json.tmp"):
        (folder / planted).symlink_to(victim)
    (folder / "e.image.npy").symlink_to(victim)  # a sidecar name: a link there is not mmcore's file either
    args = ["embed", str(run / "run"), "--split", "test", "--out", str(out), "--index", str(index)]
    code = main(args)
    capsys.readouterr()
    assert code == (2 if name == "e.npy" else 0)
    assert victim.read_text() == "keep me"
    if name != "e.npy":
        assert not out.is_symlink() and read_embeddings(out)[1][0] == "test:0"


@pytest.mark.parametrize("extra, option", [(["--batch-size", "0"], "--batch-size"), (["--nlist", "0"], "--nlist"),
                                           (["--index-type", "ivf", "--nlist", "100000"], "--nlist"),
                                           (["--nprobe", "-3"], "--nprobe")])
def test_embed_option_errors_are_input_errors_before_anything_is_written(run, tmp_path, capsys, extra, option):
    out, index = tmp_path / "e.npz", tmp_path / "g.faiss"
    assert main(["embed", str(run / "run"), "--split", "test", "--out", str(out), "--index", str(index), *extra]) == 2
    err = capsys.readouterr().err
    assert option in err and "internal error" not in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_search_option_errors_are_input_errors(run, tmp_path, capsys):
    index = tmp_path / "g.faiss"
    assert main(["embed", str(run / "run"), "--split", "test", "--out", str(tmp_path / "e.npz"), "--index", str(index)]) == 0
    capsys.readouterr()
    for nprobe in ("0", "-1"):
        assert main(["search", str(run / "run"), "--index", str(index), "--query", "one", "--nprobe", nprobe]) == 2
        assert "--nprobe: expected a positive integer" in capsys.readouterr().err


def _crafted_embeddings(folder, variant):
    """An embeddings file damaged or crafted the way a hostile one would be."""
    import struct
    import zipfile

    ids = ["a", "b"]
    vectors = {"fused": np.ones((2, 4), np.float32), "image": np.ones((2, 3), np.float32)}
    if variant.startswith("npz"):
        path = folder / "e.npz"
        write_embeddings(path, vectors, ids)
        if variant == "npz: a member claiming more than the file":
            data = bytearray(path.read_bytes())
            at = data.find(b"PK\x01\x02")  # the central directory's first entry: its uncompressed size
            struct.pack_into("<I", data, at + 24, 2**31)
            path.write_bytes(bytes(data))
        else:  # a header claiming 10**9 rows
            with zipfile.ZipFile(path, "w") as archive:
                header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 4), }"
                archive.writestr("fused.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + header.ljust(117).encode() + b"\n")
                archive.writestr("id.npy", b"")
        return path
    path = folder / "e.npy"
    write_embeddings(path, vectors, ids)
    sidecar = folder / "e.npy.json"
    meta = json.loads(sidecar.read_text())
    if variant == "npy: a header claiming 10**9 rows":
        header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 4), }"
        path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + header.ljust(117).encode() + b"\n" + b"\0" * 32)
    elif variant == "npy: a sidecar naming a file elsewhere":
        (folder.parent / "secret.npy").write_bytes(path.read_bytes())
        meta["vectors"]["image"] = "../secret.npy"
        sidecar.write_text(json.dumps(meta))
    elif variant == "npy: a sidecar nested too deeply":
        sidecar.write_text("[" * 100_000 + "]" * 100_000)
    elif variant == "npy: object arrays":
        np.save(folder / "e.image.npy", np.array([{"x": 1}, {"y": 2}], dtype=object), allow_pickle=True)
    return path


@pytest.mark.parametrize("variant", ["npz: a member claiming more than the file", "npz: a header claiming 10**9 rows",
                                     "npy: a header claiming 10**9 rows", "npy: a sidecar naming a file elsewhere",
                                     "npy: a sidecar nested too deeply", "npy: object arrays"])
def test_a_crafted_embeddings_file_is_refused_before_it_is_read(tmp_path, variant):
    folder = tmp_path / "emb"
    folder.mkdir()
    path = _crafted_embeddings(folder, variant)
    from mmcore.errors import ConfigError

    with pytest.raises(ConfigError, match="--embeddings") as info:
        read_embeddings(path)
    assert "\n" not in str(info.value)
