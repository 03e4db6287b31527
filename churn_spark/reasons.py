"""Reason codes: short, true statements about a user that say why the model put them at risk.

Two separate steps, so the part that decides what is *true* can be unit-tested without TensorFlow:

1. :func:`group_attributions` (TensorFlow) — gradient x input of the churn logit w.r.t. the standardised inputs,
   summed per *group*: for each channel a "recent" group (the last R buckets) and an "earlier" group (the buckets
   before), and one group per numeric static feature. R comes from one definition,
   :func:`feature_spec.recent_buckets` with the bundle's ``recent_days`` (``sequence.recent_days`` at training).
   One-hot profile columns are left out: against an all-zero baseline they say nothing actionable.
2. :func:`codes_from` (numpy only) — for the groups that *raised* the churn logit (score > 0), strongest first,
   states what the user's own raw feature row shows in that group, or nothing when it shows no clear difference.

Why the wording can be trusted: the attribution only chooses *which* groups are reported and in which order; the
word in the code (down/up, low/high, bad_review) is decided from the user's raw data alone, compared with a relative
tolerance, so every code is a true statement about the row. Because only groups that pushed the logit up are used,
every code reads "this (true) fact about the user raised their churn risk". A group whose data shows no difference
beyond the tolerance (e.g. equal or all-zero activity) gets no code, and the next group is tried. The README's
reason-code table documents every code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
import pandas as pd

from .config import ScoringConf
from .feature_spec import NUMERIC_STATIC, recent_buckets
from .metrics import PROB_EPS
from .preprocess import FeatureStats, raw_matrix

RATING, REVIEWS = "rating_mean", "reviews"
Group = Tuple[str, str]  # (kind, name): ("recent" | "earlier", channel) or ("static", feature)


_SCORING = ScoringConf.model_fields  # the defaults live in the config, once


@dataclass(frozen=True)
class ReasonSettings:
    """How many codes per user, and the thresholds that make a code true (``scoring.*`` in the config)."""

    top: int = _SCORING["reason_count"].default
    tolerance: float = _SCORING["reason_tolerance"].default  # relative: rates within it are "unchanged"
    bad_review_rating: float = _SCORING["bad_review_rating"].default  # a mean rating at or below it is a bad review

    @classmethod
    def from_config(cls, scoring) -> "ReasonSettings":
        return cls(
            top=scoring.reason_count, tolerance=scoring.reason_tolerance, bad_review_rating=scoring.bad_review_rating
        )


# ---- groups ------------------------------------------------------------------------------------------------
def recent_window(stats: FeatureStats) -> int:
    """R, the number of recent buckets: the same definition the baselines get from the config."""
    return recent_buckets(stats.n_buckets, stats.bucket_days, stats.recent_days)


def window_label(stats: FeatureStats) -> str:
    """``last_4w`` when the recent window is a whole number of weeks, else ``last_{days}d``."""
    days = recent_window(stats) * stats.bucket_days
    return f"last_{days // 7}w" if days % 7 == 0 else f"last_{days}d"


def group_names(stats: FeatureStats) -> List[Group]:
    """Group order shared by :func:`group_scores` and :func:`codes_from`; no "earlier" groups when there are no
    earlier buckets (T = 1)."""
    has_earlier = stats.n_buckets > recent_window(stats)
    names: List[Group] = []
    for ch in stats.channels:
        names += [("recent", ch)] + ([("earlier", ch)] if has_earlier else [])
    return names + [("static", f) for f in NUMERIC_STATIC]


def group_scores(a_seq: np.ndarray, a_static: np.ndarray, stats: FeatureStats) -> np.ndarray:
    """Per-input attributions (n,T,C) and (n,S) -> per-group scores (n,G) in :func:`group_names` order."""
    T, R = stats.n_buckets, recent_window(stats)
    cols = []
    for kind, name in group_names(stats):
        if kind == "static":
            cols.append(a_static[:, NUMERIC_STATIC.index(name)])
        else:
            c = stats.channels.index(name)
            cols.append(a_seq[:, T - R :, c].sum(axis=1) if kind == "recent" else a_seq[:, : T - R, c].sum(axis=1))
    return np.stack(cols, axis=1).astype(np.float64) if cols else np.zeros((len(a_seq), 0))


def group_attributions(b, inputs: Dict[str, np.ndarray]) -> np.ndarray:
    """Gradient x input of the churn logit for a bundle's model, summed per group: (n,G)."""
    import tensorflow as tf

    seq = tf.convert_to_tensor(inputs["sequence"])
    st = tf.convert_to_tensor(inputs["static"])
    with tf.GradientTape() as tape:
        tape.watch([seq, st])
        given = {**{k: tf.convert_to_tensor(v) for k, v in inputs.items()}, "sequence": seq, "static": st}
        p = tf.clip_by_value(b.model(given, training=False), PROB_EPS, 1 - PROB_EPS)
        logit = tf.math.log(p / (1 - p))
    g_seq, g_st = tape.gradient(logit, [seq, st])
    return group_scores((g_seq * seq).numpy(), (g_st * st).numpy(), b.stats)


# ---- true statements ---------------------------------------------------------------------------------------
def _direction(num_a, den_a, num_b, den_b, tol: float) -> np.ndarray:
    """-1 where a = num_a/den_a is below b = num_b/den_b by more than ``tol`` (relative to b), +1 where above,
    0 within the tolerance. Cross-multiplied (denominators > 0) so exact inputs compare exactly at the boundary."""
    a, b = np.asarray(num_a, np.float64) * den_b, np.asarray(num_b, np.float64) * den_a
    return np.where(a < b * (1 - tol), -1, np.where(a > b * (1 + tol), 1, 0))


def _pick(direction: np.ndarray, low: str, high: str, ok=True) -> np.ndarray:
    """The code for each user ('' = no true statement): ``low`` where -1, ``high`` where +1, only where ``ok``."""
    return np.where(ok & (direction < 0), low, np.where(ok & (direction > 0), high, ""))


def _group_codes(
    kind: str, name: str, seq: np.ndarray, static: np.ndarray, stats: FeatureStats, s: ReasonSettings, win: str
) -> np.ndarray:
    """The one true code (or '') per user for one group, from the raw row only. ``seq`` is (n,T,C), >= 0."""
    T, R, tol = stats.n_buckets, recent_window(stats), s.tolerance
    n = len(seq)
    if kind == "static":
        j = NUMERIC_STATIC.index(name)
        typical = np.expm1(stats.static_mean[j])  # the model sees standardised log1p: its centre, back in units
        return _pick(_direction(static[:, j], 1.0, typical, 1.0, tol), f"{name}_low", f"{name}_high")
    c = stats.channels.index(name)
    recent, earlier = seq[:, T - R :, c], seq[:, : T - R, c]
    if name == RATING:  # mean rating over reviewed buckets, weighted by the number of reviews
        if REVIEWS not in stats.channels:
            return np.full(n, "")
        r = stats.channels.index(REVIEWS)
        w_recent, w_earlier = seq[:, T - R :, r], seq[:, : T - R, r]
        rn, rd = (recent * w_recent).sum(axis=1), w_recent.sum(axis=1)
        en, ed = (earlier * w_earlier).sum(axis=1), w_earlier.sum(axis=1)
        if kind == "earlier":
            return np.where((ed > 0) & (en <= s.bad_review_rating * ed), f"bad_review_before_{win}", "")
        bad = (rd > 0) & (rn <= s.bad_review_rating * rd)
        both = (rd > 0) & (ed > 0)
        moved = _pick(_direction(rn, rd, en, ed, tol), f"{RATING}_down_{win}", f"{RATING}_up_{win}", both)
        return np.where(bad, "bad_review", moved)
    if kind == "earlier":  # the user's mean bucket (= per-day rate x B) vs the training population's typical bucket
        typical = np.expm1(stats.seq_mean[c])
        return _pick(
            _direction(earlier.sum(axis=1), T - R, typical, 1.0, tol),
            f"{name}_low_before_{win}",
            f"{name}_high_before_{win}",
        )
    if T == R:  # one bucket only: nothing to compare the recent rate with
        return np.full(n, "")
    # per-day rates: sum / (R*B) vs sum / ((T-R)*B); B cancels
    return _pick(
        _direction(recent.sum(axis=1), R, earlier.sum(axis=1), T - R, tol), f"{name}_down_{win}", f"{name}_up_{win}"
    )


def codes_from(
    scores: np.ndarray,
    groups: List[Group],
    raw_sequences: np.ndarray,
    raw_static: np.ndarray,
    stats: FeatureStats,
    settings: ReasonSettings,
) -> List[List[str]]:
    """Up to ``settings.top`` codes per user, for groups with score > 0 in decreasing score order.

    ``scores`` (n,G) per group in ``groups`` order; ``raw_sequences`` (n, T*C) raw bucket values (time-major);
    ``raw_static`` (n, len(NUMERIC_STATIC)) raw numeric static values. A group whose data shows no difference beyond
    the tolerance is skipped (the next group is tried). Every code is distinct (each group has its own codes).
    """
    n = len(scores)
    if n == 0:
        return []
    seq = np.maximum(np.nan_to_num(np.asarray(raw_sequences, np.float64)), 0.0)
    seq = seq.reshape(n, stats.n_buckets, len(stats.channels))
    static = np.maximum(np.nan_to_num(np.asarray(raw_static, np.float64)), 0.0).reshape(n, len(NUMERIC_STATIC))
    win = window_label(stats)
    codes = np.stack([_group_codes(k, g, seq, static, stats, settings, win) for k, g in groups], axis=1)
    scores = np.asarray(scores, np.float64)
    usable = (scores > 0) & (codes != "")
    order = np.argsort(-np.where(usable, scores, -np.inf), axis=1, kind="stable")[:, : settings.top]
    return [[str(codes[i, g]) for g in order[i] if usable[i, g]] for i in range(n)]


def reason_codes(b, pdf: pd.DataFrame, inputs: Dict[str, np.ndarray], settings: ReasonSettings) -> List[List[str]]:
    """Codes for one batch of feature rows (``inputs`` = ``b.stats.inputs(pdf)``, already computed for scoring)."""
    if len(pdf) == 0:
        return []
    raw_seq = raw_matrix(pdf["sequence"], b.stats.n_buckets * len(b.stats.channels))
    raw_static = pdf[NUMERIC_STATIC].to_numpy(dtype=np.float64, na_value=0.0)
    return codes_from(group_attributions(b, inputs), group_names(b.stats), raw_seq, raw_static, b.stats, settings)
