"""Conformance checks for plugin authors: does a component keep the mmcore contracts?

    from mmcore.testing import check_component
    check_component("fusion", "my_fusion", options={"dim": 32})

Each check builds small random inputs and verifies forward, backward, shapes, masks and
missing modalities; a failure raises :class:`ConformanceError` (an AssertionError, so pytest
shows it as a test failure) that says what was expected and what came.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch

from mmcore.components import Encoder, Fusion, Head, HeadOutput
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
def check_encoder(encoder: Encoder, *, batch_size: int = 4, seed: int = 0, label: str | None = None) -> Encoder:
    """Run the encoder's processor on its example samples (one missing) and check the encoder contract."""
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
    if any(p.requires_grad for p in encoder.parameters()):
        encoder.train()
        out = encoder(batch)
        (out.pooled.sum() + (out.tokens * out.mask[..., None]).sum()).backward()
        _check_parameter_grads(label, encoder)
    return encoder


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


# ---------------------------------------------------------------------- by registry entry
def check_component(
    kind: str | ComponentInfo,
    name: str | None = None,
    *,
    options: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
    num_modalities: int = 3,
) -> Any:
    """Check a registered component by kind and name (its ``example_options`` unless ``options``)."""
    if isinstance(kind, ComponentInfo):
        info = kind
    else:
        if registry is None:
            from mmcore.plugin_manager import get_registry

            registry = get_registry()
        info = registry.get(kind, name)
    opts = dict(info.example_options if options is None else options)
    label = f"{info.kind} {info.name!r} ({info.owner})"
    if info.kind == "fusion":
        dims = dict(list(DEFAULT_INPUT_DIMS.items())[:num_modalities])
        return check_fusion(info.factory, options=opts, input_dims=dims, label=f"{label} with {num_modalities} modalities")
    if info.kind == "encoder":
        encoder = info.factory(**opts)
        return check_encoder(encoder, label=label)
    if info.kind == "head":
        return check_head(info.factory, options=opts, label=label)
    raise ValueError(f"no conformance check for {info.kind}s; checks exist for encoders, fusions and heads")


# ---------------------------------------------------------------------- helpers
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
