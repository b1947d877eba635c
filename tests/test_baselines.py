"""Copy-nearest and per-bin linear interpolation baselines, and the masked-token L1, on hand examples."""

from __future__ import annotations

import torch

from trainer.pretrain.baselines import copy_nearest, interpolate
from trainer.pretrain.corrupt import CorruptConfig, corrupt_batch
from trainer.pretrain.objective import masked_l1


def ramp(frames: int = 8) -> torch.Tensor:
    """[1, 2, 2, T]: bin 0 of channel 0 is the frame index, other bins/channels scaled copies."""
    t = torch.arange(frames, dtype=torch.float32)
    scale = torch.tensor([[1.0, 10.0], [100.0, 1000.0]])  # [channel, bin]
    return (scale[:, :, None] * t)[None]


def mask(bits: str) -> torch.Tensor:
    return torch.tensor([[c == "1" for c in bits]])


def frames_of(x: torch.Tensor) -> list[float]:
    return x[0, 0, 0].tolist()


def test_copy_nearest_interior_gaps_and_ties_go_left():
    x = ramp()
    out = copy_nearest(x, mask("10011101"))
    # frame 0: only a right source (1); 3..5: sources 2 and 6, frame 4 equidistant -> 2; 7 -> 6
    assert frames_of(out) == [1, 1, 2, 2, 2, 6, 6, 6]
    # whole frames are copied: every channel and bin comes from the same source frame
    assert torch.equal(out[0, 1, 1], 1000 * out[0, 0, 0])


def test_copy_nearest_skips_separator_frames():
    x = ramp()
    out = copy_nearest(x, mask("00010000"), separator=mask("00100000"))
    assert frames_of(out) == [0, 1, 2, 4, 4, 5, 6, 7]  # 2 is separator: nearest source is 4
    out_without = copy_nearest(x, mask("00010000"))
    assert frames_of(out_without)[3] == 2


def test_copy_nearest_leaves_unselected_frames_alone():
    x = torch.rand(3, 2, 5, 20)
    selected = torch.rand(3, 20) < 0.3
    out = copy_nearest(x, selected)
    for b in range(3):
        assert torch.equal(out[b][..., ~selected[b]], x[b][..., ~selected[b]])


def test_interpolate_linear_per_bin_with_constant_edges():
    x = ramp()
    x[0, 0, 0] = torch.tensor([5.0, 3, 0, 0, 0, 0, 9, 0])
    out = interpolate(x, mask("10111101"))
    # left edge -> 3; gap between 1 (3.0) and 6 (9.0): 4.2, 5.4, 6.6, 7.8; right edge -> 9
    expected = [3.0, 3.0, 4.2, 5.4, 6.6, 7.8, 9.0, 9.0]
    assert torch.allclose(out[0, 0, 0], torch.tensor(expected))
    # the other bins interpolate their own values (a ramp stays a ramp inside the gap)
    assert torch.allclose(out[0, 1, 1, 1:7], x[0, 1, 1, 1:7])


def test_interpolate_skips_separator_frames():
    x = ramp()
    x[0, 0, 0] = torch.tensor([0.0, 0, 4, 7, 7, 8, 0, 0])
    out = interpolate(x, mask("00010000"), separator=mask("00001000"))
    assert torch.allclose(out[0, 0, 0, 3], torch.tensor(4 + (8 - 4) / 3))


def test_no_source_frames_leaves_sample_unchanged():
    x = ramp(4)
    everything = mask("1111")
    assert torch.equal(copy_nearest(x, everything), x)
    assert torch.equal(interpolate(x, everything), x)


def test_masked_l1_counts_selected_frames_only():
    pred = torch.zeros(2, 2, 3, 4)
    target = torch.zeros(2, 2, 3, 4)
    target[0, :, :, 1] = 2.0  # selected
    target[0, :, :, 2] = 100.0  # not selected: must not count
    selected = torch.tensor([[False, True, False, True], [True, False, False, False]])
    # selected frames: 3, each 2*3 elements; |diff| sum = 2*6 = 12 -> 12 / 18
    assert torch.allclose(masked_l1(pred, target, selected), torch.tensor(12 / 18))
    assert masked_l1(pred, target, torch.zeros(2, 4, dtype=torch.bool)).item() == 0.0


def test_baselines_beat_the_mask_on_smooth_spectra():
    # smooth in time: both baselines must be much closer to the target than the masked input
    t = torch.linspace(0, 1, 256)
    bins = torch.linspace(1, 3, 16)
    clean = (0.5 + 0.4 * torch.sin(6.28 * t[None, :] * bins[:, None]))[None, None].expand(8, 2, 16, 256).contiguous()
    out = corrupt_batch(clean, torch.arange(8), CorruptConfig(nsp=False), torch.Generator().manual_seed(0))
    masked_loss = masked_l1(out.input, out.target, out.selected)
    for baseline in (copy_nearest, interpolate):
        filled = baseline(out.input, out.selected, out.separator)
        assert masked_l1(filled, out.target, out.selected) < 0.5 * masked_loss
    assert masked_l1(interpolate(out.input, out.selected), out.target, out.selected) <= masked_l1(
        copy_nearest(out.input, out.selected), out.target, out.selected
    )
