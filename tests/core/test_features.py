import pytest
import torch

from mmcore import Features, masked_mean


def test_from_tokens_pools_over_real_tokens_and_zeroes_absent_samples():
    tokens = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    present = torch.tensor([True, False])
    f = Features.from_tokens(tokens, mask, present)
    assert torch.allclose(f.pooled[0], tokens[0, :2].mean(0))
    assert torch.equal(f.pooled[1], torch.zeros(2))
    assert not f.mask[1].any() and torch.equal(f.tokens[1], torch.zeros(3, 2))
    assert torch.equal(f.tokens[0, 2], torch.zeros(2)), "padding tokens are zeroed"


def test_from_pooled_is_one_token_per_sample():
    pooled = torch.randn(4, 3)
    f = Features.from_pooled(pooled, torch.tensor([True, True, False, True]))
    assert f.tokens.shape == (4, 1, 3)
    assert f.mask[:, 0].tolist() == [True, True, False, True]
    assert torch.equal(f.pooled[2], torch.zeros(3))
    f.validate()  # built without the dataclass checks, but consistent


def test_from_pooled_rejects_a_present_flag_of_the_wrong_length():
    with pytest.raises(ValueError, match=r"present must have shape \[4\] to match pooled \[4, 3\], got \[3\]"):
        Features.from_pooled(torch.randn(4, 3), torch.tensor([True, True, False]))


def test_absent_has_no_real_token():
    f = Features.absent(3, 5)
    assert f.tokens.shape == (3, 1, 5) and not f.present.any() and not f.mask.any()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("mask", torch.ones(2, 4, dtype=torch.bool), "mask must have shape [2, 3]"),
        ("pooled", torch.zeros(2, 6), "pooled must have shape [2, 5]"),
        ("present", torch.ones(3, dtype=torch.bool), "present must have shape [2]"),
        ("mask", torch.ones(2, 3), "mask must be a bool tensor"),
    ],
)
def test_inconsistent_features_are_rejected_with_expected_and_got(field, value, message):
    parts = {
        "tokens": torch.zeros(2, 3, 5),
        "mask": torch.ones(2, 3, dtype=torch.bool),
        "pooled": torch.zeros(2, 5),
        "present": torch.ones(2, dtype=torch.bool),
    }
    parts[field] = value
    with pytest.raises((ValueError, TypeError), match=message.replace("[", r"\[").replace("]", r"\]")):
        Features(**parts)


def test_tokens_must_be_three_dimensional():
    with pytest.raises(ValueError, match=r"tokens must be a \[B, L, D\] tensor, got tensor of shape \[2, 3\]"):
        Features.from_tokens(torch.zeros(2, 3))


def test_masked_mean_of_fully_masked_row_is_zero_not_nan():
    out = masked_mean(torch.randn(1, 4, 2), torch.zeros(1, 4, dtype=torch.bool))
    assert torch.equal(out, torch.zeros(1, 2))


def test_to_keeps_masks_bool():
    f = Features.from_tokens(torch.randn(2, 3, 4)).to(torch.float64)
    assert f.tokens.dtype == torch.float64 and f.mask.dtype == torch.bool and f.present.dtype == torch.bool


# ---------------------------------------------------------------------- zeroing absent samples lazily
def _half_present(b=4, d=3):
    raw = torch.randn(b, d, requires_grad=True)
    present = torch.tensor([True, False] * (b // 2))
    return raw, present


def test_unmasked_pooled_is_the_encoders_output_until_pooled_is_read():
    raw, present = _half_present()
    f = Features.from_pooled(raw, present)
    assert f.unmasked_pooled is raw
    assert (f.batch_size, f.num_tokens, f.dim) == (4, 1, 3)
    assert f.unmasked_pooled is raw, "reading shapes must not zero anything"
    assert torch.equal(f.pooled[1], torch.zeros(3)) and torch.equal(f.pooled[0], raw[0])
    assert torch.equal(f.tokens[:, 0], f.pooled), "tokens are the zeroed vectors too"
    assert f.unmasked_pooled is f.pooled, "once zeroed, both names give the zeroed vectors"


def test_reading_tokens_first_zeroes_the_same_way():
    raw, present = _half_present()
    f = Features.from_pooled(raw, present)
    assert torch.equal(f.tokens[1, 0], torch.zeros(3))
    assert torch.equal(f.pooled, f.tokens[:, 0])


def test_assigning_pooled_keeps_the_zeroed_tokens():
    raw, present = _half_present()
    f = Features.from_pooled(raw, present)
    replacement = torch.full((4, 3), 7.0)
    f.pooled = replacement
    assert f.pooled is replacement and f.unmasked_pooled is replacement
    assert torch.equal(f.tokens[1, 0], torch.zeros(3)) and torch.equal(f.tokens[0, 0], raw[0].detach())


def test_selecting_from_unmasked_pooled_gives_the_same_values_and_gradients_as_pooled():
    raw, present = _half_present()
    weights = torch.randn(4, 3)
    via_unmasked = torch.where(present[:, None], torch.nn.functional.layer_norm(Features.from_pooled(raw, present).unmasked_pooled, (3,)), 0.0)
    (via_unmasked * weights).sum().backward()
    grad_unmasked, raw.grad = raw.grad.clone(), None
    via_pooled = torch.where(present[:, None], torch.nn.functional.layer_norm(Features.from_pooled(raw, present).pooled, (3,)), 0.0)
    (via_pooled * weights).sum().backward()
    assert torch.allclose(via_unmasked, via_pooled)
    assert torch.allclose(grad_unmasked, raw.grad)
    assert torch.equal(raw.grad[1], torch.zeros(3)), "an absent sample's vector gets no gradient"


def test_all_present_on_cpu_needs_no_zeroing_and_no_copy():
    raw = torch.randn(4, 3)
    f = Features.from_pooled(raw, torch.ones(4, dtype=torch.bool))
    assert f.pooled is raw and f.unmasked_pooled is raw


def test_repr_names_shapes_without_zeroing():
    raw, present = _half_present()
    f = Features.from_pooled(raw, present)
    assert repr(f) == "Features(batch_size=4, num_tokens=1, dim=3, dtype=torch.float32, device=cpu, present=2/4)"
    assert f.unmasked_pooled is raw


def test_a_non_finite_value_in_an_absent_sample_becomes_zero_with_zero_gradient():
    raw = torch.tensor([[1.0, 2.0], [float("nan"), float("inf")]], requires_grad=True)
    f = Features.from_pooled(raw, torch.tensor([True, False]))
    assert torch.equal(f.pooled, torch.tensor([[1.0, 2.0], [0.0, 0.0]]))
    f.pooled.sum().backward()
    assert torch.equal(raw.grad, torch.tensor([[1.0, 1.0], [0.0, 0.0]]))


def test_a_read_under_no_grad_does_not_leave_later_reads_detached():
    raw, present = _half_present()
    f = Features.from_pooled(raw, present)
    with torch.no_grad():
        assert not f.pooled.requires_grad
    with torch.inference_mode():
        f.tokens  # noqa: B018
    assert f.pooled.requires_grad and f.tokens.requires_grad
    f.pooled.sum().backward()
    assert torch.equal(raw.grad, present[:, None].float().expand(4, 3))


def test_from_pooled_keeps_one_graph_under_torch_compile():
    import torch._dynamo

    def fused(x, present):
        return Features.from_pooled(x * 2, present).pooled.sum()

    explained = torch._dynamo.explain(fused)(torch.randn(4, 3), torch.ones(4, dtype=torch.bool))
    assert explained.graph_break_count == 0, explained.break_reasons
