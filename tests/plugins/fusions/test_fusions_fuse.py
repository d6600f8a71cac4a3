"""Each fusion fuses: on XOR of a bit carried by each modality, it beats both unimodal models by a clear margin."""

from __future__ import annotations

import pytest
import torch

import mmcore

FUSIONS = [
    "concat", "weighted_concat", "sum", "mean", "deepset", "late", "gated", "film", "nl_gate", "multiplicative",
    "tensor", "low_rank_tensor", "mcb", "mfb", "mutan", "block",
    "cross_attention", "co_attention", "mult", "joint_transformer", "bottleneck", "perceiver",
]
ATTENTION = {"cross_attention", "co_attention", "mult", "joint_transformer", "bottleneck", "perceiver", "nl_gate"}
#: Small settings (dim 16 everywhere) so each fused model trains in about a second on one CPU core.
OPTIONS = {
    **{name: {"heads": 2} for name in ATTENTION},
    "perceiver": {"heads": 2, "num_latents": 4},
    "joint_transformer": {"heads": 2, "layers": 1},
    "bottleneck": {"heads": 2, "layers": 2, "bottleneck_tokens": 2},
    "tensor": {"factor_dim": 4},
    "mcb": {"sketch_dim": 256},
    "mfb": {"dropout": 0.0},
    "multiplicative": {"form": "matrix"},
}
STEPS = 100


def xor_samples(n: int, seed: int) -> list[dict]:
    """Bit a in modality 'a', bit b in modality 'b' (each spread over 1-4 noisy tokens); label a XOR b."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(n):
        bits = torch.randint(0, 2, (2,), generator=g)
        inputs = {}
        for slot, bit in zip("ab", bits.tolist(), strict=True):
            length = int(torch.randint(1, 5, (1,), generator=g))
            tokens = torch.randn(length, 2, generator=g) * 0.3
            tokens[:, 0] += 2.0 * bit - 1.0
            inputs[slot] = tokens
        samples.append({"inputs": inputs, "target": int(bits[0] ^ bits[1])})
    return samples


def train_and_score(spec: dict, train: list[dict], test: list[dict], steps: int = STEPS) -> tuple[float, dict[str, float]]:
    """Full-batch Adam on ``train``; held-out accuracy and each encoder's gradient size at initialisation."""
    torch.manual_seed(0)
    model = mmcore.build_model(spec)
    batch = model.collate(train)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    grads: dict[str, float] = {}
    for step in range(steps):
        out = model(batch["inputs"], batch["targets"])
        optimizer.zero_grad()
        out.loss.backward()
        if step == 0:  # at initialisation, every encoder must receive a gradient through the fusion
            grads = {slot: sum(float(p.grad.abs().sum()) for p in enc.parameters()) for slot, enc in model.encoders.items()}
        optimizer.step()
    model.eval()
    held = model.collate(test)
    with torch.no_grad():
        accuracy = (model(held["inputs"]).predictions == held["targets"]).float().mean().item()
    return accuracy, grads


def spec_for(encoder: str, slots, fusion: str | None = None) -> dict:
    spec = {
        "encoders": {s: {"name": encoder, "num_features": 2, "dim": 16} for s in slots},
        "head": {"name": "classification", "num_classes": 2, "hidden": 32},
    }
    if fusion:
        spec["fusion"] = {"name": fusion, "dim": 16, **OPTIONS.get(fusion, {})}
    return spec


def unimodal(samples: list[dict], slot: str) -> list[dict]:
    return [{"inputs": {slot: s["inputs"][slot]}, "target": s["target"]} for s in samples]


@pytest.fixture(scope="module")
def data():
    return xor_samples(320, seed=1), xor_samples(200, seed=2)


@pytest.fixture(scope="module")
def best_single(data, sequence_encoder_class):
    """Held-out accuracy of the better unimodal model (the same encoder and head, no fusion)."""
    train, test = data
    register = mmcore.register_encoder("test_sequence_unimodal", modality="sequence")
    with register(sequence_encoder_class).__mmcore_plugin__:
        return max(
            train_and_score(spec_for("test_sequence_unimodal", [slot]), unimodal(train, slot), unimodal(test, slot))[0]
            for slot in "ab"
        )


def test_every_registered_builtin_fusion_is_exercised():
    builtin = {i.name for i in mmcore.get_registry() if i.kind == "fusion" and i.distribution == "mmcore"}
    assert builtin == set(FUSIONS)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_fusion_beats_each_single_modality_on_xor(fusion, data, best_single, sequence_encoder):
    train, test = data
    fused, grads = train_and_score(spec_for(sequence_encoder, "ab", fusion), train, test)
    assert best_single < 0.65, f"a single modality should be near chance on XOR, got {best_single:.2f}"
    assert fused > 0.9 and fused - best_single > 0.3, f"{fusion}: fused accuracy {fused:.2f} vs best single modality {best_single:.2f}"
    assert all(g > 0 for g in grads.values()), f"{fusion}: gradients must reach every encoder, got {grads}"
