"""Typed configuration: one validated object built from YAML profiles and ``--set`` overrides.

Every job reads the same :class:`Config`. Files are merged in order (``conf/default.yaml`` first, then each
``--config FILE``), then ``--set a.b=value`` overrides are applied. Every leaf remembers which file set it, so a bad
key, a wrong type or a path outside the allowed roots is reported as ``key 'a.b' in FILE: ...``.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILE = REPO_ROOT / "conf" / "default.yaml"


class ConfigError(ValueError):
    """A configuration problem, always naming the key and the file it came from."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SparkConf(_Strict):
    master: Optional[str] = "local[*]"  # ignored when spark-submit already set spark.master
    app_name: str = "churn-spark"
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "WARN"
    bind_localhost: bool = True  # local mode only: bind driver/UI to 127.0.0.1
    enable_hive: bool = True  # local catalog (embedded Derby under work_dir) for BI tables and views
    class_archive: bool = True  # local mode: map the JVM class archive `make setup` built (class_archive.py)
    conf: Dict[str, str] = Field(default_factory=dict)

    @field_validator("conf", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        return {str(k): str(x).lower() if isinstance(x, bool) else str(x) for k, x in (v or {}).items()}


Channel = Literal["orders", "events", "reviews", "users"]


class SourceConf(_Strict):
    """One lake table. ``path`` or ``table`` (a catalog name) locates it; ``columns`` maps canonical -> source."""

    path: Optional[str] = None
    table: Optional[str] = None
    format: Literal["delta", "parquet", "csv"] = "delta"
    columns: Dict[str, str] = Field(default_factory=dict)
    timestamp_format: Optional[str] = None  # Spark datetime pattern for string timestamps; None = ISO-8601
    timezone: str = "UTC"  # zone of naive timestamps in this source
    csv_options: Dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _located(self) -> "SourceConf":
        if not self.path and not self.table:
            raise ValueError("a source needs 'path' or 'table'")
        return self


class ValidationConf(_Strict):
    max_bad_fraction: float = Field(0.05, ge=0.0, le=1.0)
    event_types: List[str] = Field(default_factory=lambda: ["view", "cart", "favorite", "search"])
    # order statuses (lower-cased, trimmed) the lake may hold; any other status is quarantined as unknown_status
    purchase_statuses: List[str] = Field(default_factory=lambda: ["completed"])
    return_statuses: List[str] = Field(default_factory=lambda: ["cancelled", "refunded"])


class SequenceConf(_Strict):
    n_buckets: int = Field(26, ge=1, le=520)
    bucket_days: int = Field(7, ge=1, le=366)
    eligibility_lookback_days: Optional[int] = Field(None, ge=1)  # default: n_buckets * bucket_days
    # "recent" for reason codes and the baselines' recent aggregates (one definition): the last recent_days // B buckets
    recent_days: int = Field(28, ge=1)
    # the long, coarse view of the same history (multi-resolution): long_buckets x long_bucket_days; 0 turns it off
    long_buckets: int = Field(24, ge=0, le=520)
    long_bucket_days: int = Field(30, ge=1, le=366)


class SnapshotConf(_Strict):
    horizon_days: int = Field(30, ge=1)
    step_days: int = Field(28, ge=1)
    n_labelled: int = Field(6, ge=3)  # test = latest, validation = next, train = the rest
    churn_definition: Literal["no_order", "no_activity"] = "no_order"


class TrainingConf(_Strict):
    num_proc: int = Field(2, ge=1)
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(256, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    warmup_epochs: int = Field(1, ge=0)
    patience: int = Field(3, ge=1)
    conv_filters: int = Field(32, ge=1)
    conv_kernel: int = Field(3, ge=1)
    conv_blocks: int = Field(2, ge=1)
    rnn: Literal["gru", "lstm"] = "gru"
    rnn_units: int = Field(32, ge=1)
    dense_units: int = Field(16, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    class_weight: bool = True
    seed: int = 7
    mixed_precision: bool = False  # float16 compute on GPU ranks (no effect on CPU)
    timeout_s: int = Field(1800, ge=10)  # Horovod start/finish bound: a lost rank fails the job, never hangs it
    gbt_max_iter: int = Field(40, ge=1)
    lr_max_iter: int = Field(100, ge=1)  # LR baseline: L-BFGS iterations (it converges well before on RFM features)
    lr_reg_param: float = Field(1e-3, ge=0)  # LR baseline: L2 strength on standardised features
    gbt_max_depth: int = Field(4, ge=1)
    calibration: Literal["isotonic", "platt"] = "isotonic"
    max_eval_rows: int = Field(2_000_000, ge=100)  # cap on (probability, label) pairs brought to the driver
    # too little data is a refusal, not a model: minimum labelled users / positives / negatives in every split
    min_users_per_split: int = Field(100, ge=1)
    min_positives_per_split: int = Field(20, ge=1)
    min_negatives_per_split: int = Field(20, ge=1)
    input_clip: float = Field(10.0, gt=0)  # standardised model inputs are clipped to +-input_clip (kept in the bundle)
    other_category_share: float = Field(0.02, ge=0, lt=0.5)  # train rows whose category is trained as "other"
    calibration_folds: int = Field(5, ge=2)  # cross-fitted calibration quality on validation
    btyd_inputs: bool = True  # BG/NBD P(alive) and expected purchases as network inputs (fitted on train)
    blend: bool = True  # ship a blend of the network with lr_rfm when it wins on validation (churn_spark/blend.py)
    # validation-only search (churn_spark/search.py): each entry overrides network settings for one extra trial
    search: List[Dict[str, Any]] = Field(default_factory=list)

    @field_validator("search")
    @classmethod
    def _searchable(cls, v: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        from .search import check_overrides

        return check_overrides(v)


class RegistryConf(_Strict):
    tracking_uri: Optional[str] = None  # default: sqlite:///<work_dir>/mlflow/mlflow.db
    experiment: str = "churn-spark"
    model_name: str = "churn-spark-cnn-rnn"
    gate_metric: Literal["roc_auc", "pr_auc", "log_loss", "brier"] = "pr_auc"
    gate_margin: float = 0.0
    # the improvement's bootstrap lower bound (paired, on the shared test rows) must clear gate_margin
    gate_bootstrap: int = Field(200, ge=20)
    gate_confidence: float = Field(0.95, gt=0.5, lt=1.0)
    # a champion trained on another feature contract cannot be compared: promote the candidate, or refuse
    incompatible_champion: Literal["promote", "refuse"] = "promote"
    gate_min_relative_change: float = Field(0.0, ge=0)  # required improvement relative to the champion's metric
    validation_mode: Literal["enabled", "dry_run", "disabled"] = "enabled"


class ScoringConf(_Strict):
    batch_size: int = Field(4096, ge=1)  # Arrow batch size for the pandas UDF
    # tier_mode "share": tier_shares are shares of the snapshot, from the top (high = top 10 %, medium = next 20 %);
    # tier_mode "probability": tiers are calibrated-probability cut-offs
    tier_mode: Literal["share", "probability"] = "share"
    tier_shares: Dict[str, float] = Field(default_factory=lambda: {"high": 0.10, "medium": 0.20})
    tiers: Dict[str, float] = Field(default_factory=lambda: {"high": 0.5, "medium": 0.25})
    reasons: bool = True
    reason_count: int = Field(3, ge=1, le=10)
    reason_tolerance: float = Field(0.05, ge=0, lt=1)  # relative: rates within this are "unchanged" (no up/down)
    bad_review_rating: float = Field(2.5, ge=1, le=5)  # mean rating at or below this is a bad review
    catalog_table: Optional[str] = "churn.churn_risk"
    max_retries: int = Field(5, ge=0)


def _default_action_rules() -> Dict[str, str]:
    return {
        "views_down": "personal_recommendations",
        "searches_down": "personal_recommendations",
        "favourites_down": "personal_recommendations",
        "orders_down": "coupon",
        "spend_down": "coupon",
        "items_down": "coupon",
        "days_since_last_order_high": "coupon",
        "returns_up": "service_call",
        "bad_review": "service_call",
        "rating_mean_down": "service_call",
    }


class LifecycleConf(_Strict):
    """``churn_risk.lifecycle`` and ``expected_value_at_risk`` (see ``churn_spark/lifecycle.py``). Lapsed = no
    purchase (no activity for churn_definition no_activity) for longer than clip(lapsed_gap_multiple x
    tenure_days / lifetime_orders, floor_days, cap_days)."""

    lapsed_gap_multiple: float = Field(4.0, gt=0)
    floor_days: float = Field(56.0, ge=1)
    cap_days: float = Field(150.0, ge=1)
    value_window_days: int = Field(91, ge=1)  # recent spend rate over this many days (whole buckets)
    value_prior_orders: float = Field(2.0, gt=0)  # the population prior is worth this many typical orders

    @model_validator(mode="after")
    def _ordered(self) -> "LifecycleConf":
        if self.cap_days < self.floor_days:
            raise ValueError(f"cap_days ({self.cap_days}) must be >= floor_days ({self.floor_days})")
        return self


class ActionsConf(_Strict):
    """The ``churn_actions`` list (see ``churn_spark/actions.py``): savable users of ``tiers`` ranked by value at
    risk, up to ``contact_budget`` contacted users, with a deterministic hold-out share flagged ``control``."""

    enabled: bool = True
    tiers: List[str] = Field(default_factory=lambda: ["high"])
    contact_budget: Optional[int] = Field(1000, ge=0)  # users to contact per snapshot; null = everybody listed
    control_share: float = Field(0.10, ge=0, lt=1)
    # reason code (or code prefix) -> action; the longest key matching the user's strongest matching code wins
    rules: Dict[str, str] = Field(default_factory=_default_action_rules)
    default_action: str = "reminder_email"

    @field_validator("rules")
    @classmethod
    def _keys(cls, v: Dict[str, str]) -> Dict[str, str]:
        if any(not k.strip() or not str(a).strip() for k, a in v.items()):
            raise ValueError("rule keys (reason codes or prefixes) and actions must be non-empty")
        return v


class LockConf(_Strict):
    """The weekly run lock (a row in a Delta table under work_dir): heartbeat period and stale-lock takeover."""

    heartbeat_s: float = Field(30.0, gt=0)
    stale_after_s: float = Field(600.0, gt=0)


class ReportConf(_Strict):
    psi_threshold: float = 0.2
    top_n: int = 25


class SqlServerConf(_Strict):
    """``churn-spark sql-server`` (Spark Thrift Server). ``auth: NONE`` is accepted only on 127.0.0.1; any other
    bind address needs LDAP, CUSTOM (a PasswdAuthenticationProvider class) or KERBEROS, whose settings go in
    ``hiveconf`` as ``hive.server2.*`` keys."""

    host: str = "127.0.0.1"
    port: int = Field(10000, ge=1, le=65535)
    auth: Literal["NONE", "LDAP", "CUSTOM", "KERBEROS"] = "NONE"
    hiveconf: Dict[str, str] = Field(default_factory=dict)
    refresh_s: float = Field(30.0, gt=0)  # how often tables that appeared since start and model metrics are picked up

    _stringify = field_validator("hiveconf", mode="before")(SparkConf._stringify.__func__)


class MonitoringConf(_Strict):
    """Realised-outcome monitoring (``model_performance``): flag a model whose realised ROC-AUC on a matured snapshot
    falls more than ``realised_auc_margin`` below its test ROC-AUC; snapshots older than ``max_age_days`` are final."""

    realised_auc_margin: float = Field(0.05, ge=0)
    max_age_days: int = Field(182, ge=1)


class PrivacyConf(_Strict):
    """Erasure (``churn-spark forget``) and quarantine retention; see ``churn_spark/privacy.py``."""

    vacuum_retention_hours: int = Field(0, ge=0)  # VACUUM after forget: 0 = erased files leave the disk at once
    quarantine_retention_days: int = Field(30, ge=1)  # quarantine run_id partitions older than this are deleted
    hash_quarantine_user_ids: bool = False  # store a salted hash instead of the raw user id in quarantined rows


class Config(_Strict):
    work_dir: str = "work"
    lake_root: Optional[str] = None  # default: <work_dir>/lake
    clock: Optional[dt.date] = None  # "today" for future-timestamp checks; default: the run date
    spark: SparkConf = Field(default_factory=SparkConf)
    sources: Dict[Channel, SourceConf] = Field(default_factory=dict)
    validation: ValidationConf = Field(default_factory=ValidationConf)
    sequence: SequenceConf = Field(default_factory=SequenceConf)
    snapshots: SnapshotConf = Field(default_factory=SnapshotConf)
    training: TrainingConf = Field(default_factory=TrainingConf)
    registry: RegistryConf = Field(default_factory=RegistryConf)
    scoring: ScoringConf = Field(default_factory=ScoringConf)
    lifecycle: LifecycleConf = Field(default_factory=LifecycleConf)
    actions: ActionsConf = Field(default_factory=ActionsConf)
    report: ReportConf = Field(default_factory=ReportConf)
    sql_server: SqlServerConf = Field(default_factory=SqlServerConf)
    lock: LockConf = Field(default_factory=LockConf)
    monitoring: MonitoringConf = Field(default_factory=MonitoringConf)
    privacy: PrivacyConf = Field(default_factory=PrivacyConf)
    _origin: Dict[str, str] = PrivateAttr(default_factory=dict)

    def origin_of(self, *key: str) -> str:
        """The file (or ``--set``) that set a key, for error messages."""
        return _find_origin(self._origin, key)

    @model_validator(mode="after")
    def _orders_required(self) -> "Config":
        if "orders" not in self.sources:
            raise ValueError("an 'orders' source is required (sources.orders)")
        return self

    # ---- derived locations (all under work_dir) -------------------------------------------------
    def path(self, *parts: str) -> str:
        """A location under work_dir: a local path, or a URI (``s3a://…``) joined with forward slashes."""
        from . import storage

        return storage.join(self.work_dir, *parts)

    @property
    def lake_dir(self) -> str:
        return self.lake_root or self.path("lake")

    @property
    def features_path(self) -> str:
        return self.path("tables", "features")

    @property
    def lock_table_path(self) -> str:
        return self.path("tables", "run_lock")

    @property
    def quarantine_path(self) -> str:
        return self.path("tables", "quarantine")

    @property
    def risk_table_path(self) -> str:
        return self.path("tables", "churn_risk")

    @property
    def tracking_uri(self) -> str:
        """A server from the config, else an embedded SQLite file, which must be on a local disk: under work_dir
        when that is local, else in the driver's scratch dir (the MLflow artifacts still go to work_dir)."""
        from . import storage

        if self.registry.tracking_uri:
            return self.registry.tracking_uri
        return f"sqlite:///{Path(storage.scratch_dir(self.work_dir, 'mlflow'), 'mlflow.db')}"

    @property
    def feature_contract(self) -> dict:
        from .feature_spec import channels_for, feature_contract

        q = self.sequence
        return feature_contract(
            channels_for(list(self.sources)), q.n_buckets, q.bucket_days, q.long_buckets, q.long_bucket_days
        )

    @property
    def recent_buckets(self) -> int:
        from .feature_spec import recent_buckets

        return recent_buckets(self.sequence.n_buckets, self.sequence.bucket_days, self.sequence.recent_days)

    @property
    def lookback_days(self) -> int:
        return self.sequence.eligibility_lookback_days or self.sequence.n_buckets * self.sequence.bucket_days

    def source_location(self, name: str) -> str:
        src = self.sources[name]
        if src.table:
            return src.table
        p = src.path.replace("${lake_root}", self.lake_dir).replace("${work_dir}", self.work_dir)
        return p


# ---------------------------------------------------------------------------------------------------
def _deep_merge(base: dict, new: dict, origin: dict, src: str, prefix: str = "") -> None:
    for k, v in new.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_merge(base[k], v, origin, src, key + ".")
        else:
            base[k] = copy.deepcopy(v)
            origin[key] = src
            if isinstance(v, dict):
                for sub in v:
                    origin[f"{key}.{sub}"] = src


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level, got {type(data).__name__}")
    return data


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if key.startswith("spark.conf."):  # Spark keys contain dots themselves
        keys = ["spark", "conf", key[len("spark.conf.") :]]
    else:
        keys = key.split(".")
    return keys, yaml.safe_load(raw) if raw != "" else None


def _find_origin(origin: dict, loc: tuple) -> str:
    parts = [str(p) for p in loc]
    while parts:
        k = ".".join(parts)
        if k in origin:
            return origin[k]
        parts.pop()
    return "(defaults)"


def default_file() -> Path:
    """conf/default.yaml: $CHURN_SPARK_CONF_DIR (set by deploy/submit.sh), the repo, or the working directory."""
    env = os.environ.get("CHURN_SPARK_CONF_DIR")
    candidates = ([Path(env) / "default.yaml"] if env else []) + [
        DEFAULT_FILE,
        Path.cwd() / "conf" / "default.yaml",
        Path.cwd() / "default.yaml",
    ]
    return next((c for c in candidates if c.is_file()), DEFAULT_FILE)


def load_config(
    files: Optional[List[str]] = None, overrides: Optional[List[str]] = None, include_default: bool = True
) -> Config:
    """Merge default.yaml, the given files and ``key=value`` overrides into a validated :class:`Config`."""
    data: dict = {}
    origin: dict = {}
    paths = ([default_file()] if include_default else []) + [Path(f) for f in (files or [])]
    for p in paths:
        _deep_merge(data, _read_yaml(p), origin, str(p))
    for item in overrides or []:
        keys, value = _parse_override(item)
        tree = {}
        node = tree
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
        _deep_merge(data, tree, origin, f"--set {item}")
    if isinstance(data.get("sources"), dict):  # `sources.events: null` switches a source off
        data["sources"] = {k: v for k, v in data["sources"].items() if v is not None}
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            where = _find_origin(origin, err["loc"])
            what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            msgs.append(f"key '{key}' in {where}: {what}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(msgs)) from None
    cfg._origin = origin
    from .locations import check_paths  # the path rules live with the other location logic

    check_paths(cfg)
    return cfg
