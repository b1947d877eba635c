"""Relative attention: the skew equals an explicit distance lookup and is shift-equivariant;
Primer-EZ convs: Q, K and V each have their own bidirectional depthwise conv."""

import math

import pytest
import torch
import torch.nn.functional as F

from trainer.model.attention import (
    FrameAttention,
    TimeDepthwiseConv,
    relative_attention,
    relative_distance_index,
    relative_logits,
    skew,
)


def naive_relative_logits(q, table, max_distance):
    """O(L^2) reference: out[b, h, i, j] = q[b, h, i] . table[h, clip(j - i) + max_distance]."""
    length = q.shape[-2]
    out = torch.empty(*q.shape[:-1], length, dtype=q.dtype)
    for i in range(length):
        for j in range(length):
            row = max(-max_distance, min(max_distance, j - i)) + max_distance
            out[..., i, j] = (q[..., i, :] * table[:, row, :]).sum(-1)
    return out


def naive_relative_attention(q, k, v, table, max_distance):
    logits = (q @ k.transpose(-1, -2) + naive_relative_logits(q, table, max_distance)) / math.sqrt(q.shape[-1])
    return logits.softmax(-1) @ v


@pytest.mark.parametrize("length,max_distance", [(1, 3), (2, 1), (9, 20), (16, 4), (23, 5)])
def test_relative_logits_match_naive_lookup(length, max_distance):
    generator = torch.Generator().manual_seed(length)
    q = torch.randn(2, 3, length, 8, generator=generator)
    table = torch.randn(3, 2 * max_distance + 1, 8, generator=generator)
    torch.testing.assert_close(
        relative_logits(q, table, max_distance), naive_relative_logits(q, table, max_distance), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("length,max_distance", [(1, 2), (12, 3), (12, 30)])
def test_relative_attention_matches_naive_attention(length, max_distance):
    generator = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 4, length, 8, generator=generator) for _ in range(3))
    table = torch.randn(4, 2 * max_distance + 1, 8, generator=generator)
    torch.testing.assert_close(
        relative_attention(q, k, v, table, max_distance),
        naive_relative_attention(q, k, v, table, max_distance),
        atol=1e-5,
        rtol=1e-5,
    )


def test_skew_lines_up_distances():
    length = 5
    by_distance = torch.arange(-(length - 1), length).float().expand(length, -1)
    expected = torch.arange(length)[None, :] - torch.arange(length)[:, None]
    torch.testing.assert_close(skew(by_distance), expected.float())


def shift_mismatch(logits_fn, length=20, shift=6, max_distance=8) -> float:
    """Two windows of one sequence, offset by `shift`: how far apart are the logits on their overlap?"""
    generator = torch.Generator().manual_seed(3)
    sequence = torch.randn(1, 2, length + shift, 8, generator=generator)
    table = torch.randn(2, 2 * max_distance + 1, 8, generator=generator)
    first = logits_fn(sequence[:, :, :length], table, max_distance)
    second = logits_fn(sequence[:, :, shift : shift + length], table, max_distance)
    overlap = length - shift
    return (first[..., shift:, shift:] - second[..., :overlap, :overlap]).abs().max().item()


def test_relative_logits_are_shift_equivariant():
    assert shift_mismatch(relative_logits) < 1e-5


def test_shift_check_catches_a_skew_that_reduces_to_absolute_positions():
    def unskewed(q, table, max_distance):
        # Reading column j of Q @ E^T as if it were distance j - i: logits depend on the key's position.
        length = q.shape[-2]
        rel = q @ table[:, relative_distance_index(length, max_distance)].transpose(-1, -2)
        return rel[..., length - 1 :]

    assert shift_mismatch(unskewed) > 1e-2


@pytest.mark.parametrize("position", ["relative", "rope"])
def test_attention_module_is_shift_equivariant(position):
    """Content moved along a zero-padded, key-masked sequence gives the same outputs, moved.

    Padding stays on both sides of the content so the Q/K/V convs see the same neighbours (no edge)."""
    torch.manual_seed(0)
    dims, content_length, total, shift = 32, 11, 24, 5
    attention = FrameAttention(dims, 4, position=position, max_distance=6, qkv_conv_kernel=3).eval()
    content = torch.randn(1, content_length, dims)

    def placed(start):
        x = torch.zeros(1, total, dims)
        x[:, start : start + content_length] = content
        ignored = torch.ones(1, total, dtype=torch.bool)
        ignored[:, start : start + content_length] = False
        return attention(x, key_padding_mask=ignored)[:, start : start + content_length]

    with torch.no_grad():
        torch.testing.assert_close(placed(2), placed(2 + shift), atol=1e-5, rtol=1e-5)


def test_relative_attention_depends_on_distance():
    """The relative term is not a no-op: changing the embedding of distance +1 changes the output."""
    torch.manual_seed(1)
    attention = FrameAttention(16, 2, position="relative", max_distance=4, qkv_conv_kernel=3).eval()
    x = torch.randn(1, 10, 16)
    with torch.no_grad():
        before = attention(x)
        attention.relative_table[:, 4 + 1] += 1.0
        assert not torch.allclose(before, attention(x))


def test_q_k_v_each_have_their_own_depthwise_conv():
    attention = FrameAttention(24, 3, position="relative", max_distance=4, qkv_conv_kernel=3)
    convs = [attention.q_conv, attention.k_conv, attention.v_conv]
    assert len({id(conv) for conv in convs}) == 3
    assert len({conv.conv.weight.data_ptr() for conv in convs}) == 3
    for conv in convs:
        assert conv.conv.groups == 24 and conv.conv.kernel_size == (3,) and conv.conv.padding == (1,)
    torch.manual_seed(2)
    x = torch.randn(2, 9, 24)
    for conv in convs:
        attention.zero_grad()
        attention(x).square().sum().backward()
        assert conv.conv.weight.grad.abs().sum() > 0


def test_depthwise_conv_is_bidirectional():
    conv = TimeDepthwiseConv(4, 3)
    x = torch.randn(1, 6, 4)
    later = x.clone()
    later[:, 3] += 1.0
    changed = (conv(later) - conv(x)).abs().sum(-1)[0] > 0
    assert changed.tolist() == [False, False, True, True, True, False]


def test_rope_is_offered_and_differs_from_relative():
    torch.manual_seed(4)
    x = torch.randn(1, 8, 32)
    rope = FrameAttention(32, 2, position="rope", max_distance=4, qkv_conv_kernel=3).eval()
    assert not any("relative" in name for name, _ in rope.named_parameters())
    with torch.no_grad():
        assert rope(x).shape == x.shape
    with pytest.raises(ValueError, match="position"):
        FrameAttention(32, 2, position="absolute", max_distance=4, qkv_conv_kernel=3)


def test_sdpa_receives_relative_logits_as_additive_mask(monkeypatch):
    seen = {}
    original = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        seen["mask"] = attn_mask
        return original(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    q = k = v = torch.randn(1, 2, 5, 4)
    relative_attention(q, k, v, torch.randn(2, 7, 4), 3)
    assert seen["mask"].dtype == torch.float32 and seen["mask"].shape == (1, 2, 5, 5)
