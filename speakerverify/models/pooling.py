"""Temporal pooling layers: masked statistics pooling and attentive statistics pooling.

Both take channel-first frames (B, C, T) and an optional (B, T) boolean mask of valid frames,
so padding added to batch unequal utterances never changes an utterance's statistics.
"""

from __future__ import annotations

import torch
from torch import nn


def lengths_to_mask(lengths: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Boolean mask of valid frames.

    Args:
        lengths: (B,) valid frame counts.
        num_frames: T, the padded length.

    Returns:
        (B, T) bool, True on valid frames.

    >>> lengths_to_mask(torch.tensor([1, 3]), 3)
    tensor([[ True, False, False],
            [ True,  True,  True]])
    """
    frames = torch.arange(num_frames, device=lengths.device)
    return frames[None, :] < lengths[:, None]


def full_lengths(x: torch.Tensor, lengths: torch.Tensor | None, time_dim: int) -> torch.Tensor:
    """`lengths`, or every item's full length along `time_dim` when it is None."""
    if lengths is None:
        return torch.full((x.shape[0],), x.shape[time_dim], dtype=torch.long, device=x.device)
    return lengths.to(x.device)


def masked_mean_std(
    x: torch.Tensor, weights: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and standard deviation over time.

    Args:
        x: (B, C, T) frames.
        weights: (B, 1, T) or (B, C, T) non-negative weights summing to 1 over T.
        eps: floor of the variance (keeps the square root differentiable).

    Returns:
        mean (B, C) and std (B, C); population statistics (divide by the weight sum).
    """
    mean = (x * weights).sum(dim=2)
    variance = (weights * (x - mean.unsqueeze(2)).square()).sum(dim=2)
    return mean, torch.sqrt(variance.clamp_min(eps))


class StatsPool(nn.Module):
    """Mean and standard deviation of each channel over valid frames (x-vector pooling).

    >>> pool = StatsPool()
    >>> x = torch.tensor([[[1.0, 2.0, 3.0, 100.0]]])
    >>> pool(x, torch.tensor([[True, True, True, False]]))
    tensor([[2.0000, 0.8165]])
    """

    def __init__(self, eps: float = 1e-7) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pool frames.

        Args:
            x: (B, C, T) frames.
            mask: (B, T) bool, True on valid frames; None means all valid.

        Returns:
            (B, 2C): means then standard deviations.
        """
        if mask is None:
            mask = torch.ones(x.shape[0], x.shape[2], dtype=torch.bool, device=x.device)
        weights = mask.unsqueeze(1).to(x.dtype)
        weights = weights / weights.sum(dim=2, keepdim=True).clamp_min(1.0)
        mean, std = masked_mean_std(x, weights, self.eps)
        return torch.cat([mean, std], dim=1)


class AttentiveStatsPool(nn.Module):
    """Channel-wise attentive statistics pooling with global context (ECAPA-TDNN).

    Attention scores come from each frame concatenated with the utterance's (masked) mean and
    standard deviation; a softmax over valid frames weighs the mean and standard deviation.

    Args:
        channels: C, input channels.
        attention_channels: width of the attention bottleneck.
        global_context: append utterance mean/std to every frame for the attention.
    """

    def __init__(
        self,
        channels: int,
        attention_channels: int = 128,
        global_context: bool = True,
        eps: float = 1e-7,
    ) -> None:
        super().__init__()
        self.eps = eps
        self.global_context = global_context
        in_channels = 3 * channels if global_context else channels
        self.attention = nn.Sequential(
            nn.Conv1d(in_channels, attention_channels, kernel_size=1),
            nn.ReLU(),
            nn.BatchNorm1d(attention_channels),
            nn.Tanh(),
            nn.Conv1d(attention_channels, channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pool frames.

        Args:
            x: (B, C, T) frames.
            mask: (B, T) bool, True on valid frames; None means all valid.

        Returns:
            (B, 2C): attention-weighted means then standard deviations.
        """
        if mask is None:
            mask = torch.ones(x.shape[0], x.shape[2], dtype=torch.bool, device=x.device)
        valid = mask.unsqueeze(1)
        if self.global_context:
            uniform = valid.to(x.dtype)
            uniform = uniform / uniform.sum(dim=2, keepdim=True).clamp_min(1.0)
            mean, std = masked_mean_std(x, uniform, self.eps)
            num_frames = x.shape[2]
            context = [x, mean.unsqueeze(2).expand(-1, -1, num_frames)]
            context.append(std.unsqueeze(2).expand(-1, -1, num_frames))
            attention_input = torch.cat(context, dim=1)
        else:
            attention_input = x
        scores = self.attention(attention_input).masked_fill(~valid, float("-inf"))
        weights = torch.softmax(scores, dim=2)
        # Utterances with no valid frame would be all -inf (NaN softmax): weigh nothing instead.
        weights = torch.nan_to_num(weights, nan=0.0)
        mean, std = masked_mean_std(x, weights, self.eps)
        return torch.cat([mean, std], dim=1)
