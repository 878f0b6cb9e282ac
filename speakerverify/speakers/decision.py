"""The decision rule of the speaker commands: a calibration at a stated operating point
(`p_target`) or an explicit threshold on the raw cosine score, never a constant in the code.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speakerverify.backend.calibration import default_calibration_path
from speakerverify.backend.speaker_model import SpeakerModel, VerificationError
from speakerverify.speakers.records import DomainMean


def bayes_llr_threshold(p_target: float) -> float:
    """LLR above which accepting minimises the expected cost with equal costs: −logit(p_target).

    >>> bayes_llr_threshold(0.5), round(bayes_llr_threshold(0.01), 3)
    (0.0, 4.595)
    """
    return math.log((1.0 - p_target) / p_target)


@dataclass(frozen=True)
class DecisionRule:
    """How a score becomes accept/reject, and where that came from.

    Attributes:
        source: "calibration" (LLR against the Bayes threshold at `p_target`) or "threshold"
            (the user's `--threshold` on the raw cosine score).
        threshold: The threshold on `scale`.
        scale: "llr" or "score".
        p_target: Prior of a target trial for the calibration rule (else None).
        calibration: The loaded `calibration.Calibration` (also reports LLRs under "threshold").
        calibration_path: Where it was loaded from.
        score_threshold: The raw score at which the decision flips.
    """

    source: str
    threshold: float
    scale: str
    p_target: float | None = None
    calibration: Any = None
    calibration_path: str | None = None
    score_threshold: float | None = None

    def llr(self, scores: np.ndarray) -> np.ndarray | None:
        """Calibrated log-likelihood ratios `(N,)`, or None without a calibration."""
        if self.calibration is None:
            return None
        return np.asarray(self.calibration.apply(np.asarray(scores, dtype=np.float64)), float)

    def accept(self, scores: np.ndarray) -> np.ndarray:
        """Boolean decisions `(N,)` for raw scores `(N,)`."""
        scores = np.asarray(scores, dtype=np.float64)
        values = self.llr(scores) if self.scale == "llr" else scores
        return np.asarray(values >= self.threshold)

    def describe(self) -> str:
        """One line saying where the threshold came from."""
        if self.source == "calibration":
            text = (
                f"calibration {self.calibration_path} at p_target={self.p_target:g}: accept when "
                f"LLR >= {self.threshold:.3f} (Bayes threshold, equal miss/false-alarm costs)"
            )
            if self.score_threshold is not None:
                text += f", i.e. score >= {self.score_threshold:.4f}"
            return text
        return f"--threshold: accept when cosine score >= {self.threshold:.4f} (no calibration)"

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "value": self.threshold,
            "scale": self.scale,
            "p_target": self.p_target,
            "calibration": self.calibration_path,
            "score_threshold": self.score_threshold,
            "description": self.describe(),
        }


def resolve_decision_rule(
    model: SpeakerModel,
    *,
    threshold: float | None = None,
    calibration_path: str | os.PathLike | None = None,
    p_target: float = 0.5,
) -> DecisionRule:
    """Pick the decision rule: explicit `threshold` first, else the model's calibration.

    The calibration is `calibration_path` or, when None, the default file next to the checkpoint
    (if present); it must have been fitted for this model's fingerprint.

    Raises:
        VerificationError: bad `p_target`, unreadable or foreign calibration, or neither a
            calibration nor a threshold.
    """
    if not 0.0 < p_target < 1.0:
        raise VerificationError(f"--p-target must be in (0, 1), got {p_target}")
    if threshold is not None and not math.isfinite(threshold):
        raise VerificationError(f"--threshold must be a finite number, got {threshold}")
    explicit = calibration_path is not None
    path = Path(calibration_path) if explicit else default_calibration_path(model.path)
    calibration = None
    if explicit or path.is_file():
        try:
            calibration = _load_calibration(path, model.fingerprint)
        except VerificationError:
            if explicit or threshold is None:
                raise  # with --threshold, an unusable sibling calibration only reports no LLR
    if threshold is not None:
        return DecisionRule(
            "threshold",
            float(threshold),
            "score",
            calibration=calibration,
            calibration_path=None if calibration is None else str(path),
            score_threshold=float(threshold),
        )
    if calibration is None:
        raise VerificationError(
            f"{model.path}: no decision threshold: the model has no calibration ({path} not "
            "found); pass --calibration FILE (from `speakerverify calibrate`) or --threshold SCORE"
        )
    llr_threshold = bayes_llr_threshold(p_target)
    try:
        score_threshold = float(calibration.score_threshold(p_target))
    except (ValueError, ZeroDivisionError, AttributeError):
        score_threshold = None
    return DecisionRule(
        "calibration",
        llr_threshold,
        "llr",
        p_target=p_target,
        calibration=calibration,
        calibration_path=str(path),
        score_threshold=score_threshold,
    )


def _load_calibration(path: Path, fingerprint: str) -> Any:
    if path.is_dir():
        raise VerificationError(f"{path}: is a directory, not a calibration file")
    if not path.is_file():
        raise VerificationError(f"{path}: calibration file not found")
    from speakerverify.backend.calibration import Calibration

    try:
        calibration = Calibration.load(path)
    except Exception as error:  # any parse failure: a bad file
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        if str(path) in cause:
            raise VerificationError(cause) from None
        raise VerificationError(f"{path}: not a usable calibration ({cause})") from None
    bound = getattr(calibration, "model_fingerprint", "") or ""
    if bound and bound != fingerprint:
        raise VerificationError(
            f"{path}: calibration was fitted for model {bound}, but the model is {fingerprint}"
        )
    norm = getattr(calibration, "norm", "none") or "none"
    if norm != "none":
        raise VerificationError(
            f"{path}: calibration was fitted on {norm}-normalised scores, but verify scores plain "
            "cosine; calibrate without score normalisation or pass --threshold"
        )
    return calibration


def centring_caveat(rule: DecisionRule, domain: DomainMean | None) -> list[str]:
    if domain is None or rule.calibration is None:
        return []
    return [
        f"{rule.calibration_path}: the calibration was not fitted on scores centred on this "
        "domain mean, so its LLRs are approximate; re-calibrate on in-domain trials if you can"
    ]
