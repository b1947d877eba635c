"""Remixing a separation batch: new mixtures from the crops' own targets and each other's residuals.

A pair crop holds a mixture and its instrumental; what the mixture has beyond the instrumental (the
voice, for a vocal remover) is the residual. With `data.remix = p`, each crop of a training batch is,
with probability p, rebuilt as its own instrumental plus the residual of another crop of the batch:
a mixture no song contains, whose target is still known. This is the random stem remixing that
music separators train with (open-unmix and demucs mix stems of different songs), and, on
pseudo-labelled pairs, the remixing of RemixIT (Tzinis et al., 2022) and the input noise of noisy
student training (Xie et al., 2020): the student must separate mixtures its teacher never saw.

In magnitudes the residual is `max(mixture - target, 0)` (exactly `(1 - mask) x mixture` for a
teacher's pseudo-label); instrumental and foreign residual add with an independent random phase per
bin, as two unrelated recordings do (trainer/pretrain/mixture.py). The pair is then divided by the new
mixture's max, the scale every pair crop has. Validation never remixes.

Measured (docs/experiments.md, "A second round, remixed students, remixed labels"): neutral for a
student on pseudo-labels, 0.6–1.1 dB worse on true pairs — where voice and band overlap, a magnitude
difference is not the voice's magnitude — so every preset keeps it at 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trainer.pretrain.mixture import partners, random_phase_sum


def remix(mixture: Tensor, target: Tensor, prob: float, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """(mixture, target, remixed): the `[B, C, F, T]` batch with some crops rebuilt as their target
    plus another crop's residual, both on the new mixture's scale, and `[B]` bool: which were.

    A crop is remixed with probability `prob` when the batch holds another crop; draws come only from
    `generator`, in a fixed order, so a seed gives the same batch again.
    """
    batch = mixture.shape[0]
    device = mixture.device
    partner, has_partner = partners(torch.arange(batch, device=device), generator)
    chosen = (torch.rand(batch, generator=generator, device=device) < prob) & has_partner
    if not bool(chosen.any()):
        return mixture, target, chosen
    residual = (mixture - target).clamp(min=0)[partner]
    rebuilt = random_phase_sum(target, residual, generator)
    peak = rebuilt.amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-8)
    pick = chosen[:, None, None, None]
    return torch.where(pick, rebuilt / peak, mixture), torch.where(pick, target / peak, target), chosen


__all__ = ["remix"]
