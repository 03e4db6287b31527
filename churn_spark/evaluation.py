"""Evaluation of one training run: the deep model, the baselines and the blend on the same validation and test rows.

Every model is calibrated on validation and measured on test. Ranking metrics use the raw score and probability
metrics the calibrated one (see ``metrics``); the calibration quality reported for validation is cross-fitted, so
it can come out worse than no calibration; tiers are applied to the test snapshot to show their realised churn
rate. Only bounded, user-ordered samples of (label, scores) come to the driver. ``shipped`` names the model whose
probabilities the bundle will produce: the calibrated network, or the blend when it won on validation.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from .baselines import fit_baselines, predict_baseline
from .blend import Blend, LinearRFM, choose_blend
from .calibration import Calibrator, cross_fitted
from .config import Config
from .logs import step
from .metrics import best_f1_threshold, classification_report, paired_bootstrap
from .predict import score_frame
from .tiers import assign_tiers, realised_by_tier


def collect_scores(df: DataFrame, cap: int) -> pd.DataFrame:
    """Bounded, deterministic (user-ordered) sample of (label, scores) for metrics on the driver."""
    return df.orderBy("user_id").limit(cap).toPandas()


def evaluate_models(
    cfg: Config,
    splits: Dict[str, DataFrame],
    ref: str,
    channels: List[str],
    validation_scores: Optional[pd.DataFrame] = None,
) -> dict:
    """Deep model + baselines on validation and test: calibrated on validation, measured on test.

    ``validation_scores``: the network's validation rows already collected by the search (user_id, label,
    raw_probability), so the chosen trial is not scored on validation a second time."""
    t = cfg.training
    with step("baselines"):
        baselines = fit_baselines(
            splits["train"], channels, cfg.sequence.n_buckets, t, recent_buckets=cfg.recent_buckets
        )
    frames = {}
    for split in ("validation", "test"):
        known = validation_scores if split == "validation" else None
        df = None
        if known is None:
            df = score_frame(splits[split], ref, ["user_id", "label"]).select(
                "user_id", "label", F.col("raw_probability").alias("deep")
            )
        for name, m in baselines.items():
            b = predict_baseline(
                m, splits[split], channels, cfg.sequence.n_buckets, recent_buckets=cfg.recent_buckets
            ).select("user_id", "label", F.col("probability").alias(name))
            df = b if df is None else df.join(b.drop("label"), "user_id")
        frames[split] = collect_scores(df, t.max_eval_rows)
        if known is not None:  # the same users: both are the first max_eval_rows by user_id
            deep = known[["user_id", "raw_probability"]].rename(columns={"raw_probability": "deep"})
            merged = frames[split].merge(deep, on="user_id", validate="one_to_one")
            if len(merged) != len(frames[split]):
                raise RuntimeError("the search's validation scores are not the validation rows being evaluated")
            frames[split] = merged
    val, test = frames["validation"], frames["test"]
    yv, yt = val["label"].to_numpy(), test["label"].to_numpy()
    out: dict = {"models": {}, "validation": {}, "calibrators": {}}
    for name in ["deep", *baselines]:
        sv, st = val[name].to_numpy(), test[name].to_numpy()
        cal = Calibrator.fit(t.calibration, sv, yv)
        pv = cal(sv)
        thr = best_f1_threshold(yv, pv)
        out["models"][name] = classification_report(yt, cal(st), thr, score=st)
        out["validation"][name] = {
            "brier_raw": float(np.mean((sv - yv) ** 2)),
            "brier_calibrated_cv": float(
                np.mean((cross_fitted(t.calibration, sv, yv, t.calibration_folds, t.seed) - yv) ** 2)
            ),
            "threshold": thr,
        }
        out["calibrators"][name] = cal
        test[f"{name}_calibrated"] = cal(st)
    out["shipped"] = "deep"
    if t.blend:
        out.update(_blend(cfg, val, test, baselines[BASELINE], channels, out))
    for name, gain in gain_over_baseline(test, yt, [n for n in out["models"] if n != BASELINE], cfg).items():
        out["models"][name].update(gain)
    s, shipped = cfg.scoring, out["shipped"]
    test["shipped"], test["shipped_calibrated"] = test[shipped], test[f"{shipped}_calibrated"]
    tiers = assign_tiers(
        s.tier_mode, test["shipped"].to_numpy(), test["shipped_calibrated"].to_numpy(), s.tier_shares, s.tiers
    )
    out["tiers"] = {"mode": s.tier_mode, "test": realised_by_tier(tiers, yt, test["shipped_calibrated"].to_numpy())}
    out["test_scores"] = test
    return out


def _blend(cfg: Config, val: pd.DataFrame, test: pd.DataFrame, lr_model, channels: List[str], out: dict) -> dict:
    """The blend candidate (:mod:`churn_spark.blend`): chosen on validation only, measured on test like the rest;
    adds its test metrics and ``blend``/``blend_calibrated`` test columns (the blend is its own calibration)."""
    t = cfg.training
    yv, yt = val["label"].to_numpy(), test["label"].to_numpy()
    chosen, evidence, (intercept, weights) = choose_blend(
        val["deep"].to_numpy(),
        val[BASELINE].to_numpy(),
        yv,
        calibration=t.calibration,
        folds=t.calibration_folds,
        seed=t.seed,
    )
    blend = Blend(
        intercept, weights, LinearRFM.from_pipeline(lr_model, channels, cfg.sequence.n_buckets, cfg.recent_buckets)
    )
    pv = blend.combine(val["deep"].to_numpy(), val[BASELINE].to_numpy())
    pt = blend.combine(test["deep"].to_numpy(), test[BASELINE].to_numpy())
    thr = best_f1_threshold(yv, pv)
    out["models"]["blend"] = classification_report(yt, pt, thr, score=pt)
    out["validation"]["blend"] = {"brier_raw": float(np.mean((pv - yv) ** 2)), "threshold": thr, **evidence}
    test["blend"], test["blend_calibrated"] = pt, pt
    return {
        "shipped": "blend" if chosen else "deep",
        "blend": {"chosen": chosen, "intercept": intercept, "weights": weights, **evidence},
        "blend_model": blend,
    }


BASELINE = "lr_rfm"  # what a user would fit instead: a model is worth its cost only if it beats this one
GAIN_CONFIDENCE = 0.95


def gain_over_baseline(test: pd.DataFrame, y: np.ndarray, names: List[str], cfg: Config) -> Dict[str, dict]:
    """Per model: its test ROC-AUC minus ``lr_rfm``'s on the same rows (``roc_auc_gain_vs_lr_rfm``) with a paired
    bootstrap 95 % interval (``..._lo``, ``..._hi``), merged into that model's test metrics: an interval above 0
    says the model earns its cost on this data, one straddling 0 says the linear model would do as well."""
    base_p, base_s = test[f"{BASELINE}_calibrated"].to_numpy(), test[BASELINE].to_numpy()
    out: Dict[str, dict] = {}
    for name in names:
        gain, lo, hi = paired_bootstrap(
            "roc_auc",
            y,
            test[f"{name}_calibrated"].to_numpy(),
            test[name].to_numpy(),
            base_p,
            base_s,
            cfg.registry.gate_bootstrap,
            GAIN_CONFIDENCE,
            seed=cfg.training.seed,
        )
        key = f"roc_auc_gain_vs_{BASELINE}"
        out[name] = {key: gain, f"{key}_lo": lo, f"{key}_hi": hi}
    return out
