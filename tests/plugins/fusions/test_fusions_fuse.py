"""Each fusion fuses: on XOR of a bit carried by each modality, it beats both unimodal models."""

from __future__ import annotations

import pytest
import torch

import mmcore

FUSIONS = ["concat", "weighted_concat", "sum", "mean", "deepset", "late", "gated", "film", "tensor",
           "low_rank_tensor", "mcb", "mfb", "mutan", "block", "multiplicative", "cross_attention", "perceiver",
           "nl_gate", "co_attention", "mult", "joint_transformer", "bottleneck"]
ATTENTION = {"cross_attention", "perceiver", "nl_gate", "co_attention", "mult", "joint_transformer", "bottleneck"}
OPTIONS = {
    **{name: {"heads": 2} for name in ATTENTION},
    "perceiver": {"heads": 2, "num_latents": 4},
    "joint_transformer": {"heads": 2, "layers": 1},
    "bottleneck": {"heads": 2, "layers": 1},
    "tensor": {"factor_dim": 4},
    "mcb": {"sketch_dim": 256},
    "multiplicative": {"form": "matrix"},
}


def xor_samples(n: int, seed: int):
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


def train_and_score(spec, train, test, steps=150):
    torch.manual_seed(0)
    model = mmcore.build_model(spec)
    batch = model.collate(train)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    grads = {}
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


@pytest.fixture(scope="module")
def data():
    return xor_samples(320, seed=1), xor_samples(200, seed=2)


def spec_for(encoder, slots, fusion=None):
    spec = {
        "encoders": {s: {"name": encoder, "num_features": 2, "dim": 16} for s in slots},
        "head": {"name": "classification", "num_classes": 2, "hidden": 32},
    }
    if fusion:
        spec["fusion"] = {"name": fusion, "dim": 16, **OPTIONS.get(fusion, {})}
    return spec


def unimodal(samples, slot):
    return [{"inputs": {slot: s["inputs"][slot]}, "target": s["target"]} for s in samples]


@pytest.mark.parametrize("fusion", FUSIONS)
def test_fusion_beats_each_single_modality_on_xor(fusion, data, sequence_encoder):
    train, test = data
    best_single = max(
        train_and_score(spec_for(sequence_encoder, [slot]), unimodal(train, slot), unimodal(test, slot), steps=60)[0]
        for slot in "ab"
    )
    fused, grads = train_and_score(spec_for(sequence_encoder, "ab", fusion), train, test)
    assert best_single < 0.65, f"a single modality should be at chance on XOR, got {best_single:.2f}"
    assert fused > 0.9, f"{fusion}: fused accuracy {fused:.2f} (best single modality {best_single:.2f})"
    assert all(g > 0 for g in grads.values()), f"{fusion}: gradients must reach every encoder, got {grads}"
