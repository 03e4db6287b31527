"""The weekly action list (Delta table ``churn_actions``): who the retention team contacts, with what, and who is
held out so the campaign's effect can be measured.

Per snapshot, the candidates are the savable users (lifecycle not ``lapsed``) in ``actions.tiers`` (default: the
``high`` tier), ranked by ``expected_value_at_risk`` (ties: higher probability first, then user id, so the order and
the budget cut never depend on row order). Each gets a recommended action from a small rule table: the user's
reason codes are tried strongest first, and the first code that matches a rule key (the code itself or a prefix of
it; the longest matching key wins) gives the action; no match gives ``actions.default_action``.

Hold-out: ``control = sha256("<user_id>|<snapshot>") < control_share`` (the first 15 hex digits as a fraction), so
the same user and snapshot are always in the same group, on any cluster and in Python, and the draw is independent
between snapshots. Control users are listed but not contacted and do not use the budget: walking down the ranking,
users are listed while fewer than ``contact_budget`` contacted users have been listed before them, so the control
group covers the same rank range as the contacted users (an unbiased comparison in ``model_performance``).

One Delta commit per snapshot, replacing that snapshot's partition (``replaceWhere``): reruns are idempotent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Dict, List, Optional, Sequence, Tuple

ACTIONS_TABLE = ("tables", "churn_actions")
ACTION_COLUMNS = [
    "snapshot_date",
    "user_id",
    "value_rank",
    "expected_value_at_risk",
    "churn_probability",
    "risk_tier",
    "lifecycle",
    "risk_rank",
    "top_reasons",
    "matched_reason",
    "action",
    "control",
    "model_version",
    "run_id",
    "created_at",
]
_HEX = 15  # hex digits of the hash used for the control draw (60 bits: exact in a long, fine in a double)


def actions_table_path(cfg) -> str:
    return cfg.path(*ACTIONS_TABLE)


# ---- control group ---------------------------------------------------------------------------------------------
def control_draw(user_id: str, snapshot: dt.date) -> float:
    """Uniform [0, 1) from sha256("<user_id>|<YYYY-MM-DD>") (the Spark column :func:`control_draw_col` equals it)."""
    digest = hashlib.sha256(f"{user_id}|{snapshot.isoformat()}".encode()).hexdigest()
    return int(digest[:_HEX], 16) / 16**_HEX


def control_draw_col(user_col, snapshot_col):
    from pyspark.sql import functions as F

    key = F.concat_ws("|", user_col.cast("string"), F.date_format(snapshot_col, "yyyy-MM-dd"))
    return F.conv(F.substring(F.sha2(key, 256), 1, _HEX), 16, 10).cast("double") / float(16**_HEX)


# ---- rule table ------------------------------------------------------------------------------------------------
def ordered_rules(rules: Dict[str, str]) -> List[Tuple[str, str]]:
    """Rule keys, longest first (a specific code beats a prefix); equal lengths keep the config's order."""
    return sorted(rules.items(), key=lambda kv: -len(kv[0]))


def match_action(codes: Optional[Sequence[str]], rules: Dict[str, str], default: str) -> Tuple[str, Optional[str]]:
    """(action, the reason code that chose it or None) for one user's codes, strongest first."""
    ordered = ordered_rules(rules)
    for code in codes or []:
        for key, action in ordered:
            if code and code.startswith(key):
                return action, code
    return default, None


def action_cols(codes_col, rules: Dict[str, str], default: str, max_codes: int):
    """Spark: (action, matched_reason) columns, the same rule as :func:`match_action` for up to ``max_codes``."""
    from pyspark.sql import functions as F

    ordered = ordered_rules(rules)
    per_code = []
    for i in range(max_codes):
        code = codes_col[i]
        expr = F.lit(None).cast("string")
        for key, action in reversed(ordered):  # built inside out: the first (longest) key is checked first
            expr = F.when(code.startswith(key), F.lit(action)).otherwise(expr)
        per_code.append((code, expr))
    if not per_code:
        return F.lit(default), F.lit(None).cast("string")
    action = F.coalesce(*[a for _, a in per_code], F.lit(default))
    matched = F.coalesce(*[F.when(a.isNotNull(), c) for c, a in per_code])
    return action, matched


# ---- budget ----------------------------------------------------------------------------------------------------
def within_budget(control_in_rank_order: Sequence[bool], budget: Optional[int]) -> List[bool]:
    """Which ranked candidates are listed: those with fewer than ``budget`` contacted (non-control) users before
    them. None = no cap."""
    out, contacted = [], 0
    for control in control_in_rank_order:
        out.append(budget is None or contacted < budget)
        contacted += 0 if control else 1
    return out


def build_actions(risk, acfg, max_codes: int, run_id: str, created_at: dt.datetime):
    """Spark: the action rows of the risk rows given (one or more snapshots)."""
    from pyspark.sql import functions as F

    from .ranking import rank_in_groups

    cand = risk.where((F.col("lifecycle") != F.lit("lapsed")) & F.col("risk_tier").isin(*acfg.tiers))
    action, matched = action_cols(F.col("top_reasons"), acfg.rules, acfg.default_action, max_codes)
    cand = cand.withColumn("control", control_draw_col(F.col("user_id"), F.col("snapshot_date")) < acfg.control_share)
    # value order, user id last so it is unique: the rank is a row number and the running count well defined
    ranked = rank_in_groups(
        cand,
        ["snapshot_date"],
        [("expected_value_at_risk", False), ("churn_probability", False), ("user_id", True)],
        rank_col="value_rank",
        running={"_contacted_before": (~F.col("control")).cast("long")},
    )
    ranked = (
        ranked.withColumn("value_rank", F.col("value_rank").cast("int"))
        .withColumn("action", action)
        .withColumn("matched_reason", matched)
    )
    if acfg.contact_budget is not None:
        ranked = ranked.where(F.col("_contacted_before") < acfg.contact_budget)
    return (
        ranked.withColumn("run_id", F.lit(run_id))
        .withColumn("created_at", F.lit(created_at).cast("timestamp"))
        .select(*ACTION_COLUMNS)
    )


def write_actions(spark, cfg, snapshot: dt.date, risk_version: int, run_id: str) -> dict:
    """Build the snapshot's list from the ``churn_risk`` partition at ``risk_version`` and replace its partition
    of ``churn_actions`` in one commit. Returns {table, table_version, listed, contacted, control}."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from .score import write_partition

    path = actions_table_path(cfg)
    risk = (
        spark.read.format("delta")
        .option("versionAsOf", risk_version)
        .load(cfg.risk_table_path)
        .where(F.col("snapshot_date") == F.lit(snapshot))
    )
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    rows = build_actions(risk, cfg.actions, cfg.scoring.reason_count, run_id, now)
    rows = rows.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        meta = json.dumps({"run_id": run_id, "source": "actions", "risk_table_version": risk_version})
        version = write_partition(rows, path, snapshot, cfg.scoring.max_retries, meta)
    finally:
        rows.unpersist()
    counts = (
        spark.read.format("delta")
        .option("versionAsOf", version)
        .load(path)
        .where(F.col("snapshot_date") == F.lit(snapshot))
        .agg(F.count(F.lit(1)).alias("n"), F.sum(F.col("control").cast("int")).alias("c"))
        .first()
    )
    listed, control = int(counts["n"]), int(counts["c"] or 0)
    return {
        "table": path,
        "table_version": version,
        "listed": listed,
        "contacted": listed - control,
        "control": control,
    }
