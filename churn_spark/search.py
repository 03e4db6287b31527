"""Validation-only search over a few network settings (``training.search``): one Horovod job per trial.

Why: on skewed, small-signal data (most customers churn, few buy twice) the network's best width, dropout, learning
rate and class weighting differ from the dense demo's, and a user cannot know them in advance. The configured
settings are trial 0; every entry of ``training.search`` overrides some of them. Each trial trains on the train
split (early stopping on validation, as always), is scored on validation through the scoring path, and the trial with
the lowest *cross-fitted* calibrated validation log loss is kept (ties go to the earlier trial, so the configured
settings win unless beaten). Test rows are never looked at: they stay the unbiased measure of the chosen model.
Every trial is an MLflow child run of the training run, with its overrides and validation metrics.
With an empty ``training.search`` (the default) nothing extra runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

# settings a trial may override: the network and its optimisation (not the data, the ranks or the evaluation)
SEARCHABLE = (
    "rnn",
    "rnn_units",
    "conv_filters",
    "conv_blocks",
    "conv_kernel",
    "dense_units",
    "dropout",
    "learning_rate",
    "class_weight",
    "batch_size",
    "epochs",
    "patience",
)


@dataclass
class Trial:
    index: int
    overrides: Dict
    settings: object  # TrainingConf
    model_dir: str = ""
    ranks: List[dict] = field(default_factory=list)
    quality: Dict[str, float] = field(default_factory=dict)
    ref: str = ""  # the shipped (uncalibrated) bundle's worker reference
    validation_scores: Optional[pd.DataFrame] = None  # (user_id, label, raw_probability), reused by evaluation


def check_overrides(search: List[Dict]) -> List[Dict]:
    """Refuse (ValueError naming ``search[i].key``) overrides of settings a trial may not change."""
    for i, overrides in enumerate(search):
        bad = sorted(set(overrides) - set(SEARCHABLE))
        if bad:
            raise ValueError(f"search[{i}].{bad[0]} cannot be searched; searchable settings: {', '.join(SEARCHABLE)}")
    return search


def trials(training) -> List[Trial]:
    """Trial 0 (the configured settings) and one trial per ``training.search`` entry, each validated as a whole
    training config (so ``dropout: 1.5`` in a trial fails like it would at the top level)."""
    base = {**training.model_dump(), "search": []}
    cls = type(training)
    return [
        Trial(i, dict(o), cls.model_validate({**base, **o}))
        for i, o in enumerate([{}, *check_overrides(list(training.search))])
    ]


def validate(spark, cfg, trial: Trial, validation_df) -> None:
    """The trial's network on the validation rows, through the scorer: cross-fitted calibrated log loss (the choice)
    and ROC-AUC (for the record) in ``trial.quality``; the shipped reference and the collected scores are kept so
    the chosen trial is neither shipped nor scored on validation again."""
    from .blend import log_loss
    from .calibration import cross_fitted
    from .evaluation import collect_scores
    from .metrics import metric_value
    from .predict import score_frame, ship_model

    t = cfg.training
    trial.ref = ship_model(spark, trial.model_dir, cfg.path("tmp", "ship"))
    rows = collect_scores(score_frame(validation_df, trial.ref, ["user_id", "label"]), t.max_eval_rows)
    y, p = rows["label"].to_numpy(float), rows["raw_probability"].to_numpy(float)
    calibrated = cross_fitted(t.calibration, p, y, t.calibration_folds, t.seed)
    trial.quality = {"val_log_loss_cv": log_loss(y, calibrated), "val_roc_auc": metric_value("roc_auc", y, p, p)}
    trial.validation_scores = rows[["user_id", "label", "raw_probability"]]


def best(done: List[Trial]) -> Trial:
    """The trial with the lowest validation log loss; the earliest on a tie; trial 0 when nothing was measured."""
    if len(done) == 1 or any(not t.quality for t in done):
        return done[0]
    return done[int(np.argmin([t.quality["val_log_loss_cv"] for t in done]))]


def summary(done: List[Trial], chosen: Trial) -> List[dict]:
    """One record per trial for metrics.json's ``model_selection.search``."""
    return [
        {"trial": t.index, "overrides": t.overrides, **t.quality, "chosen": t is chosen, "model_dir": t.model_dir}
        for t in done
    ]


def log_trials(done: List[Trial], chosen: Trial, experiment_id: str) -> None:
    """Every trial as an MLflow child run of the active run, in its experiment (params: the overrides; metrics:
    validation only)."""
    import mlflow

    for t in done:
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"trial-{t.index}", nested=True):
            mlflow.log_params({"trial": t.index, **{f"training.{k}": v for k, v in t.overrides.items()}})
            if t.quality:
                mlflow.log_metrics(t.quality)
            mlflow.set_tag("chosen", str(t is chosen).lower())
