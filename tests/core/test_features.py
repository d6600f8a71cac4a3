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
