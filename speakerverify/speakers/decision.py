"""The decision rule of the speaker commands, never a constant in the code: a calibration at a
stated operating point (`p_target`; by default the one stored with the calibration), an explicit
threshold on the cosine score, or, in a store that `adapt` prepared, the adapted rule (S-Norm
against the store's in-domain cohort, `speakerverify.speakers.domain`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from speakerverify.backend.calibration import CalibrationError, default_calibration_path
from speakerverify.backend.speaker_model import SpeakerModel, VerificationError
from speakerverify.errors import SpeakerVerifyError
from speakerverify.speakers.domain import domain_scores, snorm_threshold, whitening_json
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
        source: "calibration" (LLR against the Bayes threshold at `p_target`), "threshold" (the
            user's `--threshold` on the cosine score) or "adapted" (S-Norm against the store's
            in-domain cohort, saved by `adapt`).
        threshold: The threshold on `scale`.
        scale: "llr", "score" or "snorm".
        p_target: Prior of a target trial for the calibration rule (else None).
        calibration: The loaded `calibration.Calibration` (also reports LLRs under "threshold").
        calibration_path: Where it was loaded from.
        score_threshold: The raw score at which the decision flips (None under "snorm").
        default: Chosen with no --threshold, --calibration or --p-target: a store's adapted
            rule replaces it (`for_domain`).
        domain: The adaptation whose cohort and threshold the "adapted" rule uses.
        operating_point: How the calibration's default `p_target` was chosen, if it has one.
        comparisons: For open-set identification (`for_identification`): the number of
            enrolled speakers the test is compared with, over which the rule's false-accept
            rate is shared (None: one comparison, as in `verify`).
        per_comparison: The false-accept rate each of those comparisons was held to.
    """

    source: str
    threshold: float
    scale: str
    p_target: float | None = None
    calibration: Any = None
    calibration_path: str | None = None
    score_threshold: float | None = None
    default: bool = False
    domain: DomainMean | None = None
    operating_point: str = ""
    comparisons: int | None = None
    per_comparison: float | None = None

    def llr(self, scores: np.ndarray) -> np.ndarray | None:
        """Calibrated log-likelihood ratios `(N,)`, or None without a calibration."""
        if self.calibration is None:
            return None
        return np.asarray(self.calibration.apply(np.asarray(scores, dtype=np.float64)), float)

    def accept(self, scores: np.ndarray) -> np.ndarray:
        """Boolean decisions `(N,)` for cosine scores `(N,)` (not for the "snorm" scale, whose
        values need the embeddings: `score_against`)."""
        if self.scale == "snorm":
            raise ValueError("the adapted rule decides on embeddings: use score_against")
        scores = np.asarray(scores, dtype=np.float64)
        values = self.llr(scores) if self.scale == "llr" else scores
        return np.asarray(values >= self.threshold)

    def for_domain(self, domain: DomainMean | None) -> DecisionRule:
        """The rule for scores centred on `domain`: a default rule gives way to the adapted one
        when `adapt` saved one; any other rule stays."""
        if self.source == "adapted" or not self.default or domain is None or not domain.has_rule:
            return self
        return adapted_rule(domain)

    def for_identification(self, enrolled: int) -> DecisionRule:
        """The rule for open-set identification against `enrolled` speakers.

        A stranger is falsely identified when any of the `enrolled` comparisons accepts, so a
        rule that accepts a share `rate` of single impostor trials answers a stranger with a
        name up to `enrolled * rate` of the time (the union bound; NIST's false-positive
        identification rate grows the same way). The default rule therefore holds each
        comparison to `rate / enrolled`: the whole search keeps the false-accept rate that
        `verify` keeps for one claim. The threshold comes from the calibration's non-target
        tail (a calibration made with `--false-accept`) or, for the adapted rule, from the
        normal quantile of S-norm. The calibration's own operating point is shared, whether
        it is the model's calibration or one given with --calibration; an explicit
        --threshold or --p-target decides as asked, and so does a calibration without a tail.
        """
        if enrolled <= 1:
            return self
        if self.source == "adapted":
            rate = self.domain.false_accept / enrolled
            threshold = snorm_threshold(rate)
            return replace(self, threshold=threshold, comparisons=enrolled, per_comparison=rate)
        calibration = self.calibration
        base = getattr(calibration, "default_false_accept", None)
        if not self.operating_point or base is None or not calibration.nontarget_tail:
            return self  # not the calibration's own operating point, or no tail to read
        score, rate = calibration.score_at_false_accept(base / enrolled)
        p_target = calibration.p_target_at_score(score)
        return replace(
            self,
            threshold=bayes_llr_threshold(p_target),
            p_target=p_target,
            score_threshold=score,
            comparisons=enrolled,
            per_comparison=rate,
        )

    def describe(self) -> str:
        """One line saying where the threshold came from."""
        if self.source == "adapted":
            domain = self.domain
            how = f"S-norm against {domain.cohort_size} in-domain files"
            if domain.whitened:
                sizes = " + ".join(str(len(fold.cohort)) for fold in domain.folds)
                how = (
                    f"whitened in two halves of {sizes} in-domain files (each half's "
                    "shrunk covariance whitens the other, its S-norm cohort), the two "
                    "folds' S-norm averaged"
                )
            return (
                f"adapted: {how} (top {domain.top_k}); accept when >= {self.threshold:.3f} "
                "(nominal "
                f"{100 * domain.false_accept:g} % false accepts{self._open_set_words()})"
            )
        if self.source == "calibration":
            point = f"p_target={self.p_target:.4g}"
            if self.comparisons:
                rate = self.calibration.default_false_accept
                point = (
                    f"its default operating point, {100 * rate:g} % false accepts"
                    f"{self._open_set_words()}; {point}"
                )
            elif self.operating_point:
                point += ", its default operating point"
            text = f"calibration ({point}): accept when LLR >= {self.threshold:.3f}"
            if self.score_threshold is not None:
                text += f", i.e. score >= {self.score_threshold:.4f}"
            return text
        return f"--threshold: accept when cosine score >= {self.threshold:.4f} (no calibration)"

    def _open_set_words(self) -> str:
        if not self.comparisons:
            return ""
        return (
            f" over the whole search of {self.comparisons} enrolled speakers, "
            f"{100 * self.per_comparison:.3g} % each"
        )

    def to_json(self) -> dict:
        document = {
            "source": self.source,
            "value": self.threshold,
            "scale": self.scale,
            "p_target": self.p_target,
            "calibration": self.calibration_path,
            "score_threshold": self.score_threshold,
            "description": self.describe(),
        }
        if self.operating_point:
            document["operating_point"] = self.operating_point
        if self.comparisons:
            document["open_set"] = {
                "enrolled": self.comparisons,
                "per_comparison_false_accept": self.per_comparison,
            }
        if self.source == "adapted":
            document["adapted"] = {
                "cohort_size": self.domain.cohort_size,
                "top_k": self.domain.top_k,
                "false_accept": self.domain.false_accept,
                "adaptation_pairs_above": self.domain.pairs_above,
                "whitening": whitening_json(self.domain),
            }
        return document


def adapted_rule(domain: DomainMean) -> DecisionRule:
    """The rule `adapt` saved with `domain`: S-Norm against its cohort, at its threshold."""
    return DecisionRule("adapted", float(domain.threshold), "snorm", default=True, domain=domain)


@dataclass(frozen=True)
class Scored:
    """Enrolled embeddings scored against one test embedding, and the decisions.

    Attributes:
        rule: The rule that decided (after `DecisionRule.for_domain`).
        scores: `(N,)` cosine scores (of centred embeddings when a domain is set; centred and
            whitened, averaged over the two folds, when `adapt` whitened).
        values: `(N,)` what the threshold applies to (LLR, score or S-norm).
        llrs: `(N,)` calibrated LLRs, or None without a calibration.
        accepted: `(N,)` bool.
    """

    rule: DecisionRule
    scores: np.ndarray
    values: np.ndarray
    llrs: np.ndarray | None
    accepted: np.ndarray


def score_against(
    rule: DecisionRule, domain: DomainMean | None, enroll: np.ndarray, test: np.ndarray
) -> Scored:
    """Score enrolled embeddings `(N, D)` against one test embedding `(D,)` and decide.

    Embeddings are centred on the domain mean when `adapt` saved one (and whitened when it
    whitened: `domain.domain_scores`); a default rule then gives way to the adapted rule
    (S-Norm against the domain's cohort).
    """
    rule = rule.for_domain(domain)
    scores, snorm = domain_scores(domain, enroll, test)
    llrs = rule.llr(scores)
    values = {"snorm": snorm, "llr": llrs}.get(rule.scale, scores)
    return Scored(rule, scores, values, llrs, np.asarray(values >= rule.threshold))


def resolve_decision_rule(
    model: SpeakerModel,
    *,
    threshold: float | None = None,
    calibration_path: str | os.PathLike | None = None,
    p_target: float | None = None,
    domain: Callable[[], DomainMean | None] | None = None,
) -> DecisionRule:
    """Pick the decision rule: explicit `threshold` first, else the model's calibration at
    `p_target` (None: the calibration's default operating point, else 0.5).

    The calibration is `calibration_path` or, when None, the default file next to the checkpoint
    (if present); it must have been fitted for this model's fingerprint. A rule chosen with none
    of the three options is `default`: a store's adapted rule replaces it when scores are
    computed (`score_against`), and a model without a calibration can decide only with one:
    `domain` reads the store's adaptation, and is called only then (a foreign calibration is
    reported before the store is opened).

    Raises:
        VerificationError: bad `p_target`, unreadable or foreign calibration, or neither a
            calibration nor a threshold.
    """
    if p_target is not None and not 0.0 < p_target < 1.0:
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
        saved = None if domain is None or p_target is not None else domain()
        if saved is not None and saved.has_rule:
            return adapted_rule(saved)  # a store that `adapt` prepared needs no calibration
        raise VerificationError(
            f"{model.path}: no decision threshold: the model has no calibration ({path} not "
            "found); pass --calibration FILE (from `speakerverify calibrate`) or --threshold "
            "SCORE, or run `speakerverify adapt` on the store"
        )
    operating_point = ""
    chosen = p_target
    if chosen is None:
        chosen = getattr(calibration, "default_p_target", None)
        operating_point = (getattr(calibration, "operating_point", "") or "") if chosen else ""
        chosen = chosen or 0.5
    llr_threshold = bayes_llr_threshold(chosen)
    try:
        score_threshold = float(calibration.score_threshold(chosen))
    except CalibrationError:  # Calibration.score_threshold: it cannot be inverted at this prior
        score_threshold = None
    return DecisionRule(
        "calibration",
        llr_threshold,
        "llr",
        p_target=chosen,
        calibration=calibration,
        calibration_path=str(path),
        score_threshold=score_threshold,
        default=not explicit and p_target is None,
        operating_point=operating_point,
    )


def _load_calibration(path: Path, fingerprint: str) -> Any:
    if path.is_dir():
        raise VerificationError(f"{path}: is a directory, not a calibration file")
    if not path.is_file():
        raise VerificationError(f"{path}: calibration file not found")
    from speakerverify.backend.calibration import load_calibration

    try:
        calibration = load_calibration(
            path,
            fingerprint,
            "none",
            model_source="the checkpoint",
            norm_source="verify's score normalisation",
        )
    # load_calibration's own CalibrationError and files.check_input's OutputError (both
    # SpeakerVerifyError), and OSError from reading the file: a bad file. Anything else is a bug.
    except (SpeakerVerifyError, OSError) as error:
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        if str(path) in cause:
            raise VerificationError(cause) from None
        raise VerificationError(f"{path}: not a usable calibration ({cause})") from None
    return calibration


def centring_caveat(rule: DecisionRule, domain: DomainMean | None) -> list[str]:
    """A warning when a calibration decides on scores centred on a domain it was not fitted on."""
    if domain is None or rule.calibration is None:
        return []
    return [
        f"{rule.calibration_path}: the calibration was not fitted on scores centred on this "
        "domain mean, so its LLRs are approximate; re-calibrate on in-domain trials if you can"
    ]


def open_set_caveat(rule: DecisionRule, names: list[str]) -> list[str]:
    """A warning when identify's default rule could not be made stricter with the number of
    enrolled speakers: its calibration keeps no non-target tail."""
    if not rule.operating_point or rule.comparisons or len(names) <= 1:
        return []
    return [
        f"{rule.calibration_path}: the calibration keeps no non-target score tail, so each of "
        f"the {len(names)} comparisons is held to verify's single-claim operating point and "
        "strangers are named more often; re-run `speakerverify calibrate --false-accept RATE`"
    ]
