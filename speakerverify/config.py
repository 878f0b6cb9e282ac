"""Experiment config sections: data/features/augment/model/loss/optim/train as frozen dataclasses.

Each section validates itself; unknown registry names are errors that list the valid ones.
`speakerverify.training.experiment_config` reads the YAML file (with `--set section.key=value`
overrides) into one `Config` of these sections.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from speakerverify.errors import SpeakerVerifyError
from speakerverify.frontend.fbank_config import FbankConfig

__all__ = [
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "FeaturesConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "check_kwargs",
]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("cosine", "exponential", "constant")
DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("none", "bf16", "fp16")
SMALL_SPEAKERS = ("replace", "exclude")


class ConfigError(SpeakerVerifyError, ValueError):
    """A config file, section, key, value or override is invalid (one-line message)."""


def _choice(section: str, name: str, value: Any, valid: tuple[str, ...] | list[str]) -> None:
    if value not in valid:
        raise ConfigError(f"{section}.{name}: unknown value {value!r}; valid: {', '.join(valid)}")


def _positive(section: str, name: str, value: float, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{section}.{name}: must be a number, got {value!r}")
    if not math.isfinite(value):  # a NaN passed every comparison below
        raise ConfigError(f"{section}.{name}: must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{section}.{name}: must be {bound}, got {value!r}")


def _frozen_dict(value: Any, where: str) -> MappingProxyType:
    if value is None:
        value = {}
    if not isinstance(value, dict | MappingProxyType):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return MappingProxyType(dict(value))


@dataclass(frozen=True)
class DataConfig:
    """Training data and the P×K batch shape.

    Attributes:
        train_dir: Kaldi-style data dir (`wav.scp`, `utt2spk`) with the training utterances.
        valid_trials: optional trial list for per-epoch validation EER/minDCF.
        valid_dir: data dir holding the trial utterances (required with `valid_trials`).
        chunk_seconds: crop length of every training example.
        num_speakers: P, speakers per batch (per rank under DDP).
        num_utts: K, utterances per speaker in a batch (>= 2, so positives exist).
        small_speakers: speakers with fewer than K utterances: "replace" or "exclude".
        num_workers: DataLoader worker processes (0 = load in the training process).
        speed_perturb: add 0.9/1.1 speed-perturbed copies as new speakers.
        musan_index: MUSAN index from `speakerverify prepare musan` (noise/music/babble), or None.
        rir_index: RIR index from `speakerverify prepare rirs`, or None.
        valid_max_seconds: longest validation audio embedded at once (longer files are cut).
        group_by: speaker attributes (`spk2<name>` files of `train_dir`, e.g. ["lang",
            "gender"]) whose combinations group the speakers: each step is then drawn in blocks
            of `group_size` speakers of one group, so every batch holds impostors of the
            anchor's own language and gender for batch-hard mining (`sampler.PKSampler`).
            Empty (the default): speakers are drawn uniformly.
        group_size: speakers per block of one group (must divide `num_speakers`).
    """

    train_dir: str = ""
    valid_trials: str | None = None
    valid_dir: str | None = None
    chunk_seconds: float = 2.0
    num_speakers: int = 32
    num_utts: int = 2
    small_speakers: str = "replace"
    num_workers: int = 2
    speed_perturb: bool = False
    musan_index: str | None = None
    rir_index: str | None = None
    valid_max_seconds: float = 20.0
    group_by: tuple[str, ...] = ()
    group_size: int = 4

    def __post_init__(self) -> None:
        if not self.train_dir:
            raise ConfigError("data.train_dir: required (a data dir with wav.scp and utt2spk)")
        if self.valid_trials and not self.valid_dir:
            raise ConfigError("data.valid_dir: required when data.valid_trials is set")
        _positive("data", "chunk_seconds", self.chunk_seconds)
        _positive("data", "valid_max_seconds", self.valid_max_seconds)
        _positive("data", "num_speakers", self.num_speakers)
        if self.num_utts < 2:
            raise ConfigError(f"data.num_utts: must be >= 2 (K), got {self.num_utts!r}")
        _positive("data", "num_workers", self.num_workers, allow_zero=True)
        _choice("data", "small_speakers", self.small_speakers, SMALL_SPEAKERS)
        group_by = [self.group_by] if isinstance(self.group_by, str) else self.group_by
        if not isinstance(group_by, list | tuple) or not all(
            isinstance(name, str) and name.isidentifier() for name in group_by
        ):
            raise ConfigError(
                f"data.group_by: expected a list of attribute names, got {self.group_by!r}"
            )
        object.__setattr__(self, "group_by", tuple(group_by))
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int):
            raise ConfigError(f"data.group_size: must be an integer, got {self.group_size!r}")
        if group_by and (self.group_size < 2 or self.num_speakers % self.group_size):
            raise ConfigError(
                f"data.group_size: must be >= 2 and divide data.num_speakers="
                f"{self.num_speakers}, got {self.group_size}"
            )


_FBANK_KEYS: tuple[str, ...] = tuple(f.name for f in fields(FbankConfig))


@dataclass(frozen=True)
class FeaturesConfig:
    """The log-mel front-end (`fbank`, a `FbankConfig`) plus SpecAugment.

    In YAML the `FbankConfig` options sit directly in the `features` section next to
    `spec_augment` and `spec_augment_args` (`from_flat` / `to_flat`); every `FbankConfig` option
    is a valid key, so a new front-end option needs no change here. `spec_augment_args` are
    keyword arguments of `speakerverify.frontend.features.SpecAugment`, checked against its
    signature when training starts.
    """

    fbank: FbankConfig = field(default_factory=FbankConfig)
    spec_augment: bool = False
    spec_augment_args: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        args = _frozen_dict(self.spec_augment_args, "features.spec_augment_args")
        object.__setattr__(self, "spec_augment_args", args)

    @staticmethod
    def keys() -> tuple[str, ...]:
        """The valid keys of the YAML section."""
        return (*_FBANK_KEYS, "spec_augment", "spec_augment_args")

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> FeaturesConfig:
        """Build from the flat YAML section (unknown keys are the caller's check)."""
        fbank = {k: v for k, v in values.items() if k in _FBANK_KEYS}
        for name in ("sample_rate", "num_mel_bins", "frame_length_ms", "frame_shift_ms"):
            if name in fbank:
                _positive("features", name, fbank[name])
        if "dither" in fbank:
            _positive("features", "dither", fbank["dither"], allow_zero=True)
        try:
            fbank_config = FbankConfig(**fbank)
        except ValueError as err:
            raise ConfigError(f"features: {err}") from None
        rest = {k: v for k, v in values.items() if k not in _FBANK_KEYS}
        return cls(fbank=fbank_config, **rest)

    def to_flat(self) -> dict[str, Any]:
        """The flat YAML section (the inverse of `from_flat`)."""
        return {
            **self.fbank.to_dict(),
            "spec_augment": self.spec_augment,
            "spec_augment_args": dict(self.spec_augment_args),
        }

    def fbank_dict(self) -> dict[str, Any]:
        """The `FbankConfig` options only (what checkpoints store as the front-end config)."""
        return self.fbank.to_dict()


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly augmentation: MUSAN/RIRs when `data.musan_index` or `data.rir_index` is set,
    and a simulated recording channel per crop when `channel` is true (no download needed).

    `args` are extra keyword arguments of `speakerverify.data.augment.Augmenter` (SNR ranges,
    ...), `channel_args` of `speakerverify.data.simulate.ChannelSimulator` (stage
    probabilities and ranges, and `room`: "simple", the default, or "shoebox" for image-source
    rooms from pyroomacoustics, `pip install 'speakerverify[rooms]'`); both are checked against
    their signatures, and the channel's values, when training starts.
    """

    aug_prob: float = 0.6
    args: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    channel: bool = False
    channel_args: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not 0.0 <= self.aug_prob <= 1.0:
            raise ConfigError(f"augment.aug_prob: must be in [0, 1], got {self.aug_prob!r}")
        object.__setattr__(self, "args", _frozen_dict(self.args, "augment.args"))
        args = _frozen_dict(self.channel_args, "augment.channel_args")
        object.__setattr__(self, "channel_args", args)


def _model_names() -> list[str]:
    from speakerverify.models import MODELS

    return sorted(MODELS)


@dataclass(frozen=True)
class ModelConfig:
    """An encoder from the `speakerverify.models.MODELS` registry and its constructor arguments.

    `feat_dim` defaults to the front-end's (`features.num_ceps` when set, else
    `features.num_mel_bins`) when not given in `args`.
    """

    name: str = "xvector"
    args: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        _choice("model", "name", self.name, _model_names())
        args = _frozen_dict(self.args, "model.args")
        from speakerverify.models import MODELS

        check_kwargs(f"model.args ({self.name})", MODELS[self.name], args)
        object.__setattr__(self, "args", args)


def check_kwargs(where: str, target: Any, args: dict | MappingProxyType) -> None:
    """Reject keyword arguments that `target` (a class or function) does not accept.

    Raises:
        ConfigError: naming `where`, the unknown keys and the valid ones.
    """
    params = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n, p in params.items() if n != "self" and p.kind is not p.VAR_POSITIONAL]
    unknown = sorted(set(args) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; valid: {', '.join(valid)}")


def _loss_classes() -> dict[str, Any]:
    """The loss classes by name, each declaring its contract (`has_margin`, `mines`)."""
    from speakerverify.losses import LOSSES

    return dict(LOSSES)


def _takers(losses: dict[str, Any], flag: str) -> list[str]:
    """The names of the losses whose class declares `flag` (`has_margin` or `mines`)."""
    return sorted(name for name, cls in losses.items() if getattr(cls, flag))


# Before issue 25 the loss section spelled the triplet loss's arguments at its top level. They
# still load and mean what they meant: each is `args.<key>`; `margin` for any loss, the others
# for a loss that mines. A loss that does not mine refuses the miner options and ignores the
# rest (every config saved then carried them, with the triplet loss's defaults).
_LEGACY_ARGS: tuple[str, ...] = (
    "margin",
    "mining",
    "distance",
    "soft_margin",
    "reduction",
    "gather_distributed",
    "semi_hard_fallback",
    "num_hardest",
    "hard_probability",
)
_LEGACY_MINER_OPTIONS: tuple[str, ...] = ("semi_hard_fallback", "num_hardest", "hard_probability")


@dataclass(frozen=True)
class LossConfig:
    """The training loss: a `speakerverify.losses.LOSSES` name, the keyword arguments of its
    class, and the schedules of what its forward takes per call.

    The loss class checks its own arguments (a `ValueError` names the argument first, e.g.
    `margin: must be >= 0`; the message becomes `loss.margin: ...`); the class's contract says
    which schedules apply: a margin schedule to a loss that `has_margin`, a mining schedule to
    one that `mines` (`speakerverify.training.schedules` runs both).

    Attributes:
        name: registry name, "triplet" by default.
        args: keyword arguments of the loss class (e.g. triplet's `margin`, `mining`,
            `distance`, `num_hardest`; see the class). `margin` and `mining` are also what
            training uses once their warm-ups are over; without them, the class's defaults.
        margin_start: margin schedule: the margin at the first step, rising linearly (per step)
            to `args.margin` over `margin_warmup_epochs` epochs.
        margin_warmup_epochs: the length of that rise (> 0 with `margin_start`).
        mining_warmup: mining schedule: the strategy of the first `mining_warmup_epochs`
            epochs (e.g. semi_hard before batch_hard), then `args.mining`. A loss that does not
            mine ignores it (so a recipe's loss can be swapped with `--set loss.name=...`).
        mining_warmup_epochs: the length of that warm-up.

    In YAML, the keys of the section before issue 25 (`margin`, `mining`, `distance`,
    `num_hardest`, ... beside `name`) still load as `args` (`from_flat`).
    """

    name: str = "triplet"
    args: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    margin_start: float | None = None
    margin_warmup_epochs: float = 0.0
    mining_warmup: str | None = None
    mining_warmup_epochs: int = 0

    def __post_init__(self) -> None:
        losses = _loss_classes()
        _choice("loss", "name", self.name, sorted(losses))
        loss_class = losses[self.name]
        args = _frozen_dict(self.args, "loss.args")
        object.__setattr__(self, "args", args)
        _positive("loss", "margin_warmup_epochs", self.margin_warmup_epochs, allow_zero=True)
        _positive("loss", "mining_warmup_epochs", self.mining_warmup_epochs, allow_zero=True)
        margins = {"margin": args.get("margin"), "margin_start": self.margin_start}
        for key, value in margins.items():
            if value is not None and not loss_class.has_margin:
                raise ConfigError(
                    f"loss.{key}: loss {self.name!r} has no margin; losses with one: "
                    f"{', '.join(_takers(losses, 'has_margin'))}"
                )
        if self.margin_start is not None:
            _positive("loss", "margin_start", self.margin_start, allow_zero=True)
            if self.margin_warmup_epochs <= 0:
                raise ConfigError("loss.margin_warmup_epochs: must be > 0 when margin_start is set")
            if args.get("margin") is None:
                raise ConfigError(
                    "loss.margin: required when margin_start is set (the margin it rises to)"
                )
        if self.mining_warmup is not None and loss_class.mines:
            from speakerverify.losses import STRATEGIES

            _choice("loss", "mining_warmup", self.mining_warmup, STRATEGIES)
        check_kwargs(f"loss.args ({self.name})", loss_class, args)
        _check_loss_args(self.name, args)

    @staticmethod
    def keys() -> tuple[str, ...]:
        """The valid keys of the YAML section (the fields and the older spellings of `args`)."""
        return (*(f.name for f in fields(LossConfig)), *_LEGACY_ARGS)

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> LossConfig:
        """Build from the YAML section, where the older keys (`_LEGACY_ARGS`) load as `args`.

        Raises:
            ConfigError: a key given both ways, or a miner option for a loss that does not mine.
        """
        values = dict(values)
        legacy = {key: values.pop(key) for key in _LEGACY_ARGS if key in values}
        legacy = {key: value for key, value in legacy.items() if value is not None}
        if legacy:
            name = values.get("name", cls.name)
            values["args"] = _merge_legacy_args(name, legacy, values.get("args"))
        return cls(**values)


def _merge_legacy_args(name: Any, legacy: dict[str, Any], args: Any) -> Any:
    """`args` with the older top-level keys of the section added (see `_LEGACY_ARGS`)."""
    losses = _loss_classes()
    if name not in losses:
        return args  # the unknown name is LossConfig's error
    merged = dict(_frozen_dict(args, "loss.args"))
    for key, value in legacy.items():
        if key != "margin" and not losses[name].mines:
            if key in _LEGACY_MINER_OPTIONS:
                mining = " or ".join(_takers(losses, "mines"))
                raise ConfigError(f"loss.{key}: only the {mining} loss mines, not {name!r}")
            continue
        if key in merged and merged[key] != value:
            raise ConfigError(f"loss: give {key} as loss.{key} or loss.args.{key}, not both")
        merged[key] = value
    return merged


def _check_loss_args(name: str, args: MappingProxyType) -> None:
    """Let the loss class check its arguments' values: build it once."""
    from speakerverify.losses import build_loss

    try:
        build_loss(name, **args)
    except ValueError as err:  # the class's own check, naming the argument first
        argument = str(err).partition(":")[0]
        where = "loss." if argument in args else f"loss.args ({name}): "
        raise ConfigError(f"{where}{err}") from None


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and learning-rate schedule (per step: linear warm-up, then decay to `final_lr`).

    Give the warm-up as `warmup_epochs` (may be fractional) or `warmup_steps`, not both.
    `grad_clip` is the max global gradient norm over everything the optimizer steps (the
    encoder's unfrozen parameters and the loss's own), 0 = no clipping.
    """

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    warmup_epochs: float = 0.0
    warmup_steps: int = 0
    scheduler: str = "cosine"
    final_lr: float = 1e-5
    grad_clip: float = 5.0

    def __post_init__(self) -> None:
        _choice("optim", "name", self.name, OPTIMIZERS)
        _choice("optim", "scheduler", self.scheduler, SCHEDULERS)
        _positive("optim", "lr", self.lr)
        _positive("optim", "final_lr", self.final_lr)
        _positive("optim", "weight_decay", self.weight_decay, allow_zero=True)
        _positive("optim", "warmup_epochs", self.warmup_epochs, allow_zero=True)
        _positive("optim", "warmup_steps", self.warmup_steps, allow_zero=True)
        _positive("optim", "grad_clip", self.grad_clip, allow_zero=True)
        if self.warmup_epochs and self.warmup_steps:
            raise ConfigError("optim: give warmup_epochs or warmup_steps, not both")


@dataclass(frozen=True)
class TrainConfig:
    """The run itself.

    Attributes:
        epochs: passes over the sampler (its length sets steps per epoch).
        seed: seeds model init, sampler and every RNG; CPU runs are deterministic.
        device: "auto" (CUDA when available), "cpu" or "cuda".
        amp: mixed precision on CUDA ("bf16" or "fp16"); ignored on CPU.
        log_every: steps between `train_log.jsonl` records.
        keep_last: end-of-epoch checkpoints kept (plus `best.pt`).
        num_threads: torch intra-op threads (0 = leave torch's default).
        max_steps: stop (with a checkpoint) after this many optimizer steps in total; the schedules
            still follow `epochs`, so a run can be continued with `--resume`.
        tensorboard: also write TensorBoard events when `tensorboard` is installed.
        freeze: encoder parameter name prefixes not trained (e.g. the x-vector's
            `[frame_layers.0, frame_layers.1]` when fine-tuning with `--init`); a prefix naming
            no parameter is an error.
        compile: run the encoder through `torch.compile` (GPU runs; the first steps pay for
            the compilation).
    """

    epochs: int = 10
    seed: int = 0
    device: str = "auto"
    amp: str = "none"
    log_every: int = 20
    keep_last: int = 3
    num_threads: int = 0
    max_steps: int | None = None
    tensorboard: bool = True
    freeze: tuple[str, ...] = ()
    compile: bool = False

    def __post_init__(self) -> None:
        _positive("train", "epochs", self.epochs)
        if not isinstance(self.compile, bool):
            raise ConfigError(f"train.compile: expected true or false, got {self.compile!r}")
        freeze = [self.freeze] if isinstance(self.freeze, str) else self.freeze
        if not isinstance(freeze, list | tuple) or not all(isinstance(p, str) for p in freeze):
            raise ConfigError(f"train.freeze: expected a list of names, got {self.freeze!r}")
        object.__setattr__(self, "freeze", tuple(freeze))
        _choice("train", "device", self.device, DEVICES)
        _choice("train", "amp", self.amp, AMP_MODES)
        _positive("train", "log_every", self.log_every)
        _positive("train", "keep_last", self.keep_last)
        _positive("train", "num_threads", self.num_threads, allow_zero=True)
        if self.max_steps is not None:
            _positive("train", "max_steps", self.max_steps)
