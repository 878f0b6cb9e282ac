"""The TDNN x-vector encoder of Snyder et al. 2018 with masked statistics pooling."""

from __future__ import annotations

import torch
from torch import nn

from speakerverify.models.embedding_norm import EmbeddingNorm
from speakerverify.models.pooling import StatsPool, full_lengths, lengths_to_mask


class TdnnLayer(nn.Module):
    """Unpadded dilated 1-D convolution, ReLU, BatchNorm (a Kaldi TDNN layer)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation)
        self.norm = nn.BatchNorm1d(out_channels)
        self.context = dilation * (kernel_size - 1)  # frames lost to the unpadded convolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(torch.relu(self.conv(x)))


class XVector(nn.Module):
    """x-vector TDNN: five frame layers, statistics pooling, one segment layer.

    Frame layers: 512 (context ±2), 512 (dilation 2, ±2), 512 (dilation 3, ±3), 512 (1×1),
    1500 (1×1), each ReLU + BatchNorm and unpadded, so an utterance of L frames yields L - 14
    frames and padding never reaches a valid frame. The segment layer is the affine layer whose
    output is the embedding ("a" in Kaldi), followed by a BatchNorm without affine parameters:
    embeddings are centred and scaled per dimension, which keeps triplet training from collapsing
    all embeddings onto one direction (at inference, `centre_embeddings=False` only scales them;
    see `EmbeddingNorm`). 4,354,964 parameters at F = 80, D = 512.

    Args:
        feat_dim: F, input feature dimension.
        embed_dim: D, embedding dimension.
        channels: width of the first four frame layers.
        stats_channels: width of the last frame layer (pooled).
        centre_embeddings: at inference, centre the embedding on the training data's mean
            (True, BatchNorm's usual eval) or only scale it (False; see `EmbeddingNorm`).
    """

    def __init__(
        self,
        feat_dim: int = 80,
        embed_dim: int = 512,
        channels: int = 512,
        stats_channels: int = 1500,
        centre_embeddings: bool = True,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.frame_layers = nn.ModuleList(
            [
                TdnnLayer(feat_dim, channels, kernel_size=5),
                TdnnLayer(channels, channels, kernel_size=3, dilation=2),
                TdnnLayer(channels, channels, kernel_size=3, dilation=3),
                TdnnLayer(channels, channels, kernel_size=1),
                TdnnLayer(channels, stats_channels, kernel_size=1),
            ]
        )
        self.context = sum(layer.context for layer in self.frame_layers)
        self.pool = StatsPool()
        self.segment = nn.Linear(2 * stats_channels, embed_dim)
        self.embed_norm = EmbeddingNorm(embed_dim, centre=centre_embeddings)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Embed a batch.

        Args:
            feats: (B, T, F) features, T >= 15 (the receptive field).
            lengths: (B,) valid frames per item, or None when none is padded.

        Returns:
            (B, D) embeddings (not L2-normalised).
        """
        if feats.shape[1] <= self.context:
            raise ValueError(
                f"x-vector needs more than {self.context} frames, got {feats.shape[1]}"
            )
        lengths = full_lengths(feats, lengths, 1)
        x = feats.transpose(1, 2)
        for layer in self.frame_layers:
            x = layer(x)
        # Items shorter than the receptive field still pool their first output frame.
        valid = (lengths - self.context).clamp_min(1)
        pooled = self.pool(x, lengths_to_mask(valid, x.shape[2]))
        return self.embed_norm(self.segment(pooled))
