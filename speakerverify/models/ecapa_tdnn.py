"""ECAPA-TDNN (Desplanques et al. 2020): SE-Res2Net blocks, multi-layer aggregation, attentive
statistics pooling. Padded frames are zeroed after every layer and excluded from every time
average, so a batch gives each utterance the embedding it gets alone.
"""

from __future__ import annotations

import torch
from torch import nn

from speakerverify.models.embedding_norm import EmbeddingNorm, embedding_head
from speakerverify.models.pooling import AttentiveStatsPool, full_lengths, lengths_to_mask


class TdnnBlock(nn.Module):
    """Same-padded dilated 1-D convolution, ReLU, BatchNorm, then zero the padded frames."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1):
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, dilation=dilation, padding=padding
        )
        self.norm = nn.BatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.norm(torch.relu(self.conv(x))) * mask


class Res2NetBlock(nn.Module):
    """Res2Net: channel groups, each convolved after adding the previous group's output."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, scale: int = 8):
        super().__init__()
        if channels % scale:
            raise ValueError(f"channels ({channels}) must be divisible by scale ({scale})")
        self.scale = scale
        width = channels // scale
        self.blocks = nn.ModuleList(
            [TdnnBlock(width, width, kernel_size, dilation) for _ in range(scale - 1)]
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        groups = torch.chunk(x, self.scale, dim=1)
        outputs = [groups[0]]
        previous = groups[0]
        for index, block in enumerate(self.blocks):
            group = groups[index + 1]
            previous = block(group if index == 0 else group + previous, mask)
            outputs.append(previous)
        return torch.cat(outputs, dim=1)


class SqueezeExcitation(nn.Module):
    """Channel gates from the (masked) time average."""

    def __init__(self, channels: int, bottleneck: int = 128):
        super().__init__()
        self.down = nn.Conv1d(channels, bottleneck, kernel_size=1)
        self.up = nn.Conv1d(bottleneck, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mean = (x * mask).sum(dim=2, keepdim=True) / mask.sum(dim=2, keepdim=True).clamp_min(1.0)
        gates = torch.sigmoid(self.up(torch.relu(self.down(mean))))
        return x * gates


class SeRes2Block(nn.Module):
    """1×1 TDNN, Res2Net dilated TDNN, 1×1 TDNN, squeeze-excitation, residual connection."""

    def __init__(
        self, channels: int, kernel_size: int, dilation: int, scale: int, se_channels: int
    ):
        super().__init__()
        self.first = TdnnBlock(channels, channels, kernel_size=1)
        self.res2net = Res2NetBlock(channels, kernel_size, dilation, scale)
        self.last = TdnnBlock(channels, channels, kernel_size=1)
        self.excitation = SqueezeExcitation(channels, se_channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.last(self.res2net(self.first(x, mask), mask), mask)
        return self.excitation(y, mask) + x


class EcapaTdnn(nn.Module):
    """ECAPA-TDNN speaker encoder.

    Layout: TDNN (k=5) → 3 SE-Res2Blocks (k=3, dilation 2, 3, 4) → concatenation of the block
    outputs → 1×1 TDNN (`aggregate_channels`) → attentive statistics pooling → BatchNorm →
    linear to D → BatchNorm without affine parameters (the embedding; centred per dimension
    against collapse under triplet training). About 6.2 M parameters at C = 512 and 14.7 M at
    C = 1024 (F = 80, D = 192).

    Args:
        feat_dim: F.
        embed_dim: D.
        channels: C, 512 or 1024 in the paper.
        aggregate_channels: width of the multi-layer feature aggregation (1536 in the paper).
        scale: Res2Net groups.
        se_channels: squeeze-excitation bottleneck.
        attention_channels: attentive pooling bottleneck.
        centre_embeddings: at inference, centre the embedding on the training data's mean
            (True, BatchNorm's usual eval) or only scale it (False; see `EmbeddingNorm`).
    """

    def __init__(
        self,
        feat_dim: int = 80,
        embed_dim: int = 192,
        channels: int = 512,
        aggregate_channels: int = 1536,
        scale: int = 8,
        se_channels: int = 128,
        attention_channels: int = 128,
        centre_embeddings: bool = True,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_block = TdnnBlock(feat_dim, channels, kernel_size=5)
        self.blocks = nn.ModuleList(
            [SeRes2Block(channels, 3, dilation, scale, se_channels) for dilation in (2, 3, 4)]
        )
        self.aggregate = TdnnBlock(3 * channels, aggregate_channels, kernel_size=1)
        self.pool = AttentiveStatsPool(aggregate_channels, attention_channels)
        self.pool_norm = nn.BatchNorm1d(2 * aggregate_channels)
        self.embedding = nn.Linear(2 * aggregate_channels, embed_dim)
        self.embed_norm = EmbeddingNorm(embed_dim, centre=centre_embeddings)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Embed a batch.

        Args:
            feats: (B, T, F) features.
            lengths: (B,) valid frames per item, or None when none is padded.

        Returns:
            (B, D) embeddings (not L2-normalised).
        """
        frame_mask = lengths_to_mask(full_lengths(feats, lengths, 1), feats.shape[1])
        mask = frame_mask.unsqueeze(1).to(feats.dtype)
        x = self.input_block(feats.transpose(1, 2) * mask, mask)
        outputs = []
        for block in self.blocks:
            x = block(x, mask)
            outputs.append(x)
        x = self.aggregate(torch.cat(outputs, dim=1), mask)
        pooled = self.pool_norm(self.pool(x, frame_mask))
        if torch.jit.is_scripting():  # (TorchScript has no autocast: plain layers)
            return self.embed_norm(self.embedding(pooled))
        return embedding_head(self.embedding, self.embed_norm, pooled)
