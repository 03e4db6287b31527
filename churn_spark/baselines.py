"""Baselines trained in the same run and on the same temporal split, with Spark ML (data stays distributed).

* ``lr_rfm``: logistic regression on RFM-style aggregates (recency, frequency, monetary, tenure, recent activity) —
  the simple model a churn team starts from. "Recent" is the last ``recent_buckets`` buckets, the same window the
  reason codes use (``Config.recent_buckets``, from ``sequence.recent_days``).
* ``gbt``: gradient-boosted trees on the same aggregates plus the flattened T x C sequence.
"""

from __future__ import annotations

from typing import List

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from .feature_spec import aggregate_spec


def _aggregates(
    df: DataFrame, channels: List[str], n_buckets: int, *, recent_buckets: int
) -> tuple[DataFrame, List[str]]:
    """RFM aggregates: log1p statics plus recent-window and whole-window totals of orders, spend and active days."""
    cols = {}
    for name, source, positions in aggregate_spec(channels, n_buckets, recent_buckets):
        if positions:
            terms = [F.col("sequence")[i] for i in positions]
            cols[name] = F.log1p(sum(terms[1:], terms[0]))
        else:
            cols[name] = F.log1p(F.greatest(F.coalesce(F.col(source), F.lit(0.0)), F.lit(0.0)))
    return df.select("*", *[v.alias(k) for k, v in cols.items()]), list(cols)


def fit_baselines(train: DataFrame, channels: List[str], n_buckets: int, t, *, recent_buckets: int):
    """Fit both baselines with the ``training.lr_*`` / ``training.gbt_*`` settings of ``t`` (the training config);
    returns {name: fitted PipelineModel}."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import GBTClassifier, LogisticRegression
    from pyspark.ml.feature import StandardScaler, VectorAssembler
    from pyspark.ml.functions import array_to_vector

    tr, agg_cols = _aggregates(train, channels, n_buckets, recent_buckets=recent_buckets)
    tr = tr.withColumn("seq_vec", array_to_vector("sequence"))
    lr = Pipeline(
        stages=[
            VectorAssembler(inputCols=agg_cols, outputCol="raw_features"),
            StandardScaler(inputCol="raw_features", outputCol="features", withMean=True),
            LogisticRegression(
                labelCol="label", featuresCol="features", maxIter=t.lr_max_iter, regParam=t.lr_reg_param
            ),
        ]
    )
    gbt = Pipeline(
        stages=[
            VectorAssembler(inputCols=agg_cols + ["seq_vec"], outputCol="features"),
            GBTClassifier(
                labelCol="label", featuresCol="features", maxIter=t.gbt_max_iter, maxDepth=t.gbt_max_depth, seed=t.seed
            ),
        ]
    )
    return {"lr_rfm": lr.fit(tr), "gbt": gbt.fit(tr)}


def predict_baseline(model, df: DataFrame, channels: List[str], n_buckets: int, *, recent_buckets: int) -> DataFrame:
    """(user_id, label, probability) for a split."""
    from pyspark.ml.functions import array_to_vector, vector_to_array

    d, _ = _aggregates(df, channels, n_buckets, recent_buckets=recent_buckets)
    d = d.withColumn("seq_vec", array_to_vector("sequence"))
    return (
        model.transform(d)
        .select("user_id", "label", vector_to_array("probability")[1].alias("p"))
        .withColumnRenamed("p", "probability")
    )
