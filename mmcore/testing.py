"""Conformance checks for plugin authors: does a component keep the mmcore contracts?

    from mmcore.testing import check_component
    check_component("fusion", "my_fusion", options={"dim": 32})

Each check builds small random inputs and verifies forward, backward, shapes, masks and
missing modalities; a failure raises :class:`ConformanceError` (an AssertionError, so pytest
shows it as a test failure) that says what was expected and what came. Checks exist for every
buildable kind: :func:`check_encoder` (with its Processor), :func:`check_fusion`,
:func:`check_head`, :func:`check_perturbation`, :func:`check_dataset`, and
:func:`check_component` for a registered one by name; :func:`check_export` checks that a
registered encoder, fusion or head exports (torch.export, optionally ONNX). The optional protocols
declared on the base classes are checked with them (:func:`check_processor_protocols`,
:func:`check_frozen_stage`, :func:`check_head_protocols`).

(Longer than mmcore's other modules on purpose: it is the one public kit plugin authors import,
``from mmcore.testing import ...``, and each check reads top to bottom on its own.)
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mmcore.components import Encoder, Fusion, Head, HeadOutput, Processor
from mmcore.features import Features
from mmcore.options import factory_parameters
from mmcore.registry import ComponentInfo, Registry

#: Slot widths used to build fusions and heads in the checks (deliberately unequal).
DEFAULT_INPUT_DIMS = {"alpha": 12, "beta": 20, "gamma": 8}
#: Token counts per slot (1 = a pooled-only modality, like tabular).
DEFAULT_LENGTHS = {"alpha": 5, "beta": 1, "gamma": 7}


class ConformanceError(AssertionError):
    """A component broke an mmcore contract."""


def _fail(label: str, message: str) -> None:
    raise ConformanceError(f"{label}: {message}")


# ---------------------------------------------------------------------- random inputs
def random_features(
    batch_size: int,
    dim: int,
    length: int,
    *,
    present: torch.Tensor,
    generator: torch.Generator,
    requires_grad: bool = False,
) -> Features:
    """Features with ragged masks (every present sample has >= 1 real token) and zeros where absent."""
    lengths = torch.randint(1, length + 1, (batch_size,), generator=generator)
    mask = (torch.arange(length)[None, :] < lengths[:, None]) & present[:, None]
    tokens = torch.randn(batch_size, length, dim, generator=generator) * mask[..., None]
    pooled = tokens.sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
    if requires_grad:
        tokens.requires_grad_(True)
        pooled.requires_grad_(True)
    return Features(tokens=tokens, mask=mask, pooled=pooled, present=present.clone())


def present_patterns(slots: list[str], batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Sample 0 has every modality, sample i (1..N) has only slot i-1, the rest are random (>= 1 present)."""
    n = len(slots)
    present = torch.rand(batch_size, n, generator=generator) < 0.6
    present[0] = True
    for i in range(min(n, batch_size - 1)):
        present[i + 1] = False
        present[i + 1, i] = True
    empty = ~present.any(1)
    present[empty, 0] = True
    return {slot: present[:, j] for j, slot in enumerate(slots)}


# ---------------------------------------------------------------------- fusions
def check_fusion(
    factory: Any,
    *,
    options: Mapping[str, Any] | None = None,
    input_dims: Mapping[str, int] | None = None,
    batch_size: int = 6,
    seed: int = 0,
    label: str | None = None,
    atol: float = 1e-5,
) -> Fusion:
    """Build ``factory(input_dims=..., **options)`` and check the fusion contract; return the fusion."""
    input_dims = dict(input_dims or DEFAULT_INPUT_DIMS)
    label = label or f"fusion {getattr(factory, '__name__', factory)!r} with {len(input_dims)} modalities"
    torch.manual_seed(seed)
    fusion = factory(input_dims=input_dims, **dict(options or {}))
    if not isinstance(fusion, Fusion):
        _fail(label, f"factory must return an mmcore.Fusion, got {type(fusion).__name__}")
    slots = list(input_dims)
    gen = torch.Generator().manual_seed(seed)
    present = present_patterns(slots, batch_size, gen)
    lengths = {slot: DEFAULT_LENGTHS.get(slot, 3) for slot in slots}

    def make(requires_grad: bool = False) -> dict[str, Features]:
        g = torch.Generator().manual_seed(seed + 1)
        return {
            s: random_features(batch_size, input_dims[s], lengths[s], present=present[s], generator=g, requires_grad=requires_grad)
            for s in slots
        }

    fusion.eval()
    with torch.no_grad():
        base = fusion(make())
        _check_features(label, base, batch_size, fusion.dim)
        expected_present = torch.stack([present[s] for s in slots]).any(0)
        if not torch.equal(base.present, expected_present):
            _fail(label, f"output present should be True where any modality is present: expected {expected_present.tolist()}, got {base.present.tolist()}")

        # Padding must not leak: scribble over masked-out tokens of every slot.
        scribbled = make()
        for feats in scribbled.values():
            noise = torch.randn(feats.tokens.shape, generator=gen) * 100
            feats.tokens = torch.where(feats.mask[..., None], feats.tokens, noise)
        _same(label, "changing padding tokens (mask=False) changed the output", base, fusion(scribbled), atol)

        # Absent modalities must not leak: scribble over tokens and pooled of absent samples.
        scribbled = make()
        for feats in scribbled.values():
            absent = ~feats.present
            feats.tokens = torch.where(absent[:, None, None], torch.randn(feats.tokens.shape, generator=gen) * 100, feats.tokens)
            feats.pooled = torch.where(absent[:, None], torch.randn(feats.pooled.shape, generator=gen) * 100, feats.pooled)
        _same(label, "changing the features of an absent modality (present=False) changed the output", base, fusion(scribbled), atol)

        # Samples are independent in eval mode: change sample 0 only.
        changed = make()
        for feats in changed.values():
            feats.tokens = feats.tokens.clone()
            feats.tokens[0] = feats.tokens[0] + torch.randn(feats.tokens[0].shape, generator=gen) * feats.mask[0, :, None]
            feats.pooled = feats.pooled.clone()
            feats.pooled[0] = feats.pooled[0] + 1.0
        other = fusion(changed)
        if not torch.allclose(other.pooled[1:], base.pooled[1:], atol=atol, rtol=1e-4):
            _fail(label, "changing sample 0 changed the output of other samples in eval mode (batch statistics leak?)")

        # A fusion declaring reads_tokens False reads pooled vectors only: new tokens, the same output.
        if not isinstance(fusion.reads_tokens, bool):
            _fail(label, f"Fusion.reads_tokens must be a bool, got {fusion.reads_tokens!r}")
        if not fusion.reads_tokens:
            scribbled = make()
            for feats in scribbled.values():
                feats.tokens = torch.randn(feats.tokens.shape, generator=gen) * 100 * feats.mask[..., None]
            _same(label, "reads_tokens is False, but changing the tokens (pooled kept) changed the output", base,
                  fusion(scribbled), atol)

        # Every modality but one missing, for the whole batch: still a finite output.
        for keep in slots:
            only = {s: present[s] if s == keep else torch.zeros_like(present[s]) for s in slots}
            only[keep] = torch.ones_like(present[keep])
            g = torch.Generator().manual_seed(seed + 2)
            single = {s: random_features(batch_size, input_dims[s], lengths[s], present=only[s], generator=g) for s in slots}
            _check_features(f"{label} (only {keep!r} present)", fusion(single), batch_size, fusion.dim)

    # Backward: gradients reach every present input, never an absent one, and are finite.
    fusion.train()
    feats = make(requires_grad=True)
    out = fusion(feats)
    weights = torch.randn(out.pooled.shape, generator=gen)
    loss = (out.pooled * weights).sum() + (out.tokens * out.mask[..., None]).sum()
    loss.backward()
    for slot, f in feats.items():
        grads = [g for g in (f.tokens.grad, f.pooled.grad) if g is not None]
        if not grads:
            _fail(label, f"no gradient reached modality {slot!r}")
        for g in grads:
            if not torch.isfinite(g).all():
                _fail(label, f"non-finite gradient for modality {slot!r}")
        absent = ~f.present
        leaked = sum(float(g[absent].abs().sum()) for g in grads)
        if leaked > atol:
            _fail(label, f"gradient flows into absent samples of modality {slot!r} (|grad| sum {leaked:.3g})")
        if f.present.any() and sum(float(g[f.present].abs().sum()) for g in grads) == 0:
            _fail(label, f"zero gradient for every present sample of modality {slot!r}")
    _check_parameter_grads(label, fusion)
    return fusion


# ---------------------------------------------------------------------- encoders
def check_encoder(encoder: Encoder, *, batch_size: int = 4, seed: int = 0, label: str | None = None,
                  atol: float = 1e-4) -> Encoder:
    """Run the encoder's processor on its example samples (one missing) and check the encoder contract.

    Checks: ``modality`` and ``dim``; ``collate``'s ``present``; Features shapes, finiteness and
    zeros for the missing sample; each sample's output the same alone and inside the padded mixed
    batch (pooled and real tokens, within ``atol`` scaled by the output's magnitude); the
    Processor's state surviving ``fit -> state_dict -> JSON -> load_state_dict`` with identical
    outputs; gradients reaching the trainable parameters; the optional protocols
    (:func:`check_processor_protocols`, :func:`check_frozen_stage`). Needs ``Processor.example``.

    Raises:
        ConformanceError: the first contract broken, naming it.
    """
    label = label or f"encoder {type(encoder).__name__}"
    if not isinstance(encoder, Encoder):
        _fail(label, f"must be an mmcore.Encoder, got {type(encoder).__name__}")
    if not isinstance(encoder.modality, str) or not encoder.modality:
        _fail(label, f"modality must be a non-empty string, got {encoder.modality!r}")
    if not isinstance(getattr(encoder, "dim", None), int) or encoder.dim <= 0:
        _fail(label, f"dim must be a positive int, got {getattr(encoder, 'dim', None)!r}")
    processor = encoder.processor()
    gen = torch.Generator().manual_seed(seed)
    try:
        raws = [processor.example(gen) for _ in range(batch_size - 1)]
    except NotImplementedError as exc:
        _fail(label, f"its Processor must implement example(generator) for conformance checks ({exc})")
    # Sample 1 is missing: it must come out as present=False with zero features.
    raws.insert(1, None)
    batch = processor.collate([None if r is None else processor(r) for r in raws])
    if "present" not in batch:
        _fail(label, f"collate must return a batch with a 'present' entry, got keys {sorted(batch)}")
    expected_present = torch.tensor([r is not None for r in raws])
    if not torch.equal(batch["present"].cpu().bool(), expected_present):
        _fail(label, f"collate's present should be {expected_present.tolist()}, got {batch['present'].tolist()}")
    encoder.eval()
    with torch.no_grad():
        feats = encoder(batch)
    _check_features(label, feats, batch_size, encoder.dim)
    if not torch.equal(feats.present.cpu(), expected_present):
        _fail(label, f"Features.present should be {expected_present.tolist()}, got {feats.present.tolist()}")
    if feats.mask[1].any() or feats.pooled[1].abs().sum() != 0 or (feats.tokens[1].abs().sum() != 0):
        _fail(label, "a missing sample must give mask=False and zero tokens/pooled (never data-looking features)")
    _check_batch_independence(label, encoder, processor, raws, feats, atol)
    _check_processor_state(label, encoder, processor, gen)
    check_processor_protocols(processor, [r for r in raws if r is not None], label=label)
    check_frozen_stage(encoder, batch, label=label, atol=atol)
    if any(p.requires_grad for p in encoder.parameters()):
        encoder.train()
        out = encoder(batch)
        (out.pooled.sum() + (out.tokens * out.mask[..., None]).sum()).backward()
        _check_parameter_grads(label, encoder)
    return encoder


def _check_batch_independence(label: str, encoder: Encoder, processor: Processor, raws: list[Any], feats: Features,
                              atol: float) -> None:
    """Each present sample encoded alone must give what it gets inside the padded, mixed batch:
    the same pooled vector and the same real tokens. Catches pooling over padding tokens, and real
    tokens that move with how much padding the batch has (positions counted from the end, a
    normalisation by the padded length, attention without the key padding mask)."""
    with torch.no_grad():
        for row, raw in enumerate(raws):
            if raw is None:
                continue
            alone = encoder(processor.collate([processor(raw)]))
            _check_features(f"{label} (sample {row} alone)", alone, 1, encoder.dim)
            tol = atol * (1.0 + float(alone.pooled.abs().max()))
            real_batch, real_alone = feats.tokens[row][feats.mask[row]], alone.tokens[0][alone.mask[0]]
            if real_batch.shape != real_alone.shape:
                _fail(label, f"sample {row} has {real_alone.shape[0]} real tokens alone but {real_batch.shape[0]} inside a "
                             "padded batch: the mask must mark the same real tokens whatever the padding")
            if not torch.allclose(real_batch, real_alone, atol=tol, rtol=1e-3):
                diff = float((real_batch - real_alone).abs().max())
                _fail(label, f"sample {row}'s real tokens differ alone and inside a padded batch of {len(raws)} "
                             f"(max difference {diff:.3g}): they depend on how much padding the batch has")
            if not torch.allclose(feats.pooled[row], alone.pooled[0], atol=tol, rtol=1e-3):
                diff = float((feats.pooled[row] - alone.pooled[0]).abs().max())
                _fail(label, f"sample {row}'s pooled vector differs alone and inside a padded batch of {len(raws)} "
                             f"(max difference {diff:.3g}): padding (or the other samples) leaks into it")


def _check_processor_state(label: str, encoder: Encoder, processor: Processor, gen: torch.Generator,
                           num_fit: int = 6) -> None:
    """``fit -> state_dict -> JSON -> load_state_dict`` on a fresh processor gives identical outputs
    (the state is saved in model.json and loaded into a new model by ``mmcore predict``)."""
    fit_raws: list[Any] = [processor.example(gen) for _ in range(num_fit)]
    processor.fit([*fit_raws, None])
    state = processor.state_dict()
    streamed = encoder.processor()
    fitter = streamed.partial_fitter()
    if fitter is not None:  # the trainer's streaming fit: in chunks (an empty one too), the same state as fit
        for chunk in (fit_raws[:2], [], [*fit_raws[2:], None]):
            fitter.update(chunk)
        fitter.finish()
        if not _same_tree(streamed.state_dict(), state, atol=0.0):
            _fail(label, "the processor's partial_fitter() fed the fit samples in chunks gives another state than fit() "
                         f"of them all: {streamed.state_dict()!r:.200} vs {state!r:.200}")
    try:
        text = json.dumps(state, allow_nan=False)
    except (TypeError, ValueError) as exc:
        _fail(label, f"Processor.state_dict() must hold JSON values only (it is saved in model.json; use .tolist() "
                     f"for tensors): {exc}")
    fresh = encoder.processor()
    fresh.load_state_dict(json.loads(text))
    probe = [*fit_raws[:3], None]
    fitted = processor.collate([None if r is None else processor(r) for r in probe])
    restored = fresh.collate([None if r is None else fresh(r) for r in probe])
    if not _same_tree(fitted, restored, atol=0.0):
        _fail(label, "a processor restored from its JSON state_dict() gives different batches than the fitted one: "
                     "some fitted state is missing from state_dict() or not restored by load_state_dict()")
    with torch.no_grad():
        a, b = encoder(fitted), encoder(restored)
    if not (torch.equal(a.pooled, b.pooled) and torch.equal(a.tokens * a.mask[..., None], b.tokens * b.mask[..., None])):
        _fail(label, "the encoder's outputs differ for a processor restored from its JSON state_dict()")


def check_processor_protocols(processor: Processor, raws: Sequence[Any], *, label: str = "processor") -> None:
    """The Processor's optional protocols (declared on :class:`~mmcore.components.Processor`):
    ``training`` and ``augment`` are bools; a processor that does not declare ``augment`` gives the
    same output for the same input with ``training`` on (its outputs may be memoized and its slot's
    features cached); ``check_state`` accepts the processor's own ``state_dict()``.

    Raises:
        ConformanceError: the first protocol broken, naming it.
    """
    for flag in ("training", "augment"):
        if not isinstance(getattr(processor, flag), bool):
            _fail(label, f"Processor.{flag} must be a bool, got {getattr(processor, flag)!r}")
    if not processor.augment:
        was = processor.training
        processor.training = True
        try:
            for i, raw in enumerate(raws):
                if not _same_tree(processor(raw), processor(raw), atol=0.0):
                    _fail(label, f"example {i}: processing it twice with training on gave different outputs, but "
                                 "augment is False (set augment = True for random train-time augmentation: its outputs "
                                 "are then never memoized or cached)")
        finally:
            processor.training = was
    try:
        processor.check_state(json.loads(json.dumps(processor.state_dict())))
    except (ValueError, TypeError) as exc:
        _fail(label, f"check_state refused the processor's own state_dict(): {exc}")


def check_frozen_stage(encoder: Encoder, batch: Mapping[str, Any], *, label: str = "encoder", atol: float = 1e-4) -> None:
    """The Encoder's frozen stage (declared on :class:`~mmcore.components.Encoder`): ``frozen_features``
    gives Features of width ``frozen_dim or dim``; ``from_frozen(frozen_features(batch))`` is
    ``encoder(batch)``; ``cacheable`` is a bool, and a cacheable stage gives the same output in train
    and eval mode (a cached value is reused in both).

    Raises:
        ConformanceError: the first protocol broken, naming it.
    """
    if not isinstance(encoder.cacheable, bool):
        _fail(label, f"Encoder.cacheable must be a bool, got {encoder.cacheable!r}")
    width = encoder.frozen_dim or encoder.dim
    was_training = encoder.training
    try:
        encoder.eval()
        with torch.no_grad():
            frozen = encoder.frozen_features(batch)
            _check_features(f"{label} (frozen_features)", frozen, int(batch["present"].shape[0]), width)
            _same(label, "from_frozen(frozen_features(batch)) differs from encoder(batch)", encoder(batch),
                  encoder.from_frozen(frozen), atol)
            if not isinstance(encoder.pooled_cache_exact, bool):
                _fail(label, f"Encoder.pooled_cache_exact must be a bool, got {encoder.pooled_cache_exact!r}")
            if encoder.pooled_cache_exact:  # the pooled vector alone, as one token, gives the same pooled output
                one = Features(frozen.pooled[:, None], frozen.present[:, None].clone(), frozen.pooled, frozen.present)
                if not torch.allclose(encoder.from_frozen(one).pooled, encoder.from_frozen(frozen).pooled, atol=atol, rtol=1e-4):
                    _fail(label, "pooled_cache_exact is True, but from_frozen of the pooled vector as one token gives "
                                 "another pooled output (a non-linear tail?)")
            if encoder.cacheable:
                encoder.train()
                _same(label, "cacheable, but frozen_features gives different outputs in train and eval mode (a cached "
                             "value is reused in both: no dropout or batch statistics in the frozen stage)",
                      frozen, encoder.frozen_features(batch), atol)
    finally:
        encoder.train(was_training)


# ---------------------------------------------------------------------- heads
def check_head(
    factory: Any,
    *,
    options: Mapping[str, Any] | None = None,
    input_dim: int = 16,
    input_dims: Mapping[str, int] | None = None,
    batch_size: int = 6,
    seed: int = 0,
    label: str | None = None,
) -> Head:
    """Build ``factory(input_dim=..., **options)`` and check the head contract; return the head."""
    label = label or f"head {getattr(factory, '__name__', factory)!r}"
    input_dims = dict(input_dims or {"alpha": 12, "beta": 20})
    params, var_kw = factory_parameters(factory)
    reserved = {"input_dim": input_dim}
    if "input_dims" in params:
        reserved["input_dims"] = input_dims
    torch.manual_seed(seed)
    head = factory(**reserved, **dict(options or {}))
    if not isinstance(head, Head):
        _fail(label, f"factory must return an mmcore.Head, got {type(head).__name__}")
    check_head_protocols(factory, head, options=dict(options or {}), label=label)
    gen = torch.Generator().manual_seed(seed)
    present = torch.ones(batch_size, dtype=torch.bool)
    present[-1] = False  # the last sample lacks every modality
    fused = random_features(batch_size, input_dim, 3, present=present, generator=gen, requires_grad=True)
    features = {s: random_features(batch_size, d, 3, present=torch.ones(batch_size, dtype=torch.bool), generator=gen) for s, d in input_dims.items()}
    try:
        raw_targets = head.example_targets(batch_size, gen)
    except NotImplementedError as exc:
        _fail(label, f"must implement example_targets(batch_size, generator) for conformance checks ({exc})")
    targets = head.collate_targets(raw_targets)
    head.train()
    out = head(fused, targets, features)
    if not isinstance(out, HeadOutput):
        _fail(label, f"forward must return an mmcore.HeadOutput, got {type(out).__name__}")
    if out.loss is None or out.loss.dim() != 0 or not torch.isfinite(out.loss):
        _fail(label, f"with targets, loss must be a finite scalar, got {out.loss!r}")
    if out.predictions.shape[0] != batch_size:
        _fail(label, f"predictions must have batch size {batch_size} first, got shape {list(out.predictions.shape)}")
    out.loss.backward()
    _check_parameter_grads(label, head, allow_none=True)
    head.eval()
    with torch.no_grad():
        no_targets = head(fused.to(torch.float32), None, features)
    if no_targets.loss is not None:
        _fail(label, "without targets, loss must be None")
    if not isinstance(head.reads_tokens, bool):
        _fail(label, f"Head.reads_tokens must be a bool, got {head.reads_tokens!r}")
    if not head.reads_tokens:  # pooled vectors only: new tokens, the same output
        with torch.no_grad():
            scribbled = {s: Features(torch.randn(f.tokens.shape, generator=gen) * f.mask[..., None], f.mask, f.pooled, f.present)
                         for s, f in {"fused": fused, **features}.items()}
            again = head(scribbled.pop("fused"), None, scribbled)
        if not torch.allclose(again.logits, no_targets.logits, atol=1e-5, rtol=1e-4):
            _fail(label, "reads_tokens is False, but changing the tokens (pooled kept) changed the output")
    formatted = head.format_predictions(no_targets)
    if len(formatted) != batch_size:
        _fail(label, f"format_predictions must give one entry per sample ({batch_size}), got {len(formatted)}")
    try:
        json.dumps(formatted)
    except TypeError as exc:
        _fail(label, f"format_predictions must be JSON-serialisable: {exc}")
    metrics = head.metrics()
    if not isinstance(metrics, Mapping):
        _fail(label, f"metrics() must return a mapping name -> metric, got {type(metrics).__name__}")
    for name, metric in metrics.items():
        metric.update(no_targets.predictions, targets)
        value = metric.compute()
        if not torch.isfinite(torch.as_tensor(value, dtype=torch.float32)).all():
            _fail(label, f"metric {name!r} computed a non-finite value {value}")
    return head


def check_head_protocols(factory: Any, head: Head, *, options: Mapping[str, Any], label: str = "head") -> None:
    """The Head's optional protocols (declared on :class:`~mmcore.components.Head`): ``classes`` is
    None or a list of strings, as many as ``num_classes``; the factory's ``dataset_options(options)``
    returns a mapping; its ``options_from_data(options, metadata)`` returns a mapping that keeps every
    given option (given options win), with empty metadata too.

    Raises:
        ConformanceError: the first protocol broken, naming it.
    """
    classes, count = head.classes, head.num_classes
    if classes is not None and (not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)):
        _fail(label, f"Head.classes must be None or a list of class names (str), got {classes!r}")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        _fail(label, f"Head.num_classes must be None or a positive int, got {count!r}")
    if classes is not None and count is not None and len(classes) != count:
        _fail(label, f"Head.classes lists {len(classes)} names but num_classes is {count}")
    hints = getattr(factory, "dataset_options", Head.dataset_options)(dict(options))
    if not isinstance(hints, Mapping) or not all(isinstance(k, str) for k in hints):
        _fail(label, f"dataset_options(options) must return a mapping of data-set option names, got {hints!r}")
    filled = getattr(factory, "options_from_data", Head.options_from_data)(dict(options), {})
    if not isinstance(filled, Mapping):
        _fail(label, f"options_from_data(options, metadata) must return a mapping of options, got {filled!r}")
    changed = [k for k, v in options.items() if k not in filled or filled[k] != v]
    if changed:
        _fail(label, f"options_from_data changed or dropped given options {changed} (given options win)")


# ---------------------------------------------------------------------- by registry entry
def _component_info(kind: str | ComponentInfo, name: str | None, registry: Registry | None) -> ComponentInfo:
    """The registered component ``kind``/``name`` (in ``registry``, default mmcore's), or ``kind`` itself."""
    if isinstance(kind, ComponentInfo):
        return kind
    if registry is None:
        from mmcore.plugin_manager import get_registry

        registry = get_registry()
    return registry.get(kind, name)


def check_component(
    kind: str | ComponentInfo,
    name: str | None = None,
    *,
    options: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
    num_modalities: int = 3,
) -> Any:
    """Check a registered component by kind and name (its ``example_options`` unless ``options``).

    Encoders, fusions, heads, datasets and perturbations have checks (a perturbation gets its
    example inputs from a registered encoder of its modality). Raises ConformanceError on a broken
    contract, ValueError for a kind without a check.
    """
    info = _component_info(kind, name, registry)
    opts = dict(info.example_options if options is None else options)
    label = f"{info.kind} {info.name!r} ({info.owner})"
    if info.kind == "fusion":
        dims = dict(list(DEFAULT_INPUT_DIMS.items())[:num_modalities])
        return check_fusion(info.factory, options=opts, input_dims=dims, label=f"{label} with {num_modalities} modalities")
    if info.kind == "encoder":
        encoder = _build_within_load_budget(info.factory, opts, label)
        return check_encoder(encoder, label=label)
    if info.kind == "head":
        return check_head(info.factory, options=opts, label=label)
    if info.kind == "dataset":
        return check_dataset(info.factory, options=opts, label=label)
    if info.kind == "perturbation":
        return check_perturbation(info.factory, processor=_processor_for(info, registry), options=opts, label=label)
    raise ValueError(f"no conformance check for {info.kind}s; checks exist for encoders, fusions, heads, datasets and "
                     "perturbations")


def _build_within_load_budget(factory: Any, options: Mapping[str, Any], label: str) -> Any:
    """``factory(**options)``, checked to stay within the allocation budget ``load_model`` builds a
    saved model under (:class:`~mmcore.engine.artefacts.AllocationGuard`): its tensor constructors
    ask at most ALLOCATION_FACTOR x its state's bytes + ALLOCATION_SLACK (a pretrained encoder that
    loads its weights twice over passes; one that allocates far more than it keeps would make every
    saved run of it refused)."""
    from mmcore.engine.artefacts import ALLOCATION_FACTOR, ALLOCATION_SLACK, AllocationGuard

    guard = AllocationGuard(2**63, label, "(counting only)")
    with guard:
        module = factory(**options)
    state = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    if guard.used > ALLOCATION_FACTOR * state + ALLOCATION_SLACK:
        _fail(label, f"its constructor asks tensor constructors for {guard.used} bytes for {state} bytes of state: more "
                     f"than the {ALLOCATION_FACTOR}x + {ALLOCATION_SLACK} bytes load_model allows, so a saved run of it "
                     "would be refused as a crafted model.json")
    return module


def _processor_for(info: ComponentInfo, registry: Registry | None) -> Processor:
    """A processor of the perturbation's modality (from the first registered encoder of it), for example inputs."""
    if registry is None:
        from mmcore.plugin_manager import get_registry

        registry = get_registry()
    encoders = [e for e in registry if e.kind == "encoder" and e.modality == info.modality] if info.modality else []
    if not encoders:
        raise ValueError(f"perturbation {info.name!r} ({info.owner}): no registered encoder of modality {info.modality!r} "
                         "supplies example inputs; call check_perturbation(factory, processor=...) with one")
    chosen = next((e for e in encoders if e.distribution == info.distribution), encoders[0])
    return chosen.factory(**chosen.example_options).processor()


# ---------------------------------------------------------------------- perturbations
def check_perturbation(
    factory: Any,
    *,
    processor: Processor,
    raws: Sequence[Any] | None = None,
    options: Mapping[str, Any] | None = None,
    num_examples: int = 6,
    seed: int = 0,
    label: str | None = None,
    atol: float = 1e-5,
) -> Any:
    """Check a perturbation factory (``factory(level, **options)(raw, generator) -> raw``) on raw
    inputs of its modality (``raws``, or ``processor.example`` draws), as ``processor`` reads them.

    Checks: ``levels`` are numbers >= 0; a negative level is a ValueError/TypeError; the output is
    a raw value ``processor`` accepts (and collates); the same generator state gives the same
    output; the input is not modified in place; level 0 leaves the input unchanged (as processed,
    within ``atol``); the largest of ``levels`` (and of the checked level, ``options["level"]``)
    changes at least one example. Returns the perturbation built at the checked level.

    Raises:
        ConformanceError: the first contract broken, naming it.
    """
    label = label or f"perturbation {getattr(factory, '__name__', factory)!r}"
    opts = dict(options or {})
    levels = getattr(factory, "levels", ())
    if not isinstance(levels, (tuple, list)) or any(isinstance(x, bool) or not isinstance(x, (int, float)) or x < 0 for x in levels):
        _fail(label, f"levels (the default robustness sweep) must be a tuple of numbers >= 0, got {levels!r}")
    level = opts.pop("level", max(levels) if levels else 0.5)
    try:
        factory(level=-1.0, **opts)
    except (ValueError, TypeError):
        pass
    else:
        _fail(label, "a negative level must raise ValueError (levels are >= 0, 0 = unchanged)")
    gen = torch.Generator().manual_seed(seed)
    if raws is None:
        try:
            raws = [processor.example(gen) for _ in range(num_examples)]
        except NotImplementedError as exc:
            _fail(label, f"the processor supplies no example inputs; pass raws=[...] ({exc})")
    perturb, unchanged = factory(level=level, **opts), factory(level=0.0, **opts)
    if not callable(perturb):
        _fail(label, f"factory must return a callable (raw, generator) -> raw, got {type(perturb).__name__}")
    strongest = factory(level=max([*levels, level]), **opts)
    changed, outputs = False, []
    for i, raw in enumerate(raws):
        before = processor(raw)
        try:
            first = perturb(raw, torch.Generator().manual_seed(seed + i))
            again = perturb(raw, torch.Generator().manual_seed(seed + i))
            processed = processor(first)
        except Exception as exc:  # noqa: BLE001 - the report names what failed and how
            _fail(label, f"example {i} at level {level}: perturbing it, or processing the result, raised "
                         f"{type(exc).__name__}: {exc}")
        if not _same_tree(processed, processor(again), atol=0.0):
            _fail(label, f"example {i}: the same generator state gave different outputs (draw every random number "
                         "from the generator argument)")
        if not _same_tree(processor(raw), before, atol=0.0):
            _fail(label, f"example {i}: the raw input was modified in place (return a new value)")
        zero = processor(unchanged(raw, torch.Generator().manual_seed(seed + i)))
        if not _same_tree(zero, before, atol=atol):
            _fail(label, f"example {i}: level 0 must leave the input unchanged (as its processor sees it)")
        strong = processor(strongest(raw, torch.Generator().manual_seed(seed + i)))
        changed = changed or not _same_tree(strong, before, atol=atol)
        outputs.append(processed)
    if raws and not changed:
        _fail(label, f"at level {max([*levels, level])} it changed none of the {len(raws)} examples")
    batch = processor.collate(outputs)
    if "present" not in batch:
        _fail(label, "the processor could not collate perturbed inputs into a batch with 'present'")
    return perturb


# ---------------------------------------------------------------------- datasets
def check_dataset(
    factory: Any,
    *,
    options: Mapping[str, Any] | None = None,
    splits: Sequence[str] = ("train", "val", "test"),
    max_samples: int = 16,
    label: str | None = None,
) -> dict[str, Any]:
    """Check a dataset factory (``factory(split, **options)``): each split is a map-style dataset
    of samples ``{"inputs": {slot: raw | None}, "target": ...}``.

    Checks: ``len`` is an int and the training split is not empty; samples (the first
    ``max_samples`` and the last) are mappings with an ``inputs`` mapping of string slots and a
    ``target`` key; every sample and split has the same slots and at least one present input;
    ``metadata``, when present, is a mapping; building a split again gives the same samples (by
    :func:`mmcore.feature_cache.sample_key`); an unknown split is a ValueError. Returns the
    datasets by split.

    Raises:
        ConformanceError: the first contract broken, naming the split and sample.
    """
    from mmcore.feature_cache import sample_key

    label = label or f"dataset {getattr(factory, '__name__', factory)!r}"
    opts = dict(options or {})
    built: dict[str, Any] = {}
    slots: set[str] | None = None
    for split in splits:
        data = factory(split=split, **opts)
        n = len(data)
        if not isinstance(n, int) or n < 0:
            _fail(label, f"split {split!r}: len() must be an int >= 0, got {n!r}")
        if split == "train" and n == 0:
            _fail(label, "the training split is empty")
        metadata = getattr(data, "metadata", {})
        if not isinstance(metadata, Mapping):
            _fail(label, f"split {split!r}: metadata must be a mapping, got {type(metadata).__name__}")
        rows = sorted({*range(min(n, max_samples)), n - 1} - {-1})
        keys = []
        for i in rows:
            sample = data[i]
            where = f"split {split!r}, sample {i}"
            if not isinstance(sample, Mapping) or not isinstance(sample.get("inputs"), Mapping):
                _fail(label, f"{where}: expected a mapping with an 'inputs' mapping {{slot: raw or None}}, got {sample!r:.80}")
            if "target" not in sample:
                _fail(label, f"{where}: has no 'target' key (use None for unlabelled data)")
            inputs = sample["inputs"]
            if not all(isinstance(slot, str) and slot for slot in inputs):
                _fail(label, f"{where}: slots must be non-empty strings, got {list(inputs)}")
            if slots is None:
                slots = set(inputs)
            elif set(inputs) != slots:
                _fail(label, f"{where}: slots {sorted(inputs)} differ from the other samples' {sorted(slots)}")
            if all(raw is None for raw in inputs.values()):
                _fail(label, f"{where}: every modality is missing (a sample needs at least one present input)")
            keys.append(sample_key({"inputs": dict(inputs), "target": sample["target"]}))
        again = factory(split=split, **opts)
        if len(again) != n or [sample_key({"inputs": dict(again[i]["inputs"]), "target": again[i]["target"]}) for i in rows] != keys:
            _fail(label, f"split {split!r}: building it twice gave different samples (seed every random choice)")
        built[split] = data
    try:
        factory(split="no-such-split", **opts)
    except ValueError:
        pass
    else:
        _fail(label, "an unknown split ('no-such-split') must raise ValueError naming the valid ones")
    return built


# ---------------------------------------------------------------------- exports
def check_export(kind: str | ComponentInfo, name: str | None = None, *, options: Mapping[str, Any] | None = None,
                 registry: Registry | None = None, onnx: bool = False, num_modalities: int = 2, seed: int = 0,
                 atol: float = 1e-4, rtol: float | None = None, batch_sizes: Sequence[int] = ()) -> str | None:
    """Check that a registered encoder, fusion or head exports (``mmcore export``), by kind and name.

    The component (its ``example_options`` unless ``options``) is wrapped so its inputs are plain
    tensors (an encoder: its processor's collated batch; a fusion: each slot's ``tokens``, ``mask``,
    ``pooled``, ``present``; a head: the fused and per-slot features) and traced by
    ``torch.export`` (non-strict, under no_grad, as ``mmcore export`` traces; the program saved and
    loaded back) with every size that differs between two example batches dynamic
    (batch, tokens, frames). The exported program must then reproduce the eager component exactly
    on two other batches (other sizes, other missing modalities); with ``onnx=True`` the ONNX graph
    (dynamo exporter) run by onnxruntime must agree within ``atol``. The eager reference runs with
    PyTorch's fused-transformer fast path off (exporters trace the reference path).
    ``batch_sizes`` adds batches of those sizes (random missing modalities) to the comparison: an
    export whose error grows with the batch shows at 512 what it hides at 4. onnxruntime agrees when
    ``|ort - eager| <= atol + rtol * |eager|`` element-wise (``rtol`` defaults to ``atol``; 0 makes
    ``atol`` an absolute bound).

    Returns None when checked, or the component's ``export_refusal`` (then nothing is traced).

    Raises:
        ConformanceError: the component did not export, or its export computes something else.
    """
    info = _component_info(kind, name, registry)
    opts = dict(info.example_options if options is None else options)
    label = f"{info.kind} {info.name!r} ({info.owner}) export"
    component, probe, batches = _export_probe(info, opts, num_modalities, seed, batch_sizes)
    if getattr(component, "export_refusal", None):
        return component.export_refusal
    auto = torch.export.Dim.AUTO
    shapes = [[auto if a != b else None for a, b in zip(x.shape, y.shape, strict=True)] for x, y in zip(batches[0], batches[1], strict=True)]
    dynamic = (tuple({i: d for i, d in enumerate(s) if d is not None} for s in shapes),)
    try:
        # As ``mmcore export`` traces: under no_grad (a frozen stage's grad switch is then a no-op), a grad
        # switch left in the graph inlined, and the program saved and loaded back (torch.export.load's
        # verifier rejects what torch.export.export accepted: a wrap_with_set_grad_enabled node).
        with torch.no_grad(), torch.fx.experimental._config.patch(backed_size_oblivious=True):
            program = torch.export.export(probe, tuple(batches[0]), dynamic_shapes=dynamic, strict=False)
        if any(getattr(n.target, "__name__", "") == "wrap_with_set_grad_enabled" for n in program.graph.nodes):
            program = program.run_decompositions({})
        saved = io.BytesIO()
        torch.export.save(program, saved)
        saved.seek(0)
        program = torch.export.load(saved)
    except Exception as exc:  # noqa: BLE001 - the report names what failed
        _fail(label, f"torch.export failed ({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); "
                     "fix it, or set the class attribute export_refusal to the reason")
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            expected = [probe(*b) for b in batches[1:]]
            got = [program.module()(*b) for b in batches[1:]]
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        for j, (x, y) in enumerate(zip(e, g, strict=True)):
            if x.shape != y.shape or not torch.equal(torch.nan_to_num(x), torch.nan_to_num(y)):
                _fail(label, f"the exported program differs from eager on batch {i + 2}, output {j} "
                             f"(shapes {list(x.shape)} vs {list(y.shape)})")
    if onnx:
        import onnxruntime

        try:
            # optimize=False: onnxscript's graph optimiser is most of the conversion's time here, and onnxruntime
            # optimises the graph again when it loads it.
            model = torch.onnx.export(program, (), dynamo=True, optimize=False, verbose=False).model_proto.SerializeToString()
        except Exception as exc:  # noqa: BLE001
            _fail(label, f"the ONNX exporter failed ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]})")
        session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
        for i, (b, e) in enumerate(zip(batches[1:], expected, strict=True)):
            try:
                outs = session.run(None, {n.name: t.numpy() for n, t in zip(session.get_inputs(), b, strict=True)})
            except Exception as exc:  # noqa: BLE001
                _fail(label, f"onnxruntime cannot run the ONNX graph ({type(exc).__name__}: {str(exc)[:300]})")
            for j, (x, y) in enumerate(zip(e, outs, strict=True)):
                y = torch.from_numpy(y)
                if x.shape != y.shape or not torch.allclose(x.double(), y.double(), atol=atol, rtol=atol if rtol is None else rtol,
                                                            equal_nan=True):
                    _fail(label, f"onnxruntime differs from eager on batch {i + 2} ({x.shape[0] if x.dim() else 1} rows), output {j} by "
                                 f"{float((x.double() - y.double()).abs().nan_to_num().max()):.3g} (atol {atol})")
    return None


class _ExportProbe(torch.nn.Module):
    """A component behind plain tensor inputs and outputs (what an exporter traces)."""

    def __init__(self, component: torch.nn.Module, run: Any) -> None:
        super().__init__()
        self.component, self.run = component, run

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.run(self.component, tensors)


def _item_size(item: Any) -> int:
    """Elements of a processed item (a tensor, or a mapping / sequence of them): what a batch's lengths grow with."""
    if isinstance(item, torch.Tensor):
        return item.numel()
    if isinstance(item, Mapping):
        return sum(_item_size(v) for v in item.values())
    if isinstance(item, (list, tuple)):
        return sum(_item_size(v) for v in item)
    return 0


def _export_probe(info: ComponentInfo, opts: dict[str, Any], num_modalities: int, seed: int, sizes: Sequence[int] = ()):
    """(component in eval mode, probe module, three input batches of different sizes, then one per ``sizes``)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    slots = list(DEFAULT_INPUT_DIMS)[:num_modalities]

    def features_out(f: Features) -> tuple[torch.Tensor, ...]:
        return f.pooled, f.tokens * f.mask[..., None].to(f.tokens.dtype), f.mask, f.present

    def random_slots(batch: int, extra: int, dims: Mapping[str, int]) -> list[torch.Tensor]:
        present = present_patterns(list(dims), batch, gen)
        flat: list[torch.Tensor] = []
        for s, d in dims.items():
            length = DEFAULT_LENGTHS.get(s, 3)  # a one-token (pooled-only) modality keeps one token
            f = random_features(batch, d, length + extra if length > 1 else 1, present=present[s], generator=gen)
            flat += [f.tokens, f.mask, f.pooled, f.present]
        return flat

    def features(tensors: Sequence[torch.Tensor], names: Sequence[str]) -> dict[str, Features]:
        return {s: Features(*tensors[4 * i: 4 * i + 4]) for i, s in enumerate(names)}

    if info.kind == "encoder":
        component = info.factory(**opts).eval()
        processor = component.processor()
        raws = [processor.example(gen) for _ in range(6)]
        processor.fit(raws)
        # Shortest first: the first batch (the trace) then ends shorter than the second, so every length
        # that can vary is seen to vary and traced as dynamic (a tie left it static: its guard then failed on
        # the third batch, a length the trace had not seen).
        items = sorted((processor(r) for r in raws), key=_item_size)
        keys: list[str] = []

        def collated(rows: list[Any]) -> list[torch.Tensor]:
            batch = processor.collate(rows)
            keys[:] = list(batch)
            return [batch[k] for k in keys]

        batches = [collated(items[:3] + [None]), collated(items[1:6] + [None, items[0]]), collated([items[3], None, items[2]])]
        batches += [collated([None if i % 5 == 4 else items[i % 6] for i in range(n)]) for n in sizes]
        return component, _ExportProbe(component, lambda c, t: features_out(c(dict(zip(keys, t, strict=True))))), batches
    if info.kind == "fusion":
        dims = {s: DEFAULT_INPUT_DIMS[s] for s in slots}
        component = info.factory(input_dims=dims, **opts).eval()
        batches = [random_slots(4, 0, dims), random_slots(6, 2, dims), random_slots(3, 1, dims)]
        batches += [random_slots(n, 1, dims) for n in sizes]
        return component, _ExportProbe(component, lambda c, t: features_out(c(features(t, slots)))), batches
    if info.kind == "head":
        dims = {s: DEFAULT_INPUT_DIMS[s] for s in slots}
        params, _ = factory_parameters(info.factory)
        reserved = {"input_dim": 16, **({"input_dims": dims} if "input_dims" in params else {})}
        component = info.factory(**reserved, **opts).eval()

        def run(c: Any, t: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
            out = c(Features(*t[:4]), None, features(t[4:], slots))
            return (out.logits, out.predictions, *(out.extras[k] for k in sorted(out.extras) if isinstance(out.extras[k], torch.Tensor)))

        def batch(size: int, extra: int) -> list[torch.Tensor]:
            fused = random_features(size, 16, 3 + extra, present=torch.ones(size, dtype=torch.bool), generator=gen)
            return [fused.tokens, fused.mask, fused.pooled, fused.present, *random_slots(size, extra, dims)]

        return component, _ExportProbe(component, run), [batch(4, 0), batch(6, 2), batch(3, 1), *(batch(n, 1) for n in sizes)]
    raise ValueError(f"no export check for {info.kind}s; checks exist for encoders, fusions and heads")


# ---------------------------------------------------------------------- helpers
def _same_tree(a: Any, b: Any, *, atol: float) -> bool:
    """Equal processed values: tensors (and arrays) by shape and values within ``atol``, containers item by item."""
    if hasattr(a, "__array__") and not isinstance(a, torch.Tensor):
        a = torch.as_tensor(a)
    if hasattr(b, "__array__") and not isinstance(b, torch.Tensor):
        b = torch.as_tensor(b)
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.is_floating_point():
            return bool(torch.allclose(a, b, atol=atol, rtol=0.0, equal_nan=True))
        return bool(torch.equal(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same_tree(a[k], b[k], atol=atol) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_tree(x, y, atol=atol) for x, y in zip(a, b, strict=True))
    return a == b


def _check_features(label: str, feats: Any, batch_size: int, dim: int) -> None:
    if not isinstance(feats, Features):
        _fail(label, f"must return mmcore.Features, got {type(feats).__name__}")
    feats.validate()
    if feats.batch_size != batch_size:
        _fail(label, f"expected batch size {batch_size}, got {feats.batch_size}")
    if feats.dim != dim:
        _fail(label, f"expected feature width {dim}, got {feats.dim}")
    for name in ("tokens", "pooled"):
        if not torch.isfinite(getattr(feats, name)).all():
            _fail(label, f"output {name} contains NaN or inf")


def _same(label: str, message: str, a: Features, b: Features, atol: float) -> None:
    same_pooled = torch.allclose(a.pooled, b.pooled, atol=atol, rtol=1e-4)
    same_tokens = a.tokens.shape == b.tokens.shape and torch.allclose(
        a.tokens * a.mask[..., None], b.tokens * b.mask[..., None], atol=atol, rtol=1e-4
    )
    if not (same_pooled and same_tokens):
        diff = (a.pooled - b.pooled).abs().max().item()
        _fail(label, f"{message} (max pooled difference {diff:.3g})")


def _check_parameter_grads(label: str, module: torch.nn.Module, *, allow_none: bool = False) -> None:
    trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if not trainable:
        return
    with_grad = [(n, p.grad) for n, p in trainable if p.grad is not None]
    for n, g in with_grad:
        if not torch.isfinite(g).all():
            _fail(label, f"non-finite gradient in parameter {n!r}")
    if not allow_none and not any(float(g.abs().sum()) > 0 for _, g in with_grad):
        _fail(label, "no trainable parameter received a gradient")
