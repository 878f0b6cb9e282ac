"""Building the pieces of a training run from a Config (model, front-end, data, loss, optimizer)
and the loader of an epoch's batches (from any batch on, for exact resume).

`speakerverify.training.loop` runs the pieces; this module never imports it.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from speakerverify.config import ConfigError, check_kwargs
from speakerverify.data import CropDataset, DataDir, PKSampler, collate_crops
from speakerverify.data.attributes import read_speaker_groups
from speakerverify.data.augment import Augmenter
from speakerverify.data.datadir import DataDirError
from speakerverify.frontend.features import Fbank, SpecAugment
from speakerverify.losses import LOSSES, build_loss
from speakerverify.models import build_model
from speakerverify.training.distributed import DistEnv
from speakerverify.training.experiment_config import Config
from speakerverify.training.schedules import LrSchedule, warmup_steps_of

__all__ = [
    "Parts",
    "build_loader",
    "build_loss_fn",
    "build_parts",
]

logger = logging.getLogger(__name__)


@dataclass
class Parts:
    """Everything a run needs, built once by `build_parts`."""

    model: nn.Module  # the encoder, DDP-wrapped under torchrun
    model_args: dict[str, Any]  # its constructor arguments (what checkpoints record)
    frontend: nn.Module
    spec_augment: nn.Module | None
    dataset: CropDataset
    sampler: PKSampler
    loss: nn.Module  # the training loss; its own parameters (if any) train with the encoder's
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    env: DistEnv
    amp_dtype: torch.dtype | None = None

    def trained_parameters(self) -> list[nn.Parameter]:
        """Every parameter the optimizer steps: the encoder's unfrozen ones, then the loss's."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    @property
    def encoder(self) -> nn.Module:
        """The encoder itself (without the `torch.compile` and DDP wrappers)."""
        model = getattr(self.model, "_orig_mod", self.model)  # torch.compile's wrapper
        if isinstance(model, nn.parallel.DistributedDataParallel):
            return model.module
        return model


# Called with one record per log line (rank 0 only), and asked after every step whether to stop.
LogFn = Callable[[dict[str, Any]], None]
StopFn = Callable[[], bool]


def build_model_args(config: Config) -> dict[str, Any]:
    """Constructor arguments of the encoder; `feat_dim` follows the front-end's `feat_dim`
    (`num_ceps` when set, else `num_mel_bins`)."""
    return {"feat_dim": config.features.fbank.feat_dim, **dict(config.model.args)}


def build_parts(config: Config, env: DistEnv, init: str | os.PathLike | None = None) -> Parts:
    """Seed, then build encoder (DDP-wrapped when distributed), front-end, SpecAugment, dataset,
    P×K sampler (sharded by rank), loss, optimizer, LR scheduler and grad scaler.

    The optimizer steps the encoder's parameters and the loss's own (e.g. the scale and bias of
    the angular prototypical loss). With `init`, the encoder starts from that checkpoint's
    weights (fine-tuning); parameters named by `train.freeze` are left out of the optimizer
    (before DDP wraps the encoder).
    """
    device = env.device
    torch.manual_seed(config.train.seed)  # identical initial weights on every rank
    model_args = build_model_args(config)
    encoder = _build_encoder(config, model_args, device, init)
    frontend = Fbank(config.features.fbank).to(device)
    spec_augment = _build_spec_augment(config, device)
    dataset = CropDataset(
        DataDir.load(config.data.train_dir),
        chunk_seconds=config.data.chunk_seconds,
        sample_rate=config.features.fbank.sample_rate,
        augmenter=_build_augmenter(config),
        speed_perturb=config.data.speed_perturb,
    )
    sampler = _build_sampler(dataset, config, env)
    # Built under the shared seed, so a loss with randomly initialised parameters starts equal on
    # every rank; outside DDP's wrapper, so `_train_step` averages its gradients itself.
    loss = build_loss_fn(config, env, dataset.speaker_of_label)
    model: torch.nn.Module = encoder
    if env.distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(encoder, device_ids=device_ids)
    if device.type == "cuda":
        # every training crop has the same shape: let cuDNN time its kernels once and keep the
        # fastest (validation's varied lengths pay a search per new shape)
        torch.backends.cudnn.benchmark = True
    if config.train.compile:
        model = torch.compile(model)  # DDP inside: its bucketing hooks survive compilation
    trained = [p for p in model.parameters() if p.requires_grad]
    trained += [p for p in loss.parameters() if p.requires_grad]
    optimizer = build_optimizer(config, trained)
    scheduler = _build_scheduler(config, optimizer, len(sampler))
    amp_dtype = _amp_dtype(config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    # Per-rank randomness (SpecAugment, dither) after the shared initialisation.
    torch.manual_seed(config.train.seed + 1_000_003 * env.rank + 1)
    return Parts(
        model=model,
        model_args=model_args,
        frontend=frontend,
        spec_augment=spec_augment,
        dataset=dataset,
        sampler=sampler,
        loss=loss,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        env=env,
        amp_dtype=amp_dtype,
    )


def _build_encoder(
    config: Config,
    model_args: dict[str, Any],
    device: torch.device,
    init: str | os.PathLike | None,
) -> nn.Module:
    """The encoder on `device`, from `init`'s weights if given, with `train.freeze` applied."""
    encoder = build_model(config.model.name, **model_args).to(device)
    if init is not None:
        from speakerverify.training.finetune import load_init_weights

        load_init_weights(
            encoder, init, config.model.name, model_args, config.features.fbank_dict()
        )
        logger.info("initialised the encoder from %s", init)
    if config.train.freeze:
        from speakerverify.training.finetune import freeze_parameters

        frozen = freeze_parameters(encoder, config.train.freeze)
        logger.info("froze %d parameter tensors (%s)", frozen, ", ".join(config.train.freeze))
    return encoder


def _build_spec_augment(config: Config, device: torch.device) -> nn.Module | None:
    """SpecAugment from `features.spec_augment_args`, or None when it is off."""
    if not config.features.spec_augment:
        return None
    args = dict(config.features.spec_augment_args)
    check_kwargs("features.spec_augment_args", SpecAugment, args)
    return SpecAugment(**args).to(device)


def _build_augmenter(config: Config) -> Augmenter | None:
    """MUSAN/RIR and channel augmentation of the crops, or None when none is configured."""
    data = config.data
    if not (data.musan_index or data.rir_index or config.augment.channel):
        logger.info("no musan_index/rir_index/augment.channel configured: no augmentation")
        return None
    from speakerverify.data.simulate import ChannelSimulator

    channel = None
    if config.augment.channel:
        channel_args = dict(config.augment.channel_args)
        check_kwargs("augment.channel_args", ChannelSimulator, channel_args)
        try:
            channel = ChannelSimulator(**channel_args)
        except ValueError as error:  # a probability, range or room name out of bounds
            raise ConfigError(f"augment.channel_args: {error}") from None
    extra = dict(config.augment.args)
    check_kwargs("augment.args", Augmenter, extra)
    return Augmenter(
        musan_index=data.musan_index,
        rir_index=data.rir_index,
        aug_prob=config.augment.aug_prob,
        sample_rate=config.features.fbank.sample_rate,
        channel=channel,
        **extra,
    )


def _build_sampler(dataset: CropDataset, config: Config, env: DistEnv) -> PKSampler:
    """The P×K sampler of this rank (in blocks of one speaker group with `data.group_by`); too
    few speakers (or groups) for one step, or a missing attribute file, is a ConfigError."""
    data = config.data
    groups = None
    if data.group_by:
        base = dataset.speakers[: len(dataset.speakers) // len(dataset.factors)]
        try:
            by_speaker = read_speaker_groups(data.train_dir, base, data.group_by)
        except DataDirError as error:
            raise ConfigError(f"data.group_by: {error}") from None
        # a speed copy ("sp0.9-<spk>") is in its speaker's group
        groups = [by_speaker[int(base_label)] for base_label in dataset.speaker_of_label]
    try:
        return PKSampler(
            dataset.labels,
            num_speakers=data.num_speakers,
            num_utts=data.num_utts,
            seed=config.train.seed,
            rank=env.rank,
            world_size=env.world_size,
            small_speakers=data.small_speakers,
            speaker_groups=groups,
            group_size=data.group_size,
        )
    except ValueError as error:  # too few speakers (or groups) for one P×K step across the ranks
        raise ConfigError(f"data: {data.train_dir}: {error}") from None


def _build_scheduler(
    config: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step warm-up and decay over all `train.epochs` (see `schedules.LrSchedule`)."""
    schedule = LrSchedule(
        config.train.epochs * steps_per_epoch,
        warmup_steps_of(config.optim, steps_per_epoch),
        config.optim.scheduler,
        config.optim.final_lr / config.optim.lr,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def _amp_dtype(config: Config, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `train.amp` on CUDA; None on CPU (where it is ignored) or when off."""
    if device.type == "cuda" and config.train.amp != "none":
        return torch.bfloat16 if config.train.amp == "bf16" else torch.float16
    if config.train.amp != "none":
        logger.info("train.amp=%s ignored on %s", config.train.amp, device)
    return None


def build_optimizer(config: Config, params: Any) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD (Nesterov momentum) from `config.optim`."""
    optim = config.optim
    if optim.name == "adam":
        return torch.optim.Adam(params, lr=optim.lr, weight_decay=optim.weight_decay)
    if optim.name == "adamw":
        return torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    return torch.optim.SGD(
        params, lr=optim.lr, momentum=optim.momentum, nesterov=True, weight_decay=optim.weight_decay
    )


def build_loss_fn(config: Config, env: DistEnv, speaker_of_label: Any = None) -> nn.Module:
    """The training loss of `config.loss` (its class built with `args`), on the device.

    The schedules pass a loss's margin and mining strategy per call
    (`schedules.loss_arguments`); `args` holds the values after the warm-ups, also the
    defaults of a call. For a loss that mines, `speaker_of_label` (the dataset's,
    (num_classes,)) keeps a speaker's speed-perturbed copies out of its negatives, and
    `gather_distributed` only applies under DDP.
    """
    loss = config.loss
    args = dict(loss.args)
    if LOSSES[loss.name].mines:
        args["gather_distributed"] = bool(args.get("gather_distributed")) and env.distributed
        if speaker_of_label is not None:
            args["speaker_of_label"] = torch.as_tensor(speaker_of_label)
    try:
        return build_loss(loss.name, **args).to(env.device)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"loss: {err}") from None


class BatchesFrom:
    """The batches of a sampler's current epoch from batch `start` on (exact resume); `start` is
    set before each epoch, so one DataLoader (and its persistent workers) serves every epoch."""

    def __init__(self, sampler: Any, start: int) -> None:
        self.sampler = sampler
        self.start = start

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.start)

    def __iter__(self) -> Iterator[Any]:
        if hasattr(self.sampler, "iter_from"):
            return iter(self.sampler.iter_from(self.start))
        iterator = iter(self.sampler)
        for _ in range(self.start):
            next(iterator)
        return iterator


def build_loader(dataset: Any, sampler: Any, start: int, config: Config, env: DistEnv) -> Any:
    """A DataLoader over the P×K batches of the sampler's current epoch, skipping the first
    `start`; for a later epoch set `loader.batch_sampler.start` and iterate it again.

    Workers are persistent (started once per run, not once per epoch); items carry their own
    seeds (`CropDataset`), so a batch does not depend on which worker makes it.
    """
    workers = config.data.num_workers
    # A private generator: creating a loader iterator would otherwise draw from the global torch
    # RNG (worker base seed), shifting SpecAugment/dither randomness after a resume.
    generator = torch.Generator().manual_seed(config.train.seed * 100_003 + sampler.epoch)
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=BatchesFrom(sampler, start),
        collate_fn=collate_crops,
        num_workers=workers,
        pin_memory=env.device.type == "cuda",
        prefetch_factor=4 if workers else None,
        persistent_workers=workers > 0,
        generator=generator,
        worker_init_fn=_ignore_sigint if workers else None,
    )


def _ignore_sigint(worker_id: int) -> None:
    """Ctrl-C reaches the whole process group; workers leave it to the main process, which saves
    a checkpoint at the next step (defensive: workers that quit on SIGINT could fail a fetch that
    is still in flight)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
