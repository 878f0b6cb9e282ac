"""The experiment config file: one YAML with the sections of `speakerverify.config`, read into a
frozen `Config` and written, resolved, into the experiment dir.

Unknown sections and keys are errors that list the valid ones; `--set section.key=value`
overrides are applied before validation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from speakerverify.config import (
    AugmentConfig,
    ConfigError,
    DataConfig,
    FeaturesConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from speakerverify.files import check_input, write_atomic

__all__ = ["Config", "apply_overrides", "load_config", "save_config"]

_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "features": FeaturesConfig,
    "augment": AugmentConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
}


# Sections whose YAML keys are not just their fields: features spells FbankConfig's options
# flat, loss still reads the keys it had before issue 25.
_FROM_FLAT: tuple[type, ...] = (FeaturesConfig, LossConfig)


def _section_keys(section_cls: type) -> tuple[str, ...]:
    if section_cls in _FROM_FLAT:
        return section_cls.keys()  # type: ignore[attr-defined]
    return tuple(f.name for f in fields(section_cls))


def _build_section(section_cls: type, values: dict[str, Any]) -> Any:
    if section_cls in _FROM_FLAT:
        return section_cls.from_flat(values)  # type: ignore[attr-defined]
    return section_cls(**values)


def _section_dict(section: Any) -> dict[str, Any]:
    if isinstance(section, FeaturesConfig):
        return _plain(section.to_flat())
    return {f.name: _plain(getattr(section, f.name)) for f in fields(section)}


def _plain(value: Any) -> Any:
    if isinstance(value, MappingProxyType | dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Config:
    """A whole experiment; build with `load_config` or `Config.from_dict`."""

    data: DataConfig
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> Config:
        """Build and validate from nested plain dicts (unknown sections/keys -> ConfigError)."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
        unknown = sorted(set(raw) - set(_SECTIONS))
        if unknown:
            raise ConfigError(
                f"{source}: unknown sections {unknown}; valid: {', '.join(_SECTIONS)}"
            )
        sections = {}
        for name, section_cls in _SECTIONS.items():
            values = raw.get(name) or {}
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: section {name!r} must be a mapping")
            valid = _section_keys(section_cls)
            bad = sorted(set(values) - set(valid))
            if bad:
                raise ConfigError(
                    f"{source}: unknown keys in {name}: {bad}; valid: {', '.join(valid)}"
                )
            try:
                sections[name] = _build_section(section_cls, values)
            except ConfigError as err:
                raise ConfigError(f"{source}: {err}") from None
            except TypeError as err:  # e.g. a list where a number belongs
                raise ConfigError(f"{source}: section {name}: {err}") from None
        return cls(**sections)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dicts (YAML/JSON-able), the inverse of `from_dict`."""
        return {name: _section_dict(getattr(self, name)) for name in _SECTIONS}

    def replace(self, overrides: list[str]) -> Config:
        """A new config with `section.key=value` overrides applied (self is unchanged)."""
        return Config.from_dict(apply_overrides(self.to_dict(), overrides), "overrides")


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply `a.b=value` / `a.b.c=value` strings to nested dicts; values parsed as YAML scalars.

    >>> apply_overrides({"optim": {"lr": 0.1}}, ["optim.lr=0.01", "model.args.embed_dim=64"])
    {'optim': {'lr': 0.01}, 'model': {'args': {'embed_dim': 64}}}
    """
    raw = _plain(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise ConfigError(f"override {item!r}: expected section.key=value")
        if parts[0] not in _SECTIONS:
            raise ConfigError(
                f"override {item!r}: unknown section {parts[0]!r}; valid: {', '.join(_SECTIONS)}"
            )
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: bad value: {str(err).splitlines()[0]}") from None
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def load_config(
    path: str | os.PathLike,
    overrides: list[str] | tuple[str, ...] = (),
    defaults: dict[str, dict[str, Any]] | None = None,
) -> Config:
    """Read a YAML experiment config, apply `section.key=value` overrides, validate.

    Args:
        path: YAML file with the sections data, features, augment, model, loss, optim, train.
        overrides: e.g. `["optim.lr=0.01", "loss.args.margin=0.3"]`; values are parsed with
            `yaml.safe_load`, so `true`, `null`, `[1, 2]` and numbers have their YAML types.
        defaults: whole sections used where the file (and the overrides) leave a section out,
            e.g. the model and front-end of a checkpoint to fine-tune.

    Raises:
        ConfigError: unreadable YAML (with line number), unknown sections/keys/registry names
            (listing the valid ones) or invalid values; the message names the file.
    """
    path = Path(path)
    check_input(path)  # a FIFO would block read_text forever
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides)
    for section, values in (defaults or {}).items():
        raw.setdefault(section, _plain(values))
    return Config.from_dict(raw, str(path))


def save_config(config: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically (temp file in the same dir + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=False))
