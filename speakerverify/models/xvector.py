"""The TDNN x-vector encoder of Snyder et al. 2018 with masked statistics pooling."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from speakerverify.models.embedding_norm import EmbeddingNorm, embedding_head
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


_STATS_PROJECTION_SEED = 20261129


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
        stats_dims: when not 0, the embedding also carries the pooled statistics themselves:
            -1 as they are (`2 * stats_channels` values), N > 0 through a fixed random
            projection to N values (a buffer drawn from its own seeded generator, so the rest of
            the initialisation is unchanged). The output is `[a / |a|, p / |p|] / sqrt(2)` with
            `a` the segment layer's embedding and `p` the statistics, so its cosine score is the
            average of the two parts' scores (a score fusion inside the embedding). A random
            projection keeps cosines only approximately (Johnson-Lindenstrauss: to about
            1 / sqrt(N)), which adds a second random draw to the scores; -1 keeps them exactly.
            With frozen random frame layers the statistics are generic spectral statistics; the
            trained part learns what separates voices across channels. 0 (the default) is the
            plain x-vector. D = `embed_dim` + the statistics' size.
    """

    def __init__(
        self,
        feat_dim: int = 80,
        embed_dim: int = 512,
        channels: int = 512,
        stats_channels: int = 1500,
        centre_embeddings: bool = True,
        stats_dims: int = 0,
    ) -> None:
        super().__init__()
        if stats_dims < -1:
            raise ValueError(
                f"stats_dims must be -1 (all), 0 (none) or a positive size, got {stats_dims}"
            )
        self.stats_dims = 2 * stats_channels if stats_dims == -1 else stats_dims
        self.embed_dim = embed_dim + self.stats_dims
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
        self.stats_projection: torch.Tensor | None
        projection = None
        if stats_dims > 0:
            generator = torch.Generator().manual_seed(_STATS_PROJECTION_SEED)
            projection = torch.randn(2 * stats_channels, stats_dims, generator=generator)
        self.register_buffer("stats_projection", projection)

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
        if torch.jit.is_scripting():  # (TorchScript has no autocast: plain layers)
            embedding = self.embed_norm(self.segment(pooled))
        else:
            embedding = embedding_head(self.segment, self.embed_norm, pooled)
        if not self.stats_dims:
            return embedding
        stats = pooled if self.stats_projection is None else pooled @ self.stats_projection
        parts = [embedding, stats]
        return torch.cat([F.normalize(part, dim=1) for part in parts], dim=1) * 0.5**0.5
