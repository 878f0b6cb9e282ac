"""Thin ResNet-34 over the (frequency, time) plane with statistics pooling over time.

Padded frames are zeroed at every resolution, so a batch gives each utterance the embedding it
gets alone (the strided convolutions see zeros exactly where a lone utterance is zero-padded).
"""

from __future__ import annotations

import torch
from torch import nn

from speakerverify.models.embedding_norm import EmbeddingNorm, embedding_head
from speakerverify.models.pooling import StatsPool, full_lengths, lengths_to_mask


def _strided_lengths(lengths: torch.Tensor, stride: int) -> torch.Tensor:
    # Output length of a kernel-3, padding-1 (or kernel-1, padding-0) convolution with `stride`.
    return torch.div(lengths - 1, stride, rounding_mode="floor") + 1


def _time_mask(lengths: torch.Tensor, num_frames: int, dtype: torch.dtype) -> torch.Tensor:
    return lengths_to_mask(lengths, num_frames)[:, None, None, :].to(dtype)  # (B, 1, 1, T)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with BatchNorm and a (projected) residual connection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.conv1(x)
        lengths = _strided_lengths(lengths, self.stride)
        mask = _time_mask(lengths, out.shape[3], out.dtype)
        out = torch.relu(self.norm1(out)) * mask
        out = self.norm2(self.conv2(out))
        return torch.relu(out + self.shortcut(x)) * mask, lengths


class ResNet(nn.Module):
    """ResNet speaker encoder (ResNet-34 layout [3, 4, 6, 3] by default).

    Stages of `base_channels` × (1, 2, 4, 8) channels, strides (1, 2, 2, 2) on both frequency and
    time; the last stage's channels × remaining frequency bins are pooled (mean, std) over time,
    then linear to D and a BatchNorm without affine parameters (the embedding, centred per
    dimension against collapse). About 6.6 M parameters with 32 base channels, F = 80, D = 256.

    Args:
        feat_dim: F.
        embed_dim: D.
        base_channels: channels of the first stage (32: the "thin" ResNet).
        num_blocks: blocks per stage.
        centre_embeddings: at inference, centre the embedding on the training data's mean
            (True, BatchNorm's usual eval) or only scale it (False; see `EmbeddingNorm`).
    """

    def __init__(
        self,
        feat_dim: int = 80,
        embed_dim: int = 256,
        base_channels: int = 32,
        num_blocks: tuple[int, ...] | list[int] = (3, 4, 6, 3),
        centre_embeddings: bool = True,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.stem = nn.Sequential(
            nn.Conv2d(1, base_channels, 3, 1, padding=1, bias=False),
            nn.BatchNorm2d(base_channels),
            nn.ReLU(),
        )
        blocks = []
        in_channels = base_channels
        freq_bins = feat_dim
        for stage, count in enumerate(num_blocks):
            out_channels = base_channels * 2**stage
            stride = 1 if stage == 0 else 2
            for index in range(count):
                blocks.append(BasicBlock(in_channels, out_channels, stride if index == 0 else 1))
                in_channels = out_channels
            freq_bins = (freq_bins - 1) // stride + 1
        self.blocks = nn.ModuleList(blocks)
        self.pool = StatsPool()
        self.embedding = nn.Linear(2 * in_channels * freq_bins, embed_dim)
        self.embed_norm = EmbeddingNorm(embed_dim, centre=centre_embeddings)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Embed a batch.

        Args:
            feats: (B, T, F) features.
            lengths: (B,) valid frames per item, or None when none is padded.

        Returns:
            (B, D) embeddings (not L2-normalised).
        """
        lengths = full_lengths(feats, lengths, 1)
        x = feats.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T)
        x = self.stem(x * _time_mask(lengths, x.shape[3], x.dtype))
        x = x * _time_mask(lengths, x.shape[3], x.dtype)
        for block in self.blocks:
            x, lengths = block(x, lengths)
        x = x.flatten(1, 2)  # (B, C·F', T')
        pooled = self.pool(x, lengths_to_mask(lengths, x.shape[2]))
        if torch.jit.is_scripting():  # (TorchScript has no autocast: plain layers)
            return self.embed_norm(self.embedding(pooled))
        return embedding_head(self.embedding, self.embed_norm, pooled)
