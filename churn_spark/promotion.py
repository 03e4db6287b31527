"""Validation and promotion, a step of its own (champion/challenger, in the style of MLOps templates).

Training registers every new version with the ``challenger`` alias and never touches ``champion``. This step
(``validate``; ``churn-spark validate``; between train and score in ``weekly``) re-scores challenger and champion on
the same test rows and asks whether the challenger is better by more than noise: a paired bootstrap over those rows
gives an interval for the improvement on ``registry.gate_metric`` (oriented so that positive = challenger better),
and the challenger is promoted only when the interval's lower bound clears the declared threshold
(``gate_margin`` absolute, ``gate_min_relative_change`` relative to the champion). ``registry.validation_mode``:
``enabled`` moves ``champion``, ``dry_run`` records the verdict only, ``disabled`` skips the comparison. The verdict
goes into the version's description and tags, the MLflow run and the run's metrics.json.

A champion trained on another feature contract (channels, buckets, statics) cannot be applied to today's rows: it is
"not comparable", and the challenger is promoted with that reason recorded, or refused when
``registry.incompatible_champion: refuse``.
"""

from __future__ import annotations

import datetime as dt
from typing import Optional

import pandas as pd
from pyspark.sql import DataFrame

from . import registry, storage
from .bundle import local_copy, verify_bundle
from .config import Config
from .evaluation import collect_scores
from .feature_spec import contract_differences
from .metrics import classification_report, paired_bootstrap
from .predict import score_frame, ship_model
from .preprocess import FeatureStats
from .run_metrics import read_metrics, shipped_metrics, write_metrics

NUMERIC_NOISE = 1e-9  # the same model scored in other Arrow batches differs by float rounding, not by skill


def bundle_contract(model_dir: str) -> dict:
    """The feature contract a bundle was trained on, read from its verified ``stats.json`` (no model load; a remote
    bundle is read from its verified local copy, so the checked bytes are the ones used)."""
    stats = storage.read_text(storage.join(local_copy(model_dir), "stats.json"))
    return FeatureStats.from_json(stats).contract()


def gate(spark, cfg: Config, candidate: pd.DataFrame, test_df: DataFrame, table_contract: dict) -> dict:
    """Decide promotion against the champion (no alias is moved here). ``candidate`` holds user_id, label, deep (raw
    score) and deep_calibrated of the test rows."""
    r = cfg.registry
    metric = r.gate_metric
    decision = {
        "metric": metric,
        "margin": r.gate_margin,
        "confidence": r.gate_confidence,
        "champion_version": None,
        "champion": None,
        "champion_metrics": None,
        "comparable": None,
        "interval": None,
        "improvement": None,
        "promoted": True,
    }
    champ = registry.champion(cfg)
    if champ is None:
        decision["reason"] = "no champion yet"
        return decision
    champ_dir, version = registry.download_version(cfg, champ.version)
    decision["champion_version"] = version
    diffs = contract_differences(bundle_contract(champ_dir), table_contract)
    if diffs:
        refuse = r.incompatible_champion == "refuse"
        decision.update(
            comparable=False,
            promoted=not refuse,
            reason=(
                "champion not comparable (trained on other features: "
                + "; ".join(diffs)
                + ")"
                + ("; refused by registry.incompatible_champion=refuse" if refuse else "; candidate promoted")
            ),
        )
        return decision
    ref = ship_model(spark, champ_dir, cfg.path("tmp", "ship"))
    champ_rows = collect_scores(score_frame(test_df, ref, ["user_id", "label"]), cfg.training.max_eval_rows)
    both = candidate.merge(champ_rows[["user_id", "raw_probability", "churn_probability"]], on="user_id")
    y = both["label"].to_numpy()
    thr = float(verify_bundle(champ_dir)["info"].get("threshold", 0.5))  # the manifest holds it: no model load
    champ_metrics = classification_report(
        y, both["churn_probability"].to_numpy(), thr, score=both["raw_probability"].to_numpy()
    )
    observed, lo, hi = paired_bootstrap(
        metric,
        y,
        both["deep_calibrated"],
        both["deep"],
        both["churn_probability"],
        both["raw_probability"],
        r.gate_bootstrap,
        r.gate_confidence,
        seed=cfg.training.seed,
    )
    required = r.gate_margin  # a relative requirement, when configured, can only raise it
    if r.gate_min_relative_change > 0:
        required = max(required, r.gate_min_relative_change * abs(champ_metrics[metric]))
    better = lo > required + NUMERIC_NOISE
    decision.update(
        champion=champ_metrics[metric],
        champion_metrics=champ_metrics,
        comparable=True,
        improvement=observed,
        interval=[lo, hi],
        required=required,
        promoted=bool(better),
        rows=int(len(both)),
        reason=(
            f"improvement {observed:+.4f} on {metric}, {r.gate_confidence:.0%} interval "
            f"[{lo:+.4f}, {hi:+.4f}]: lower bound "
            + ("clears" if better else "does not clear")
            + f" the required {required:.4f}"
        ),
    )
    return decision


def _challenger_scores(spark, cfg: Config, version: str, test_df: DataFrame) -> pd.DataFrame:
    """The challenger's raw and calibrated scores on the test rows, through the same scorer as scoring."""
    model_dir, _ = registry.download_version(cfg, version)
    ref = ship_model(spark, model_dir, cfg.path("tmp", "ship"))
    rows = collect_scores(score_frame(test_df, ref, ["user_id", "label"]), cfg.training.max_eval_rows)
    return rows.rename(columns={"raw_probability": "deep", "churn_probability": "deep_calibrated"})


def validate(spark, cfg: Config, run_date: Optional[dt.date] = None, version: Optional[str] = None) -> dict:
    """The validation step: challenger (default: the ``challenger`` alias) vs champion; moves ``champion`` only in
    ``enabled`` mode. Returns the verdict (also written to the model version, its MLflow run and metrics.json)."""
    from .sequences import table_contract
    from .train import load_splits

    mode = cfg.registry.validation_mode
    mv = registry.model_version(cfg, version) if version else registry.alias(cfg, registry.CHALLENGER)
    if mv is None:
        raise registry.ModelIntegrityError(f"no challenger version of '{cfg.registry.model_name}': train first")
    run_date = run_date or dt.date.fromisoformat(mv.tags["run_date"])
    fv = int(mv.tags["features_version"])
    if mode == "disabled":
        verdict = {"mode": mode, "promoted": False, "reason": "validation disabled (registry.validation_mode)"}
    else:
        test_df = load_splits(spark, cfg, run_date, fv)["test"]
        contract = table_contract(spark, cfg.features_path, fv) or cfg.feature_contract
        verdict = {
            "mode": mode,
            **gate(spark, cfg, _challenger_scores(spark, cfg, mv.version, test_df), test_df, contract),
        }
        if mode == "dry_run" and verdict["promoted"]:
            verdict.update(promoted=False, would_promote=True, reason=verdict["reason"] + " (dry run: not promoted)")
    verdict["challenger_version"] = str(mv.version)
    if verdict["promoted"]:
        registry.promote(cfg, mv.version)
    registry.record_verdict(cfg, mv, verdict)
    _update_run_metrics(cfg, run_date, str(mv.version), verdict)
    return verdict


def _update_run_metrics(cfg: Config, run_date: dt.date, version: str, verdict: dict) -> None:
    """metrics.json of the run that trained the challenger learns the verdict and which model scores the week."""
    path = cfg.path("runs", run_date.isoformat(), "metrics.json")
    if not storage.is_file(path):
        return
    m = read_metrics(path)
    if m.get("model_version") != version:
        return
    m["gate"] = verdict
    champ = registry.champion(cfg)
    if champ is not None and str(champ.version) == version:
        m["scored_by"] = {"model_version": version, "role": "candidate", "test_metrics": shipped_metrics(m)}
    else:
        m["scored_by"] = {
            "model_version": str(champ.version) if champ else None,
            "role": "champion",
            "test_metrics": verdict.get("champion_metrics"),
        }
    write_metrics(path, m)
