"""Pooling layers against hand-computed statistics, with padding masks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from speakerverify.models.pooling import AttentiveStatsPool, StatsPool, lengths_to_mask


def test_lengths_to_mask():
    mask = lengths_to_mask(torch.tensor([2, 0, 3]), 3)
    assert mask.tolist() == [[True, True, False], [False, False, False], [True, True, True]]


def test_stats_pool_hand_computed_with_padding():
    # item 0: channel values [1, 2, 3 | pad 100]; item 1: [4, 4, 6, 6] all valid
    x = torch.tensor(
        [
            [[1.0, 2.0, 3.0, 100.0], [0.0, 0.0, 3.0, -50.0]],
            [[4.0, 4.0, 6.0, 6.0], [1.0, 2.0, 3.0, 4.0]],
        ],
        dtype=torch.float64,
    )
    out = StatsPool()(x, lengths_to_mask(torch.tensor([3, 4]), 4))
    expected = torch.tensor(
        [
            [2.0, 1.0, math.sqrt(2 / 3), math.sqrt(2.0)],
            [5.0, 2.5, 1.0, math.sqrt(1.25)],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-7)


def test_stats_pool_without_mask_uses_every_frame():
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    torch.testing.assert_close(StatsPool()(x), torch.tensor([[2.5, math.sqrt(1.25)]]))


def test_stats_pool_ignores_whatever_is_in_the_padding():
    x = torch.randn(2, 5, 9)
    mask = lengths_to_mask(torch.tensor([6, 9]), 9)
    junk = x.clone()
    junk[0, :, 6:] = 1e6
    pool = StatsPool()
    torch.testing.assert_close(pool(x, mask), pool(junk, mask))
    torch.testing.assert_close(pool(x, mask)[0], pool(x[:1, :, :6])[0])


def test_stats_pool_constant_input_has_finite_gradient():
    x = torch.ones(1, 3, 5, requires_grad=True)
    out = StatsPool()(x)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert out[0, 3:].max().item() == pytest.approx(math.sqrt(1e-7), rel=1e-3)


def test_attentive_pool_hand_computed_softmax_weights():
    # Identity attention without global context: scores are the frames themselves, so frames
    # [0, ln 3 | pad 50] get weights [1/4, 3/4].
    pool = AttentiveStatsPool(channels=1, global_context=False)
    pool.attention = nn.Identity()
    x = torch.tensor([[[0.0, math.log(3.0), 50.0]]], dtype=torch.float64)
    out = pool(x, lengths_to_mask(torch.tensor([2]), 3))
    mean = 0.75 * math.log(3.0)
    std = math.sqrt(0.25 * 0.75) * math.log(3.0)
    torch.testing.assert_close(out, torch.tensor([[mean, std]], dtype=torch.float64))


def test_attentive_pool_with_uniform_attention_equals_stats_pool():
    pool = AttentiveStatsPool(channels=4, attention_channels=3).eval()
    nn.init.zeros_(pool.attention[-1].weight)
    nn.init.zeros_(pool.attention[-1].bias)
    x = torch.randn(2, 4, 7)
    mask = lengths_to_mask(torch.tensor([5, 7]), 7)
    torch.testing.assert_close(pool(x, mask), StatsPool()(x, mask))


def test_attentive_pool_padding_invariance_with_global_context():
    torch.manual_seed(0)
    pool = AttentiveStatsPool(channels=6, attention_channels=5).eval()
    x = torch.randn(1, 6, 8)
    padded = torch.cat([x, 1e3 * torch.randn(1, 6, 4)], dim=2)
    mask = lengths_to_mask(torch.tensor([8]), 12)
    torch.testing.assert_close(pool(padded, mask), pool(x), rtol=1e-5, atol=1e-5)
    assert pool(x).shape == (1, 12)
