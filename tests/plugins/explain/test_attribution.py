"""Exact Shapley values per modality: against brute-force enumeration over every order of the players
with the inputs really missing (not masked), efficiency to 1e-5, dummy slots, batching, the sampled
estimate above the exact limit, and every registered fusion's empty coalition."""

import itertools
import math

import pytest
import torch

import mmcore
from mmcore.engine.evaluation import to_device
from mmcore.plugin_manager import get_registry
from mmcore_plugins.explain.attribution import explain_batch, explain_samples, summarise
from mmcore_plugins.explain.shapley import exact_shapley, sampled_shapley, shapley_matrix

SLOTS = ("a", "b", "c")


def _model(fusion: dict | None = None, slots=SLOTS, seed: int = 0):
    torch.manual_seed(seed)
    spec = {"encoders": {s: {"name": "tabular_mlp", "num_features": 3, "dim": 8, "dropout": 0.0} for s in slots},
            "fusion": fusion or {"name": "gated", "dim": 8},
            "head": {"name": "classification", "num_classes": 4}}
    model = mmcore.build_model(spec)
    samples = _samples(slots=slots)
    model.fit_processors([{"inputs": s} for s in samples])
    return model.eval(), samples


def _samples(n: int = 7, slots=SLOTS, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        sample = {s: torch.randn(3, generator=g).tolist() for s in slots}
        if i % 3 == 1:
            sample[slots[1]] = None  # some records lack a modality
        out.append(sample)
    return out


@torch.no_grad()
def _brute_force(model, sample):
    """Shapley values by definition: the average over all M! orders of each slot's marginal contribution,
    each coalition's value from a forward pass on the raw sample with the other slots really missing."""
    from mmcore.engine.evaluation import predict_output

    slots = model.slots
    target = int(predict_output(model, [sample]).predictions[0])

    def value(coalition):
        kept = {s: (sample[s] if s in coalition else None) for s in slots}
        batch = model.collate([{"inputs": kept}])
        inputs, _ = to_device(batch, "cpu")
        if not any(v is not None for v in kept.values()):  # no input at all: every slot absent
            inputs = {slots[0]: inputs[slots[0]]}
        return float(model(inputs).logits.log_softmax(-1)[0, target])

    phi = dict.fromkeys(slots, 0.0)
    orders = list(itertools.permutations(slots))
    for order in orders:
        coalition: set[str] = set()
        for s in order:
            before = value(coalition)
            coalition.add(s)
            phi[s] += (value(coalition) - before) / len(orders)
    return phi, value(set(slots)), value(set())


@pytest.mark.parametrize("fusion", [{"name": "gated", "dim": 8}, {"name": "concat", "dim": 8},
                                    {"name": "cross_attention", "dim": 8, "heads": 2}])
def test_exact_values_equal_brute_force_enumeration_with_really_missing_inputs(fusion):
    model, samples = _model(fusion)
    records = explain_samples(model, samples, batch_size=3)  # batches of 3 records
    for sample, record in zip(samples, records, strict=True):
        phi, full, empty = _brute_force(model, sample)
        assert record["exact"]
        assert record["full"] == pytest.approx(full, abs=1e-5) and record["empty"] == pytest.approx(empty, abs=1e-5)
        for slot in SLOTS:
            assert record["shapley"][slot] == pytest.approx(phi[slot], abs=1e-5), slot
        assert math.fsum(record["shapley"].values()) == pytest.approx(record["full"] - record["empty"], abs=1e-5)
        for slot in SLOTS:
            if sample[slot] is None:
                assert record["shapley"][slot] == 0.0 and slot not in record["present"], "an absent slot is a dummy"


def test_the_shapley_matrix_by_hand_and_efficiency_for_any_game():
    w = shapley_matrix(2)  # coalitions {}, {0}, {1}, {0,1}
    torch.testing.assert_close(w, torch.tensor([[-0.5, 0.5, -0.5, 0.5], [-0.5, -0.5, 0.5, 0.5]], dtype=torch.float64))
    values = torch.randn(5, 2**5, dtype=torch.float64)
    phi = exact_shapley(values)
    torch.testing.assert_close(phi.sum(1), values[:, -1] - values[:, 0])


def test_sampled_values_are_efficient_and_near_the_exact_ones():
    m = 4
    g = torch.Generator().manual_seed(0)
    table = torch.randn(3, 2**m, dtype=torch.float64, generator=g)
    weights = 2 ** torch.arange(m)

    def value_fn(coalitions):
        return table[:, (coalitions.long() * weights).sum(1)]

    phi, stderr = sampled_shapley(value_fn, m, pairs=200, generator=torch.Generator().manual_seed(1))
    exact = exact_shapley(table)
    torch.testing.assert_close(phi.sum(1), table[:, -1] - table[:, 0])  # every order telescopes
    assert ((phi - exact).abs() <= 4 * stderr + 1e-9).all()
    assert (stderr > 0).all()


def test_above_the_exact_limit_records_carry_standard_errors(monkeypatch):
    import mmcore_plugins.explain.attribution as attribution

    model, samples = _model()
    exact = explain_samples(model, samples)
    monkeypatch.setattr(attribution, "EXACT_MAX", 2)
    sampled = attribution.explain_samples(model, samples, exact_max=2, pairs=50)
    for a, b in zip(exact, sampled, strict=True):
        assert not b["exact"] and set(b["stderr"]) == set(SLOTS)
        assert math.fsum(b["shapley"].values()) == pytest.approx(b["full"] - b["empty"], abs=1e-5)
        for slot in SLOTS:
            assert abs(a["shapley"][slot] - b["shapley"][slot]) <= 4 * b["stderr"][slot] + 1e-6


def test_batched_and_one_by_one_agree_and_the_summary():
    model, samples = _model()
    together = explain_samples(model, samples, batch_size=64)
    alone = [explain_samples(model, [s])[0] for s in samples]
    for a, b in zip(together, alone, strict=True):
        for slot in SLOTS:
            assert a["shapley"][slot] == pytest.approx(b["shapley"][slot], abs=1e-5)
    summary = summarise(together)
    assert summary["records"] == len(samples)
    assert summary["mean_abs"]["b"] == pytest.approx(sum(abs(r["shapley"]["b"]) for r in together) / len(samples))
    assert summary["present"]["b"] == sum(s["b"] is not None for s in samples)


def test_a_record_without_any_modality_and_an_unsupported_head_are_refused():
    model, samples = _model()
    with pytest.raises(ValueError, match="record 2 has none of the model's modality slots"):
        explain_samples(model, [samples[0], {"a": None}])
    spec = {"encoders": {s: {"name": "tabular_mlp", "num_features": 3, "dim": 8} for s in SLOTS},
            "fusion": {"name": "gated", "dim": 8}, "head": {"name": "multilabel", "num_labels": 3}}
    multilabel = mmcore.build_model(spec)
    multilabel.fit_processors([{"inputs": s} for s in samples])
    with pytest.raises(ValueError, match="single-label classification"):
        explain_samples(multilabel.eval(), samples)


@pytest.mark.parametrize("fusion", sorted(get_registry().names("fusion")))
def test_every_registered_fusion_gives_finite_efficient_values_with_no_modality(fusion):
    info = get_registry().get("fusion", fusion)
    options = {**info.example_options}
    model, samples = _model({"name": fusion, **options}, slots=("a", "b"))
    batch = model.collate([{"inputs": s} for s in samples])
    inputs, _ = to_device(batch, "cpu")
    result = explain_batch(model, inputs)
    assert torch.isfinite(result["empty"]).all() and torch.isfinite(result["shapley"]).all()
    torch.testing.assert_close(result["shapley"].sum(1), result["full"] - result["empty"], atol=1e-5, rtol=0)


def test_an_unreadable_file_is_a_missing_modality_of_its_record_or_its_error(tmp_path):
    """explain explains the prediction predict makes: under ``unreadable_inputs="missing"`` a file that cannot
    be read is absent from its record (its Shapley value 0), the record's ``missing`` names it with its row;
    under ``"error"`` the InputReadError names the table, row and column."""
    from PIL import Image

    from mmcore.errors import InputReadError

    torch.manual_seed(0)
    model = mmcore.build_model({"encoders": {"photo": {"name": "image_cnn", "image_size": 8, "width": 8, "dim": 8},
                                             "a": {"name": "tabular_mlp", "num_features": 2, "dim": 8}},
                                "fusion": {"name": "concat", "dim": 8}, "head": {"name": "classification", "num_classes": 2}})
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.new("RGB", (8, 8), "red").save(good)
    bad.write_bytes(good.read_bytes()[:20])  # a PNG cut short
    samples = [{"photo": str(good), "a": [0.1, 0.2]}, {"photo": str(bad), "a": [0.3, 0.4]}]
    origins = [{"file": "t.csv", "row": i, "columns": {"photo": "Photo"}} for i in (1, 2)]
    model.unreadable_inputs = "missing"
    records = explain_samples(model.eval(), samples, origins=origins)
    assert "missing" not in records[0] and records[0]["present"] == ["photo", "a"]
    assert records[1]["present"] == ["a"] and records[1]["shapley"]["photo"] == 0.0
    assert "'Photo'" in records[1]["missing"] and "bad.png" in records[1]["missing"]
    alone = explain_samples(model, [{"a": [0.3, 0.4]}])[0]  # the same as the record without its photo
    assert records[1]["full"] == pytest.approx(alone["full"], abs=1e-6)
    model.unreadable_inputs = "error"
    with pytest.raises(InputReadError, match=r"t.csv: row 2, column 'Photo'"):
        explain_samples(model, samples, origins=origins)
