"""The SQL endpoint's catalog: the project's Delta paths as tables of one database, plus the BI views over them.

Only ``churn-spark sql-server`` writes this catalog. The jobs write Delta paths and never touch a metastore, so a
weekly run, ``score``, the server and a notebook can run at once (the embedded Derby metastore admits one process;
the server is that process). A table is defined by its path (``CREATE TABLE ... USING DELTA LOCATION``), and Delta
reads the newest committed version at every query, so snapshots committed after the server started are visible to
open connections. Every identifier comes from the config and is validated and quoted here: no config value reaches
SQL unchecked.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Dict, List, Optional

from . import storage
from .actions import ACTIONS_TABLE
from .config import Config, ConfigError
from .drift_table import DRIFT_TABLE
from .logs import LOG
from .monitoring import PERF_TABLE
from .run_metrics import metrics_files, shipped_metrics

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
METRICS_SCHEMA = (
    "model_name string, model_version string, trained_run_date date, mlflow_run_id string, "
    "promoted boolean, test_roc_auc double, test_pr_auc double, test_log_loss double, test_brier double"
)
TEST_METRICS = ("roc_auc", "pr_auc", "log_loss", "brier")


def quote(*parts: str) -> str:
    """`db`.`name` after checking every part is a plain identifier (letters, digits, underscore)."""
    for p in parts:
        if not _NAME.match(p or ""):
            raise ConfigError(f"not a valid SQL identifier: {p!r} (letters, digits and '_' only)")
    return ".".join(f"`{p}`" for p in parts)


def sql_string(value: str) -> str:
    """A Spark SQL string literal (backslash escapes are on by default, so both ``\\`` and ``'`` are escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def location(path: str) -> str:
    return storage.absolute(path)


@dataclass(frozen=True)
class Names:
    """Quoted names of everything the server defines, all in the database of ``scoring.catalog_table``."""

    db: str
    risk: str

    def __getattr__(self, item: str) -> str:  # features, quarantine, churn_risk_latest, ... in the same database
        if item.startswith("_"):
            raise AttributeError(item)
        return quote(self.db, item)

    @property
    def fq_risk(self) -> str:
        return quote(self.db, self.risk)


def names(cfg: Config) -> Names:
    table = cfg.scoring.catalog_table
    if not table:
        raise ConfigError(
            f"key 'scoring.catalog_table' in {cfg.origin_of('scoring', 'catalog_table')}: it is null, "
            "so there is no database to serve; set it (e.g. churn.churn_risk)"
        )
    db, _, name = table.rpartition(".")
    db = db or "default"
    try:
        quote(db, name)
    except ConfigError as e:
        raise ConfigError(f"key 'scoring.catalog_table' in {cfg.origin_of('scoring', 'catalog_table')}: {e}") from None
    return Names(db=db, risk=name)


def metrics_path(cfg: Config) -> str:
    return location(cfg.path("sql-server", "model_metrics"))


def table_locations(cfg: Config, n: Names) -> Dict[str, str]:
    """Quoted table name -> Delta location. ``model_metrics`` is the server's own small table (see below)."""
    return {
        n.fq_risk: location(cfg.risk_table_path),
        n.features: location(cfg.features_path),
        n.quarantine: location(cfg.quarantine_path),
        n.model_metrics: metrics_path(cfg),
        # the retention layer's tables (registered once their first commit exists)
        n.churn_actions: location(cfg.path(*ACTIONS_TABLE)),
        n.model_performance: location(cfg.path(*PERF_TABLE)),
        n.drift: location(cfg.path(*DRIFT_TABLE)),
    }


def view_sql(n: Names) -> Dict[str, str]:
    """The BI views. Plain Spark SQL over the catalog tables, so they see every new snapshot at query time."""
    risk = n.fq_risk
    return {
        n.churn_risk_latest: f"SELECT * FROM {risk} WHERE snapshot_date = (SELECT max(snapshot_date) FROM {risk})",
        # one row per user and snapshot; the change is against the same user's previous scored snapshot
        n.churn_risk_history: f"""SELECT user_id, snapshot_date, churn_probability, risk_tier, risk_rank,
       risk_percentile, model_version,
       lag(snapshot_date) OVER w AS previous_snapshot_date,
       lag(churn_probability) OVER w AS previous_probability,
       churn_probability - lag(churn_probability) OVER w AS probability_change,
       lag(risk_tier) OVER w AS previous_tier,
       lag(risk_rank) OVER w AS previous_rank,
       (lag(risk_rank) OVER w) - risk_rank AS rank_change
FROM {risk}
WINDOW w AS (PARTITION BY user_id ORDER BY snapshot_date)""",
        n.tier_summary: f"""SELECT snapshot_date, risk_tier, count(*) AS users,
       count(*) / sum(count(*)) OVER (PARTITION BY snapshot_date) AS user_share,
       avg(churn_probability) AS mean_probability,
       min(churn_probability) AS min_probability, max(churn_probability) AS max_probability
FROM {risk}
GROUP BY snapshot_date, risk_tier""",
        # which model version scored which snapshot (from the rows themselves) and that version's test metrics
        n.model_versions: f"""SELECT r.snapshot_date, r.model_name, r.model_version, r.users, r.scored_at, r.run_id,
       r.feature_table_version, m.trained_run_date, m.mlflow_run_id, m.promoted,
       m.test_roc_auc, m.test_pr_auc, m.test_log_loss, m.test_brier
FROM (SELECT snapshot_date, model_name, model_version, count(*) AS users, max(scored_at) AS scored_at,
             max(run_id) AS run_id, max(feature_table_version) AS feature_table_version
      FROM {risk} GROUP BY snapshot_date, model_name, model_version) r
LEFT JOIN {n.model_metrics} m ON m.model_name = r.model_name AND m.model_version = r.model_version""",
    }


def metrics_rows(work_dir: str) -> List[tuple]:
    """One row per (model name, version) from ``runs/*/metrics.json``: the deep model's test metrics of the run that
    trained the version (the newest run wins if a version number was reused). Unreadable files are skipped."""
    best: Dict[tuple, tuple] = {}
    for f in metrics_files(storage.join(work_dir, "runs")):
        try:
            m = json.loads(storage.read_text(f))
            key = (str(m["model_name"]), str(m["model_version"]))
            run_date = dt.date.fromisoformat(m["run_date"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            LOG.warning("model metrics: skipping %s (%s)", f, e)
            continue
        deep = shipped_metrics(m)
        promoted = (m.get("gate") or {}).get("promoted")  # unknown (null) until the validate step decided
        row = (
            *key,
            run_date,
            m.get("run_id"),
            None if promoted is None else bool(promoted),
            *(_num(deep.get(k)) for k in TEST_METRICS),
        )
        if key not in best or best[key][2] <= run_date:
            best[key] = row
    return [best[k] for k in sorted(best)]


def _num(v) -> Optional[float]:
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None


class Catalog:
    """Creates what is missing and keeps the model metrics current; ``refresh`` is idempotent and cheap."""

    def __init__(self, spark, cfg: Config):
        self.spark, self.cfg, self.n = spark, cfg, names(cfg)
        self.tables: List[str] = []
        self.views: List[str] = []
        self._metrics: Optional[List[tuple]] = None

    def refresh(self) -> List[str]:
        """Register tables whose Delta log now exists, then the views; returns the names still missing."""
        self._write_metrics()
        self.spark.sql(f"CREATE DATABASE IF NOT EXISTS {quote(self.n.db)}")
        missing = []
        for name, loc in table_locations(self.cfg, self.n).items():
            if name in self.tables:
                continue
            if self._register(name, loc):
                self.tables.append(name)
            else:
                missing.append(name)
        if self.n.fq_risk in self.tables and not self.views:
            for view, body in view_sql(self.n).items():
                self.spark.sql(f"CREATE OR REPLACE VIEW {view} AS {body}")
                self.views.append(view)
        return missing

    def _register(self, name: str, loc: str) -> bool:
        from delta.tables import DeltaTable

        if not DeltaTable.isDeltaTable(self.spark, loc):
            return False
        current = self._described(name)
        if current and _same_place(current.get("Location", ""), loc):
            return True
        if current:  # the work_dir moved: re-point an external definition, never drop a managed table's data
            if current.get("Type", "").upper() != "EXTERNAL":
                raise ConfigError(
                    f"catalog table {name} exists as a {current.get('Type')} table at "
                    f"{current.get('Location')}, not over {loc}: drop it or change scoring.catalog_table"
                )
            LOG.warning("catalog table %s pointed at %s; re-creating it over %s", name, current.get("Location"), loc)
            self.spark.sql(f"DROP TABLE {name}")
        self.spark.sql(f"CREATE TABLE IF NOT EXISTS {name} USING DELTA LOCATION {sql_string(loc)}")
        return True

    def _described(self, name: str) -> Optional[dict]:
        """Type (MANAGED / EXTERNAL) and Delta location of an existing catalog table; None if there is none."""
        db, table = (p.strip("`") for p in name.split("."))
        if not self.spark.catalog.tableExists(f"{db}.{table}"):
            return None
        out = {"Type": self.spark.catalog.getTable(f"{db}.{table}").tableType or "", "Location": ""}
        try:
            out["Location"] = self.spark.sql(f"DESCRIBE DETAIL {name}").first()["location"] or ""
        except Exception as e:  # its old path is gone: the definition is stale
            LOG.info("catalog table %s is not readable (%s)", name, str(e).splitlines()[0][:200])
        return out

    def _write_metrics(self) -> None:
        """The small Delta table behind ``model_versions``: rewritten only when a metrics.json changed."""
        rows = metrics_rows(self.cfg.work_dir)
        if rows == self._metrics:
            return
        (
            self.spark.createDataFrame(rows, METRICS_SCHEMA)
            .coalesce(1)
            .write.format("delta")
            .mode("overwrite")
            .option("overwriteSchema", "true")
            .save(metrics_path(self.cfg))
        )
        self._metrics = rows
        LOG.info("model metrics: %d model version(s) from %s", len(rows), self.cfg.path("runs"))


def _same_place(described: str, loc: str) -> bool:
    """DESCRIBE says ``file:/a/b``; the config gives ``/a/b``."""
    d = described
    if d.startswith("file:"):
        d = "/" + d[len("file:") :].lstrip("/")
    return d.rstrip("/") == loc.rstrip("/")
