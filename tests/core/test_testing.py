"""The conformance checks catch what they claim to catch (each broken component fails)."""

import pytest
import torch
from torch import nn

import mmcore
from mmcore import Features
from mmcore.data import SampleDataset
from mmcore.testing import (
    ConformanceError,
    check_component,
    check_dataset,
    check_encoder,
    check_fusion,
    check_head,
    check_perturbation,
)


class MeanPooledFusion(mmcore.Fusion):
    """Correct reference: mean of projected pooled vectors over present modalities."""

    def __init__(self, input_dims, dim=8, leak_padding=False, leak_absent=False, center_batch=False):
        super().__init__(input_dims, dim)
        self.proj = nn.ModuleDict({s: nn.Linear(d, dim) for s, d in input_dims.items()})
        self.leak_padding, self.leak_absent = leak_padding, leak_absent
        self.center_batch = center_batch

    def forward(self, features):
        total, count = 0, 0
        for slot, f in features.items():
            x = f.tokens.mean(1) if self.leak_padding else f.pooled
            y = self.proj[slot](x)
            keep = torch.ones_like(f.present) if self.leak_absent else f.present
            total = total + torch.where(keep[:, None], y, torch.zeros_like(y))
            count = count + keep.float()[:, None]
        out = total / count.clamp_min(1)
        if self.center_batch:  # a statistic over the batch couples the samples
            out = out - out.mean(0, keepdim=True)
        present = torch.stack([f.present for f in features.values()]).any(0)
        return Features.from_pooled(out, present)


def test_a_correct_fusion_passes():
    check_fusion(MeanPooledFusion)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"leak_padding": True}, "changing padding tokens"),
        ({"leak_absent": True}, "absent modality"),
        ({"center_batch": True}, "changing sample 0 changed the output of other samples"),
    ],
)
def test_broken_fusions_fail_with_the_reason(options, message):
    with pytest.raises(ConformanceError, match=message):
        check_fusion(MeanPooledFusion, options=options)


def test_a_fusion_returning_the_wrong_width_fails():
    class Wrong(MeanPooledFusion):
        def forward(self, features):
            out = super().forward(features)
            return Features.from_pooled(out.pooled[:, :-1], out.present)

    with pytest.raises(ConformanceError, match="expected feature width 8, got 7"):
        check_fusion(Wrong)


def test_a_head_whose_loss_is_not_scalar_fails(manager):
    base = manager.registry.get("head", "classification").factory

    class Broken(base):
        def forward(self, fused, targets=None, features=None):
            out = super().forward(fused, targets, features)
            if out.loss is not None:
                out.loss = out.loss.expand(2)
            return out

    with pytest.raises(ConformanceError, match="loss must be a finite scalar"):
        check_head(Broken, options={"num_classes": 3})


# ---------------------------------------------------------------------- encoders: padding and state
class SeqProcessor(mmcore.Processor):
    """A raw sequence of numbers -> ``[L, 1]`` (scaled by a fitted ``scale``); collate pads with a mask."""

    def __init__(self, tensor_state: bool = False, forget_state: bool = False, streaming: str | None = None) -> None:
        self.scale, self.tensor_state, self.forget_state, self.streaming = 1.0, tensor_state, forget_state, streaming

    def partial_fitter(self):
        if self.streaming is None:
            return None
        processor, seen, last_only = self, [], self.streaming == "last chunk only"

        class Fit(mmcore.PartialFit):
            def update(self, raws):
                seen[:] = list(raws) if last_only else [*seen, *raws]

            def finish(self):
                processor.fit(seen)

        return Fit()

    def __call__(self, raw):
        return torch.tensor(raw, dtype=torch.float32)[:, None] / self.scale

    def collate(self, items):
        length = max((len(i) for i in items if i is not None), default=1)
        x = torch.zeros(len(items), length, 1)
        mask = torch.zeros(len(items), length, dtype=torch.bool)
        for row, item in enumerate(items):
            if item is not None:
                x[row, : len(item)], mask[row, : len(item)] = item, True
        return {"x": x, "mask": mask, "present": torch.tensor([i is not None for i in items])}

    def fit(self, raws):
        values = [abs(v) for r in raws if r is not None for v in r]
        self.scale = max(values) if values else 1.0

    def state_dict(self):
        if self.forget_state:
            return {}
        return {"scale": torch.tensor(self.scale) if self.tensor_state else self.scale}

    def load_state_dict(self, state):
        if "scale" in state:
            self.scale = float(state["scale"])

    def example(self, generator):
        length = int(torch.randint(1, 7, (), generator=generator))  # ragged: batches get padded
        return torch.randn(length, generator=generator).tolist()


class SeqEncoder(mmcore.Encoder):
    """Per-token projection, mean over real tokens; the flags break the contract on purpose."""

    modality = "sequence"

    def __init__(self, dim=8, pool_padding=False, padding_shifts_tokens=False, **processor):
        super().__init__()
        self.dim, self.proj = dim, nn.Linear(1, dim)
        self.pool_padding, self.padding_shifts_tokens, self.processor_options = pool_padding, padding_shifts_tokens, processor

    def processor(self):
        return SeqProcessor(**self.processor_options)

    def forward(self, batch):
        x, mask = batch["x"], batch["mask"] & batch["present"][:, None]
        tokens = self.proj(x)
        if self.padding_shifts_tokens:  # e.g. positions counted from the padded end
            tokens = tokens + 0.1 * torch.arange(x.shape[1], 0, -1, dtype=x.dtype)[None, :, None]
        features = Features.from_tokens(tokens, mask, batch["present"])
        if self.pool_padding:
            features.pooled = (tokens * batch["present"][:, None, None]).mean(1)
        return features


def test_a_correct_encoder_passes():
    check_encoder(SeqEncoder())
    check_encoder(SeqEncoder(streaming="every chunk"))  # a streaming fit equal to fit()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"pool_padding": True}, "pooled vector differs alone and inside a padded batch"),
        ({"padding_shifts_tokens": True}, "real tokens differ alone and inside a padded batch"),
        ({"tensor_state": True}, "state_dict\\(\\) must hold JSON values only"),
        ({"forget_state": True}, "restored from its JSON state_dict\\(\\) gives different batches"),
        ({"streaming": "last chunk only"}, "partial_fitter\\(\\) fed the fit samples in chunks gives another state than fit"),
    ],
)
def test_broken_encoders_fail_with_the_reason(options, message):
    with pytest.raises(ConformanceError, match=message):
        check_encoder(SeqEncoder(**options))


# ---------------------------------------------------------------------- optional protocols
class NoisyProcessor(SeqProcessor):
    """Adds noise while training but does not say it augments (so it would be memoized and cached)."""

    def __call__(self, raw):
        out = super().__call__(raw)
        return out + torch.randn(out.shape) if self.training else out


class StrictStateProcessor(SeqProcessor):
    def check_state(self, state):
        raise ValueError("scale: never acceptable")


class SplitEncoder(SeqEncoder):
    """A frozen projection (the cacheable stage) and a trainable tail; the flags break the protocol."""

    def __init__(self, dropout_in_frozen=False, wrong_tail=False, **options):
        super().__init__(**options)
        self.proj.requires_grad_(False)
        self.tail = nn.Linear(self.dim, self.dim)
        self.drop = nn.Dropout(0.5 if dropout_in_frozen else 0.0)
        self.wrong_tail = wrong_tail

    @property
    def cacheable(self):
        return True

    def frozen_features(self, batch):
        features = super().forward(batch)
        return Features.from_tokens(self.drop(features.tokens), features.mask, features.present)

    def from_frozen(self, features):
        tokens = self.tail(features.tokens) * (2.0 if self.wrong_tail else 1.0)
        return Features.from_tokens(tokens, features.mask, features.present)

    def forward(self, batch):
        frozen = self.frozen_features(batch)
        return Features.from_tokens(self.tail(frozen.tokens), frozen.mask, frozen.present)


def test_the_optional_protocols_are_declared_with_their_defaults():
    processor, encoder = SeqProcessor(), SeqEncoder()
    assert (processor.training, processor.augment, processor.columns, processor.categorical) == (False, False, None, None)
    processor.check_state({"anything": 1})  # no check by default
    assert encoder.frozen_dim is None and encoder.cacheable is False  # its projection trains
    encoder.proj.requires_grad_(False)
    assert encoder.cacheable is True
    batch = processor.collate([processor([1.0, 2.0])])
    assert torch.equal(encoder.from_frozen(encoder.frozen_features(batch)).pooled, encoder(batch).pooled)
    assert mmcore.Head.dataset_options({"x": 1}) == {} and mmcore.Head.options_from_data({"x": 1}, {"c": 2}) == {"x": 1}
    assert mmcore.Head.classes is None and mmcore.Head.num_classes is None
    check_encoder(SplitEncoder())


@pytest.mark.parametrize("encoder, message", [
    (lambda: SeqEncoder(), None),
    (lambda: _with_processor(SeqEncoder(), NoisyProcessor), "processing it twice with training on gave different outputs"),
    (lambda: _with_processor(SeqEncoder(), StrictStateProcessor), "check_state refused the processor's own state_dict"),
    (lambda: SplitEncoder(dropout_in_frozen=True), "cacheable, but frozen_features gives different outputs in train and eval"),
    (lambda: SplitEncoder(wrong_tail=True), r"from_frozen\(frozen_features\(batch\)\) differs from encoder\(batch\)"),
])
def test_broken_optional_protocols_fail_with_the_reason(encoder, message):
    if message is None:
        check_encoder(encoder())
        return
    with pytest.raises(ConformanceError, match=message):
        check_encoder(encoder())


def _with_processor(encoder, kind):
    encoder.processor = lambda: kind()
    return encoder


def test_a_noisy_processor_that_says_it_augments_passes():
    class Honest(NoisyProcessor):
        augment = True

    check_encoder(_with_processor(SeqEncoder(), Honest))


def test_head_protocols(manager):
    base = manager.registry.get("head", "classification").factory

    class DropsOptions(base):
        @staticmethod
        def options_from_data(options, metadata):
            return {}

    class WrongCount(base):
        def __init__(self, input_dim, num_classes=3):
            super().__init__(input_dim, num_classes=num_classes)
            self.classes = ["a", "b"]

    check_head(base, options={"num_classes": 3})
    with pytest.raises(ConformanceError, match=r"options_from_data changed or dropped given options \['num_classes'\]"):
        check_head(DropsOptions, options={"num_classes": 3})
    with pytest.raises(ConformanceError, match="Head.classes lists 2 names but num_classes is 3"):
        check_head(WrongCount)


# ---------------------------------------------------------------------- perturbations
class Jitter(mmcore.Perturbation):
    """Adds ``level`` times Gaussian noise to a sequence; the flags break the contract on purpose."""

    levels = (0.1, 0.5)
    modality = "sequence"

    def __init__(self, level, global_rng=False, in_place=False, always=False, noop=False, bad_output=False):
        super().__init__(level)
        self.global_rng, self.in_place, self.always = global_rng, in_place, always
        self.noop, self.bad_output = noop, bad_output

    def __call__(self, raw, generator):
        if self.bad_output:
            return "not a sequence"
        if self.noop:
            return list(raw)
        level = max(self.level, 0.5) if self.always else self.level
        noise = torch.randn(len(raw)) if self.global_rng else torch.randn(len(raw), generator=generator)
        out = [v + level * float(e) for v, e in zip(raw, noise, strict=True)]
        if self.in_place:
            raw[:] = out
            return raw
        return out


def test_a_correct_perturbation_passes_and_check_component_runs_it():
    check_perturbation(Jitter, processor=SeqProcessor())
    with mmcore.register_plugin(_SequencePlugin(), "sequence-plugin"):
        assert isinstance(check_component("perturbation", "jitter"), Jitter)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"global_rng": True}, "the same generator state gave different outputs"),
        ({"in_place": True}, "modified in place"),
        ({"always": True}, "level 0 must leave the input unchanged"),
        ({"noop": True}, "changed none of the 6 examples"),
        ({"bad_output": True}, "processing the result, raised"),
    ],
)
def test_broken_perturbations_fail_with_the_reason(options, message):
    with pytest.raises(ConformanceError, match=message):
        check_perturbation(Jitter, processor=SeqProcessor(), options=options)


def test_a_perturbation_accepting_a_negative_level_fails():
    class Lenient(Jitter):
        def __init__(self, level, **options):
            self.level = level

    with pytest.raises(ConformanceError, match="a negative level must raise ValueError"):
        check_perturbation(Lenient, processor=SeqProcessor())


# ---------------------------------------------------------------------- datasets
def load_sequences(split, n=5, seeded=True, drop_target=False, ragged_slots=False, accept_any_split=False,
                   all_missing=False):
    """A dataset of ``n`` short sequences; the flags break the contract on purpose."""
    if split not in ("train", "val", "test") and not accept_any_split:
        raise ValueError(f"split must be train, val or test, got {split!r}")
    gen = torch.Generator().manual_seed(0) if seeded else None
    samples = []
    for i in range(n):
        inputs = {"seq": torch.randn(3, generator=gen).tolist()}
        if ragged_slots and i == n - 1:
            inputs["extra"] = None
        if all_missing and i == 2:
            inputs = {"seq": None}
        sample = {"inputs": inputs, "target": i % 2}
        if drop_target:
            del sample["target"]
        samples.append(sample)
    return SampleDataset(samples, metadata={"num_classes": 2})


def test_a_correct_dataset_passes():
    built = check_dataset(load_sequences)
    assert set(built) == {"train", "val", "test"} and len(built["train"]) == 5


@pytest.mark.parametrize(
    "options, message",
    [
        ({"seeded": False}, "building it twice gave different samples"),
        ({"drop_target": True}, "has no 'target' key"),
        ({"ragged_slots": True}, "differ from the other samples'"),
        ({"accept_any_split": True}, "an unknown split"),
        ({"all_missing": True}, "every modality is missing"),
        ({"n": 0}, "the training split is empty"),
    ],
)
def test_broken_datasets_fail_with_the_reason(options, message):
    with pytest.raises(ConformanceError, match=message):
        check_dataset(load_sequences, options=options)


class _SequencePlugin:
    @mmcore.hookimpl
    def mmcore_register(self, registry):
        registry.add_encoder("seq_encoder", SeqEncoder)  # the modality comes from the class
        registry.add_perturbation("jitter", Jitter)
        registry.add_dataset("sequences", load_sequences)


def test_check_component_checks_registered_datasets():
    with mmcore.register_plugin(_SequencePlugin(), "sequence-plugin"):
        assert len(check_component("dataset", "sequences")["val"]) == 5
        assert mmcore.get_registry().get("perturbation", "jitter").modality == "sequence"


class ScratchEncoder(SeqEncoder):
    """Allocates a 256 MiB scratch tensor in its constructor and keeps none of it (never touched:
    ``torch.empty`` reserves, it does not write)."""

    def __init__(self, dim=8):
        super().__init__(dim=dim)
        torch.empty(64 * 2**20)


class _ScratchPlugin:
    @mmcore.hookimpl
    def mmcore_register(self, registry):
        registry.add_encoder("scratch_encoder", ScratchEncoder)
        registry.add_encoder("seq_encoder", SeqEncoder)


def test_an_encoder_allocating_past_the_load_budget_fails_its_conformance_check():
    """load_model rebuilds a saved model under an allocation budget drawn from its weights
    (mmcore.engine.artefacts.AllocationGuard): a component whose constructor asks far more than it
    keeps would have every saved run refused, so its conformance check says so."""
    with mmcore.register_plugin(_ScratchPlugin(), "scratch-plugin"):
        check_component("encoder", "seq_encoder")
        with pytest.raises(ConformanceError, match=r"encoder 'scratch_encoder' .*asks tensor constructors for 268435\d+ "
                                                   r"bytes for \d+ bytes of state: more than the 4x"):
            check_component("encoder", "scratch_encoder")
