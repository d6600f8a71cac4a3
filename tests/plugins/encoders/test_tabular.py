"""Tabular encoders on scikit-learn's wine data: numeric standardisation, categorical vocabularies,
MLP and FT-Transformer, state saved with the model."""

import pytest
import torch

from mmcore.testing import check_encoder
from mmcore_plugins.encoders.tabular import FTTransformerEncoder, MLPTabularEncoder, TabularProcessor


@pytest.fixture(scope="module")
def wine_rows():
    from sklearn.datasets import load_wine

    bunch = load_wine()
    names = [str(n) for n in bunch.feature_names[:4]]
    # A real categorical column: the wine's colour-intensity band, as text.
    bands = ["pale", "medium", "deep"]
    rows = []
    for x in bunch.data:
        row = dict(zip(names, [float(v) for v in x[:4]], strict=True))
        row["band"] = bands[min(2, int(x[9] // 4))]
        rows.append(row)
    return names, rows, bunch.target


def test_statistics_and_vocabularies_are_fitted_on_training_rows_and_restored(wine_rows):
    names, rows, _ = wine_rows
    processor = TabularProcessor(4, names, ["band"])
    processor.fit(rows[:100] + [None])
    out = torch.stack([processor(r)["values"] for r in rows[:100]])
    torch.testing.assert_close(out.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(0), torch.ones(4), atol=1e-5, rtol=0)
    assert set(processor.vocabularies["band"]) == {"pale", "medium", "deep"}
    assert processor({**rows[0], "band": "never seen"})["categories"].tolist() == [0]
    restored = TabularProcessor(4, names, ["band"])
    restored.load_state_dict(processor.state_dict())
    assert torch.equal(restored(rows[5])["values"], processor(rows[5])["values"])
    assert restored(rows[5])["categories"].tolist() == processor(rows[5])["categories"].tolist()


def test_unseen_names_exactly_the_cells_read_as_unknown(wine_rows):
    """``unseen`` (what predict, eval and serve tell users about) agrees with the encoding: a non-empty
    category that gets index 0 -- a new value, or one too rare in training to be kept -- and nothing else."""
    names, rows, _ = wine_rows
    processor = TabularProcessor(4, names, ["band"])
    processor.fit(rows[:100])
    assert processor.unseen(rows[0]) == {} and processor.unseen_reason("band") == "not seen in training"
    for value in ("never seen", "Pale", 3):
        row = {**rows[0], "band": value}
        assert processor(row)["categories"].tolist() == [0] and processor.unseen(row) == {"band": str(value)}
    assert processor.unseen({**rows[0], "band": None}) == {}, "an empty cell is missing, not unknown"
    capped = TabularProcessor(4, names, ["band"], max_categories=2)  # only the most frequent band is kept
    capped.fit(rows[:100])
    (kept,) = capped.vocabularies["band"]
    rare = next(r["band"] for r in rows[:100] if r["band"] != kept)
    assert capped.unseen({**rows[0], "band": rare}) == {"band": rare}
    assert "too rare there to be one of its 1 kept values" in capped.unseen_reason("band")


@pytest.mark.parametrize("factory", [MLPTabularEncoder, FTTransformerEncoder])
def test_encoders_learn_wine_from_numeric_and_categorical_columns(factory, wine_rows):
    names, rows, target = wine_rows
    torch.manual_seed(0)
    encoder = factory(num_features=4, dim=16, columns=names, categorical=["band"], max_categories=4)
    check_encoder(encoder)
    processor = encoder.processor()
    processor.fit(rows)
    batch = processor.collate([processor(r) for r in rows])
    head = torch.nn.Linear(16, 3)
    opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()], 1e-2)
    y = torch.as_tensor(target)
    encoder.train()
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(head(encoder(batch).pooled), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    encoder.eval()
    accuracy = (head(encoder(batch).pooled).argmax(1) == y).float().mean().item()
    assert accuracy > 0.85, accuracy


def test_ft_transformer_has_one_token_per_column_plus_cls(wine_rows):
    names, rows, _ = wine_rows
    encoder = FTTransformerEncoder(num_features=4, dim=16, heads=2, layers=1, columns=names, categorical=["band"]).eval()
    processor = encoder.processor()
    feats = encoder(processor.collate([processor(rows[0]), None]))
    assert feats.tokens.shape == (2, 1 + 4 + 1, 16)
    assert feats.mask.tolist() == [[True] * 6, [False] * 6]
    torch.testing.assert_close(feats.pooled[0], feats.tokens[0, 0])


def test_bad_rows_and_options_are_reported(wine_rows):
    names, rows, _ = wine_rows
    processor = TabularProcessor(4, names, ["band"])
    with pytest.raises(TypeError, match="rows must be mappings"):
        processor([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(TypeError, match="expected a number, got str"):
        processor({**rows[0], names[0]: "high"})
    with pytest.raises(ValueError, match="lacks column"):
        processor({"band": "pale"})
    with pytest.raises(ValueError, match="name the numeric columns"):
        MLPTabularEncoder(num_features=2, categorical=["band"])
    with pytest.raises(ValueError, match="num_features must be positive"):
        FTTransformerEncoder(num_features=0)
    assert MLPTabularEncoder(num_features=0, categorical=["band"], dim=8).processor()({"band": "x"})["values"].shape == (0,)


def test_numpy_and_torch_scalars_are_numbers():
    import numpy as np

    processor = TabularProcessor(2, columns=["age", "height"])
    expected = processor([3.0, 1.5])
    for row in ({"age": np.int64(3), "height": np.float32(1.5)}, (np.int64(3), np.float32(1.5)), [torch.tensor(3), 1.5]):
        torch.testing.assert_close(processor(row), expected)
    with pytest.raises(TypeError, match="column age: expected a number, got str 'x'"):
        processor({"age": "x", "height": 1.0})
