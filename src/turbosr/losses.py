"""Loss formulas as small pure functions (shapes (B, C, H, W); reductions documented per function)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def diffusion_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between network output and its diffusion target (Ho et al. 2020, eq. 14), a scalar."""
    return F.mse_loss(prediction.float(), target.float())
