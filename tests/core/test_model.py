"""Building models from specs: validation before building, assembly, missing modalities, training."""

import pytest
import torch

import mmcore
from mmcore import ConfigError, build_model


def spec(**changes):
    base = {
        "encoders": {
            "left": {"name": "tabular_mlp", "num_features": 4, "dim": 8},
            "right": {"name": "tabular_mlp", "num_features": 3, "dim": 6},
        },
        "fusion": {"name": "concat", "dim": 10},
        "head": {"name": "classification", "num_classes": 3},
    }
    base.update(changes)
    return base


def samples(n=5, missing_right=()):
    g = torch.Generator().manual_seed(0)
    return [
        {
            "inputs": {"left": torch.randn(4, generator=g).tolist(), "right": None if i in missing_right else torch.randn(3, generator=g).tolist()},
            "target": i % 3,
        }
        for i in range(n)
    ]


def test_build_assembles_components_with_reserved_arguments(manager):
    model = build_model(spec(), manager.registry)
    assert model.slots == ["left", "right"]
    assert model.fusion.input_dims == {"left": 8, "right": 6}
    assert model.head.input_dim == 10


def test_every_problem_is_reported_at_once_with_paths_and_suggestions(manager):
    bad = spec(
        fusion={"name": "concat", "dimm": 10},
        head={"name": "clasification", "num_classes": 3},
    )
    bad["encoders"]["left"]["num_features"] = "four"
    with pytest.raises(ConfigError) as err:
        build_model(bad, manager.registry)
    messages = [str(i) for i in err.value.issues]
    assert messages[0] == "model.encoders.left.num_features: option of encoder 'tabular_mlp' expects int, got str 'four'"
    assert messages[1].startswith("model.fusion.dimm: unknown option of fusion 'concat'; did you mean 'dim'? (valid options: activation, dim, dropout)")
    assert messages[2].startswith("model.head.name: unknown head 'clasification'; did you mean 'classification'? (registered heads:")
    assert len(messages) == 3


def test_missing_required_option_and_reserved_option_are_errors(manager):
    bad = spec(head={"name": "captioning"}, fusion={"name": "concat", "input_dims": {"x": 1}})
    with pytest.raises(ConfigError) as err:
        build_model(bad, manager.registry)
    text = str(err.value)
    assert "model.head.vocab: missing required option of head 'captioning'" in text
    assert "model.fusion.input_dims: 'input_dims' is set by mmcore for fusion 'concat'; remove it from the config" in text


def test_structure_errors(manager):
    with pytest.raises(ConfigError, match="model: expected a mapping with encoders, fusion and head, got list"):
        build_model([], manager.registry)
    with pytest.raises(ConfigError, match=r"model.fusion: required when there is more than one encoder \(2\)"):
        build_model(spec(fusion=None), manager.registry)
    with pytest.raises(ConfigError, match="model.heads: unknown section"):
        build_model({**spec(), "heads": {}}, manager.registry)
    with pytest.raises(ConfigError, match=r"model.encoders.left.name: missing; expected the name of a registered encoder"):
        build_model(spec(encoders={"left": {"num_features": 3}}), manager.registry)


def test_a_factory_rejecting_values_is_reported_with_the_path(manager):
    with pytest.raises(ConfigError, match=r"model.head: head 'classification' \(plugin 'classification' from distribution 'mmcore'\) rejected its options: num_classes must be at least 2, got 1"):
        build_model(spec(head={"name": "classification", "num_classes": 1}), manager.registry)


def test_a_component_too_large_to_allocate_is_a_config_error(manager):
    """Found by benchmarks/attack_surface.py: ``model.encoders.first.dim=1099511627776`` asked torch
    for 52 TB and came out as an internal error (exit 1); it is the config's fault (exit 2). On the
    meta device, a size that overflows is the same error."""
    huge = spec(encoders={"left": {"name": "tabular_mlp", "num_features": 3, "dim": 2**40}})
    with pytest.raises(ConfigError, match=r"model.encoders.left: encoder 'tabular_mlp' with these options is too large to build: .*allocate"):
        build_model(huge, manager.registry)
    with torch.device("meta"), pytest.raises(ConfigError, match=r"too large to build: .*overflow"):
        build_model(spec(encoders={"left": {"name": "audio_cnn", "dim": 2**31 - 1, "sample_rate": 8000, "n_mels": 40}}),
                    manager.registry)


def test_single_encoder_needs_no_fusion(manager):
    model = build_model({"encoders": {"x": {"name": "tabular_mlp", "num_features": 4, "dim": 8}}, "head": {"name": "classification", "num_classes": 3}}, manager.registry)
    batch = model.collate([{"inputs": {"x": [1.0, 2.0, 3.0, 4.0]}, "target": 1}])
    out = model(batch["inputs"], batch["targets"])
    assert out.logits.shape == (1, 3) and out.loss is not None


def test_collate_carries_missing_modalities_as_not_present(manager):
    model = build_model(spec(), manager.registry)
    batch = model.collate(samples(4, missing_right={1, 3}))
    assert batch["inputs"]["right"]["present"].tolist() == [True, False, True, False]
    assert batch["targets"].tolist() == [0, 1, 2, 0]
    model.eval()
    features = model.encode(batch["inputs"])
    assert features["right"].present.tolist() == [True, False, True, False]
    assert torch.equal(features["right"].pooled[1], torch.zeros(6))


def test_a_slot_missing_from_inputs_counts_as_absent_for_every_sample(manager):
    model = build_model(spec(), manager.registry).eval()
    batch = model.collate(samples(3))
    out = model({"left": batch["inputs"]["left"]})
    features = model.encode({"left": batch["inputs"]["left"]})
    assert not features["right"].present.any()
    assert torch.isfinite(out.logits).all()
    with pytest.raises(ValueError, match=r"inputs for unknown modality slot\(s\) \['middle'\]"):
        model({"middle": batch["inputs"]["left"]})


def test_processor_statistics_are_fitted_on_training_samples(manager):
    model = build_model(spec(), manager.registry)
    data = [{"inputs": {"left": [10.0 + i, 0, 0, 5], "right": [1, 2, 3]}, "target": 0} for i in range(4)]
    model.fit_processors(data)
    left = model.processors["left"]
    assert left.mean.tolist() == pytest.approx([11.5, 0, 0, 5])
    assert left.std[1].item() == 1.0, "constant columns keep std 1 instead of dividing by zero"


def test_loss_falls_on_real_tabular_data_split_into_modalities(manager):
    """scikit-learn's wine data, its 13 columns split into two modalities: the model learns it."""
    factory = manager.registry.get("dataset", "sklearn_tabular").factory
    train = factory(split="train", dataset="wine")
    test = factory(split="test", dataset="wine")
    widths = {slot: len(cols) for slot, cols in train.metadata["modalities"].items()}
    torch.manual_seed(0)
    model = build_model(
        {
            "encoders": {slot: {"name": "tabular_mlp", "num_features": n, "dim": 16} for slot, n in widths.items()},
            "fusion": {"name": "concat", "dim": 16},
            "head": {"name": "classification", "num_classes": train.metadata["num_classes"]},
        },
        manager.registry,
    )
    model.fit_processors(train.samples)
    batch = model.collate(train.samples)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        out = model(batch["inputs"], batch["targets"])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.25 * losses[0]
    model.eval()
    held_out = model.collate(test.samples)
    accuracy = (model(held_out["inputs"]).predictions == held_out["targets"]).float().mean().item()
    assert accuracy > 0.85, f"test accuracy {accuracy:.2f} on wine"


def test_model_rejects_wrong_component_types():
    with pytest.raises(TypeError, match="encoder for slot 'x' must be an mmcore.Encoder, got Linear"):
        mmcore.MultimodalModel({"x": torch.nn.Linear(1, 1)}, None, None)


def _streaming_spec():
    return {"encoders": {"words": {"name": "text_transformer", "tokenizer": "word", "vocab_size": 6, "dim": 8, "heads": 2,
                                   "layers": 1, "max_length": 8},
                         "table": {"name": "tabular_mlp", "num_features": 2, "columns": ["a", "b"], "categorical": ["city"],
                                   "max_categories": 3, "dim": 8},
                         "picture": {"name": "image_cnn", "image_size": 8, "width": 8, "dim": 8}},
            "fusion": {"name": "concat", "dim": 8}, "head": {"name": "regression", "num_targets": 1}}


def _streaming_samples(n):
    words = ["red", "blue", "tall", "tiny", "red red", "blue, tall!"]
    cities = ["oslo", "rome", None, "oslo", "lima"]
    return [{"inputs": {"words": None if i % 7 == 3 else f"{words[i % 6]} {words[(i * 5) % 6]}",
                        "table": None if i % 11 == 5 else {"a": 0.37 * i - 4.1, "b": (-1.0) ** i * 1e3 / (i + 1),
                                                           "city": cities[i % 5]},
                        "picture": None},
             "target": 1.5 * i - 7.25} for i in range(n)]


def test_fit_processors_streams_one_pass_and_equals_todays_whole_split_fit(manager):
    """fit_processors takes any iterable once, in chunks, and fits exactly what a fit over the whole
    split gives: the vocabulary of the most frequent words (ties by word), each column's mean and std
    to the bit (float32 reductions over the same [N, F] block), each category vocabulary, and the
    regression head's target statistics."""
    rows = _streaming_samples(23)
    once = iter(rows)  # an iterator: a second pass would see nothing
    model = build_model(_streaming_spec(), manager.registry)
    model.fit_processors(once, chunk_size=4)
    assert next(once, None) is None
    # Today's algorithms, written out over the whole split.
    import re
    from collections import Counter

    texts = [r["inputs"]["words"] for r in rows if r["inputs"]["words"] is not None]
    counts = Counter(t for text in texts for t in re.findall(r"\w+|[^\w\s]", text.lower()))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:4]
    assert model.processors["words"].vocab == {token: i + 2 for i, (token, _) in enumerate(ranked)}
    table = [r["inputs"]["table"] for r in rows if r["inputs"]["table"] is not None]
    data = torch.stack([torch.tensor([float(t["a"]), float(t["b"])]) for t in table])
    assert torch.equal(model.processors["table"].mean, data.mean(0))
    assert torch.equal(model.processors["table"].std, data.std(0))
    city = Counter(t["city"] for t in table if t["city"] is not None)
    assert model.processors["table"].vocabularies["city"] == {
        v: i + 1 for i, (v, _) in enumerate(sorted(city.items(), key=lambda item: (-item[1], item[0]))[:2])}
    targets = torch.tensor([[r["target"]] for r in rows])
    assert torch.equal(model.head.target_mean, targets.mean(0)) and torch.equal(model.head.target_std, targets.std(0))
    # The same as each processor's fit of its whole list, however the split is chunked.
    for chunk_size in (1, 7, 4096):
        other = build_model(_streaming_spec(), manager.registry)
        other.fit_processors(rows, chunk_size=chunk_size)
        for slot in ("words", "table"):
            whole = build_model(_streaming_spec(), manager.registry).processors[slot]
            whole.fit([r["inputs"][slot] for r in rows])
            assert other.processors[slot].state_dict() == whole.state_dict() == model.processors[slot].state_dict()
    with pytest.raises(ValueError, match="chunk_size must be at least 1, got 0"):
        model.fit_processors(rows, chunk_size=0)


def test_fit_processors_holds_no_sample_it_has_passed(manager):
    """Memory stays bounded: a sample is dropped once read (a slot whose processor fits nothing -- the
    image here -- is not even gathered), and the targets are gathered only for a head that fits them."""
    import gc
    import weakref

    class Payload:  # stands for an image's bytes read from a shard
        pass

    refs: list[weakref.ref] = []
    alive_behind: list[int] = []

    def stream(n):
        for i in range(n):
            row = _streaming_samples(i + 1)[-1]  # made when asked for, as a data set read from disk
            gc.collect(1)  # young generations: the payloads are new; a full collection per row cost seconds in a big worker
            alive_behind.append(sum(ref() is not None for ref in refs[:-1]))
            payload = Payload()
            refs.append(weakref.ref(payload))
            row["inputs"]["picture"] = payload
            yield row

    model = build_model(_streaming_spec(), manager.registry)
    model.fit_processors(stream(40), chunk_size=8)
    assert alive_behind == [0] * 40
    assert model.processors["table"].mean.shape == (2,)
