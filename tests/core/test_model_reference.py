"""The demo architecture's forward (image_cnn, audio_cnn, text_transformer -> gated -> classification) against a
straightforward reference written out here: the masked arithmetic as it was before the batch-1 shortcuts
(skipping multiplications by all-ones masks, casting the frame mask once). The shortcuts must not change a
single value -- a full record, records with missing modalities and padding, eval and training mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmcore import Features, build_model
from mmcore_plugins.encoders.audio import masked_group_norm

SPEC = {
    "encoders": {
        "image": {"name": "image_cnn", "image_size": 8, "width": 8, "dim": 16, "dropout": 0.0},
        "audio": {"name": "audio_cnn", "sample_rate": 8000, "n_mels": 16, "width": 8, "dim": 16, "dropout": 0.0},
        "text": {"name": "text_transformer", "dim": 16, "heads": 2, "layers": 1, "max_length": 16, "dropout": 0.0},
    },
    "fusion": {"name": "gated", "dim": 16},
    "head": {"name": "classification", "num_classes": 3},
}


# ---------------------------------------------------------------------- the reference
def ref_from_tokens(tokens, mask, present):
    present = present.to(torch.bool)
    mask = mask.to(torch.bool) & present[:, None]
    tokens = tokens * mask[..., None].to(tokens.dtype)
    weights = mask.to(tokens.dtype)[..., None]
    return tokens, mask, (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0), present


def ref_image(enc, batch):
    present = batch["present"].bool()
    maps = enc.net(batch["pixels"])
    tokens = enc.project(maps.flatten(2).transpose(1, 2)) + enc.position
    keep = present[:, None].to(tokens.dtype)
    mask = present[:, None].expand(-1, tokens.shape[1]).clone()
    return tokens * keep[..., None], mask, enc.flatten_project(maps.flatten(1)) * keep, present


def ref_group_norm(x, mask, norm):
    b, c, f, t = x.shape
    g = norm.num_groups
    m = mask[:, None, None, None, :].to(x.dtype)
    xg = x.view(b, g, c // g, f, t)
    count = (m.sum(dim=(2, 3, 4), keepdim=True) * (c // g) * f).clamp_min(1.0)
    mean = (xg * m).sum(dim=(2, 3, 4), keepdim=True) / count
    var = ((xg - mean) ** 2 * m).sum(dim=(2, 3, 4), keepdim=True) / count
    y = ((xg - mean) / torch.sqrt(var + norm.eps)).view(b, c, f, t)
    return (y * norm.weight[None, :, None, None] + norm.bias[None, :, None, None]) * mask[:, None, None, :]


def ref_audio(enc, batch):
    mels, mask, present = batch["mels"], batch["mask"].to(torch.bool), batch["present"].to(torch.bool)
    mask = mask & present[:, None]
    x = mels * mask[:, None, :]
    pad = (-x.shape[2]) % 2**enc.blocks
    x, mask = F.pad(x, (0, pad))[:, None], F.pad(mask, (0, pad))
    for block in enc.convs:
        x = F.gelu(ref_group_norm(block.conv(x), mask, block.norm))
        x, mask = F.max_pool2d(x, 2), mask[:, ::2][:, : x.shape[-1] // 2]
    tokens = enc.project(enc.dropout(x).flatten(1, 2).transpose(1, 2))
    tokens = tokens * mask[..., None]
    tokens = tokens + F.gelu(enc.temporal(tokens.transpose(1, 2))).transpose(1, 2)
    return ref_from_tokens(tokens, mask, present)


def ref_text(enc, batch):
    ids, mask, present = batch["ids"], batch["mask"].to(torch.bool), batch["present"].to(torch.bool)
    mask = mask & present[:, None]
    keys = mask | (~mask.any(1, keepdim=True) & (torch.arange(ids.shape[1]) == 0))
    x = enc.embed(ids) + enc.position[: ids.shape[1]]
    return ref_from_tokens(enc.norm(enc.encoder(x, src_key_padding_mask=~keys)), mask, present)


def ref_gated(fusion, features):
    present = torch.stack([features[s][3] for s in fusion.slots])
    xs = [torch.where(features[s][3][:, None], fusion.norms[s](features[s][2]), torch.zeros(())) for s in fusion.slots]
    hidden = torch.stack([torch.tanh(fusion.hidden[s](x)) for s, x in zip(fusion.slots, xs, strict=True)])
    logits = fusion.gate(torch.cat(xs, dim=-1)).view(-1, len(fusion.slots), fusion.dim).transpose(0, 1)
    keep = present[..., None].expand_as(logits)
    any_kept = keep.any(dim=0, keepdim=True)
    safe = torch.where(any_kept, logits.masked_fill(~keep, float("-inf")), torch.zeros_like(logits))
    gates = torch.softmax(safe, dim=0) * any_kept.to(logits.dtype)
    out, out_present = (gates * hidden).sum(0), present.any(0)
    return torch.where(out_present[:, None], out, torch.zeros(()))


def reference(model, inputs):
    refs = {"image": ref_image, "audio": ref_audio, "text": ref_text}
    features = {slot: refs[slot](model.encoders[slot], batch) for slot, batch in inputs.items()}
    for slot in model.encoders:
        if slot not in features:
            b = next(iter(features.values()))[0].shape[0]
            zeros, no = torch.zeros(b, 16), torch.zeros(b, dtype=torch.bool)
            features[slot] = (zeros[:, None], no[:, None], zeros, no)
    return features, model.head.net(ref_gated(model.fusion, features))


# ---------------------------------------------------------------------- batches
def batch(lengths_audio, lengths_text, image_present, generator):
    b = len(image_present)
    audio_t = max(max(lengths_audio), 1)
    text_t = max(max(lengths_text), 1)
    audio_mask = torch.arange(audio_t)[None] < torch.tensor(lengths_audio)[:, None]
    text_mask = torch.arange(text_t)[None] < torch.tensor(lengths_text)[:, None]
    return {
        "image": {"pixels": torch.randn(b, 1, 8, 8, generator=generator), "present": torch.tensor(image_present)},
        "audio": {"mels": torch.randn(b, 16, audio_t, generator=generator) * audio_mask[:, None],
                  "mask": audio_mask, "present": torch.tensor([n > 0 for n in lengths_audio])},
        "text": {"ids": torch.randint(0, 256, (b, text_t), generator=generator) * text_mask + 256 * ~text_mask,
                 "mask": text_mask, "present": torch.tensor([n > 0 for n in lengths_text])},
    }


CASES = {
    "one full record, padded audio": ([13], [5], [True]),
    "one full record, no padding": ([16], [16], [True]),
    "one record without text": ([21], [0], [True]),
    "one record, image only": ([0], [0], [True]),
    "one record, no image": ([9], [3], [False]),
    "a mixed batch": ([13, 5, 0, 24], [4, 0, 7, 1], [True, False, True, True]),
    "a full batch": ([16, 16], [3, 3], [True, True]),
}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    built = build_model(SPEC)
    with torch.no_grad():  # norms away from their identity start, so that their affine terms count
        for name, p in built.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn(p.shape))
    return built


def _assert_same(features, ref_features, logits, ref_logits):
    for slot, (tokens, mask, pooled, present) in ref_features.items():
        got = features[slot]
        assert torch.equal(got.mask, mask) and torch.equal(got.present, present), slot
        assert (got.tokens - tokens).abs().max().item() <= 1e-6, slot
        assert (got.pooled - pooled).abs().max().item() <= 1e-6, slot
    assert (logits - ref_logits).abs().max().item() <= 1e-6


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mode", ["eval", "inference", "train"])
def test_forward_matches_the_reference(model, case, mode):
    inputs = batch(*CASES[case], generator=torch.Generator().manual_seed(len(case)))
    model.train(mode == "train")
    context = torch.inference_mode() if mode == "inference" else torch.no_grad() if mode == "eval" else torch.enable_grad()
    with context:
        out = model(inputs)
        ref_features, ref_logits = reference(model, inputs)
    _assert_same(out.features, ref_features, out.logits, ref_logits)


def test_gradients_match_the_reference(model):
    """Training runs the same code: the shortcuts must leave the gradients as they were too."""
    model.train()
    for case in ("one full record, padded audio", "a mixed batch"):
        inputs = batch(*CASES[case], generator=torch.Generator().manual_seed(1))
        model.zero_grad()
        model(inputs).logits.square().sum().backward()
        got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        reference(model, inputs)[1].square().sum().backward()
        want = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        assert got.keys() == want.keys()
        for name in want:
            assert (got[name] - want[name]).abs().max().item() <= 1e-6, (case, name)


def test_slot_missing_from_the_inputs_matches_the_reference(model):
    model.eval()
    inputs = batch([11], [4], [True], generator=torch.Generator().manual_seed(2))
    del inputs["text"]
    with torch.no_grad():
        out = model(inputs)
        ref_features, ref_logits = reference(model, inputs)
    _assert_same(out.features, ref_features, out.logits, ref_logits)


@pytest.mark.parametrize("lengths", [[7, 16], [16, 16], [0, 3], [1, 1]])
def test_masked_group_norm_takes_a_float_frame_mask(lengths):
    """The encoder passes the frame mask as 1.0 / 0.0 (cast once per forward): the same result as the bool one."""
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(4, 8)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(len(lengths), 8, 5, 16)
    mask = torch.arange(16)[None] < torch.tensor(lengths)[:, None]
    want = ref_group_norm(x, mask, norm)
    assert torch.equal(masked_group_norm(x, mask, norm), want)
    assert torch.equal(masked_group_norm(x, mask.float(), norm), want)


@pytest.mark.parametrize("shape", [(1, 1, 4), (1, 7, 16), (3, 5, 33), (32, 12, 64)])
def test_from_tokens_all_real_is_the_masked_mean(shape):
    """With every token real Features.from_tokens skips its masking; tokens and pooled are the masked ones."""
    tokens = torch.randn(*shape, generator=torch.Generator().manual_seed(3)) * 10
    mask, present = torch.ones(shape[:2], dtype=torch.bool), torch.ones(shape[0], dtype=torch.bool)
    got = Features.from_tokens(tokens, mask, present)
    want = ref_from_tokens(tokens, mask, present)
    assert torch.equal(got.tokens, want[0]) and torch.equal(got.pooled, want[2]) and torch.equal(got.mask, want[1])
    assert torch.equal(Features.from_tokens(tokens).pooled, want[2])
    if shape[1] > 1:  # a mask of the wrong length is still refused on the short path
        with pytest.raises(ValueError, match="mask"):
            Features.from_tokens(tokens, torch.ones(shape[0], 1, dtype=torch.bool), present)


def test_autocast_matches_the_reference(model):
    """Under CPU autocast (bf16 activations) the features keep the reference's dtypes and values."""
    model.eval()
    for case in ("one full record, padded audio", "a mixed batch"):
        inputs = batch(*CASES[case], generator=torch.Generator().manual_seed(4))
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(inputs)
            ref_features, ref_logits = reference(model, inputs)
        for slot, (tokens, _, pooled, _) in ref_features.items():
            assert out.features[slot].tokens.dtype == tokens.dtype and out.features[slot].pooled.dtype == pooled.dtype, slot
        _assert_same(out.features, ref_features, out.logits, ref_logits)
