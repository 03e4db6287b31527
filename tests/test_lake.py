"""Ingest and validation: every reason code, the accounting identity, thresholds and clear errors."""

import datetime as dt
import json

import pytest
from conftest import make_config

from churn_spark.config import ConfigError
from churn_spark.lake import BadInputError, canonicalize, ingest, read_source, write_quarantine

CLOCK = dt.date(2026, 6, 1)


def _orders_only(tmp_path, *extra):
    return make_config(tmp_path, "sources.events=null", "sources.reviews=null", "sources.users=null", *extra)


def _write(spark, rows, schema, path, fmt="delta"):
    df = spark.createDataFrame(rows, schema)
    if fmt == "csv":
        df.write.mode("overwrite").option("header", True).csv(path)
    else:
        df.write.format(fmt).mode("overwrite").save(path)


def test_every_reason_code_and_the_accounting_identity(spark, tmp_path):
    cfg = make_config(tmp_path, "sources.users=null", "validation.max_bad_fraction=0.9")
    lake = cfg.lake_dir
    ts = "2026-05-01 10:00:00"
    _write(
        spark,
        [
            (1, "u1", ts, 10.0, 1, "completed"),  # good
            (2, None, ts, 10.0, 1, "completed"),  # null_user_id
            (3, "u1", None, 10.0, 1, "completed"),  # null_ts
            (4, "u1", "yesterday", 10.0, 1, "completed"),  # unparseable_ts
            (5, "u1", "2026-07-01 00:00:00", 10.0, 1, "completed"),  # future_ts
            (6, "u1", ts, -3.0, 1, "completed"),  # negative_amount
            (7, "u2", ts, 5.0, 2, "refunded"),  # good
            (7, "u2", ts, 5.0, 2, "refunded"),  # exact_duplicate
            (8, "u1", ts, None, 1, "completed"),  # bad_amount (missing)
            (9, "u1", ts, 10.0, 1, "lost"),  # unknown_status
        ],
        "order_id long, user_id string, order_ts string, amount double, n_items int, status string",
        f"{lake}/orders",
    )
    _write(
        spark,
        [("u1", ts, "view"), ("u1", ts, "teleport"), (" ", ts, "cart")],
        "user_id string, event_ts string, event_type string",
        f"{lake}/events",
    )
    _write(spark, [("u1", ts, 5), ("u1", ts, 9)], "user_id string, review_ts string, rating int", f"{lake}/reviews")
    res = ingest(spark, cfg, "run-1", CLOCK)
    o, e, r = res.counts["orders"], res.counts["events"], res.counts["reviews"]
    assert o.by_reason == {
        "null_user_id": 1,
        "null_ts": 1,
        "unparseable_ts": 1,
        "future_ts": 1,
        "bad_amount": 1,
        "negative_amount": 1,
        "unknown_status": 1,
        "exact_duplicate": 1,
    }
    assert (o.rows_in, o.used, o.quarantined, o.deduplicated) == (10, 2, 7, 1)
    assert e.by_reason == {"unknown_event_type": 1, "null_user_id": 1} and e.used == 1
    assert r.by_reason == {"bad_rating": 1} and r.used == 1
    assert all(c.balanced for c in res.counts.values())
    assert res.tables["orders"].count() == 2
    n = write_quarantine(res, cfg.quarantine_path, "run-1")
    q = spark.read.format("delta").load(cfg.quarantine_path)
    assert q.count() == n == 11
    row = q.where("reason = 'negative_amount'").first()
    assert row.source == "orders" and '"amount":-3.0' in row.raw_row and row.run_id == "run-1"
    # a rerun of the same run id replaces its own rows instead of duplicating them
    write_quarantine(res, cfg.quarantine_path, "run-1")
    assert spark.read.format("delta").load(cfg.quarantine_path).count() == 11


def test_csv_malformed_lines_bad_types_and_timestamp_formats(spark, tmp_path):
    cfg = _orders_only(
        tmp_path,
        "sources.orders.format=csv",
        "sources.orders.timestamp_format=dd/MM/yyyy HH:mm",
        "validation.max_bad_fraction=0.9",
    )
    d = tmp_path / "lake" / "orders"
    d.mkdir(parents=True)
    (d / "part-0.csv").write_text(
        "order_id,user_id,order_ts,amount,n_items,status\n"
        "1,u1,01/05/2026 10:00,10.0,1,completed\n"
        "2,u1,02/05/2026 10:00,ten,1,completed\n"  # bad_amount (wrong type)
        "3,u1,03/05/2026 10:00,10.0,1,completed,extra\n"  # too many fields
        "4,u1\n"  # too few fields
        "5,u2,2026-05-01,3.0,1,completed\n"
    )  # wrong timestamp format
    res = ingest(spark, cfg, "r", CLOCK)
    c = res.counts["orders"]
    assert c.by_reason == {"bad_amount": 1, "malformed_row": 2, "unparseable_ts": 1}
    assert c.used == 1 and c.balanced
    got = res.tables["orders"].first()
    assert got.ts == dt.datetime(2026, 5, 1, 10, 0)


def test_quarantined_rows_keep_their_source_row_and_only_they_are_turned_into_json(spark, tmp_path):
    """raw_row is the source row as read (its own column names, also where they equal canonical ones; a malformed CSV
    line as written), good rows carry none, and the plan builds JSON only under ``reason IS NOT NULL``."""
    cfg = _orders_only(tmp_path, "sources.orders.format=csv", "validation.max_bad_fraction=0.9")
    d = tmp_path / "lake" / "orders"
    d.mkdir(parents=True)
    (d / "part-0.csv").write_text(
        "order_id,user_id,order_ts,amount,n_items,status\n"
        "1,u1,2026-05-01 10:00:00,10.0,1,completed\n"
        "2,u1,2026-05-02 10:00:00,-4.5,1,completed\n"  # negative_amount
        "3,u1\n"  # malformed
    )

    def projections(node):
        if node.getClass().getSimpleName() == "Project":
            exprs = node.projectList()
            yield from (exprs.apply(i).toString() for i in range(exprs.size()))
        children = node.children()
        for i in range(children.size()):
            yield from projections(children.apply(i))

    plan = canonicalize(read_source(spark, cfg, "orders")[0], cfg, "orders", CLOCK)._jdf.queryExecution()
    with_json = [e for e in projections(plan.optimizedPlan()) if "to_json(" in e]
    res = ingest(spark, cfg, "r", CLOCK)
    got = {r.reason: r._raw for r in res.cached[0].collect()}
    assert got[None] is None
    assert json.loads(got["negative_amount"]) == {
        "order_id": "2",
        "user_id": "u1",
        "order_ts": "2026-05-02 10:00:00",
        "amount": "-4.5",
        "n_items": "1",
        "status": "completed",
    }
    assert got["malformed_row"] == "3,u1"
    assert with_json and all(e.startswith("CASE WHEN isnotnull(reason") for e in with_json), with_json


def test_naive_timestamps_use_the_source_timezone_and_aware_ones_keep_their_offset(spark, tmp_path):
    cfg = _orders_only(tmp_path, "sources.orders.timezone=Europe/Berlin")
    _write(
        spark,
        [
            (1, "u1", "2026-05-01 12:00:00", 1.0, 1, "completed"),
            (2, "u2", "2026-05-01T12:00:00+00:00", 1.0, 1, "completed"),
        ],
        "order_id long, user_id string, order_ts string, amount double, n_items int, status string",
        f"{cfg.lake_dir}/orders",
    )
    got = {r.user_id: r.ts for r in ingest(spark, cfg, "r", CLOCK).tables["orders"].collect()}
    assert got == {"u1": dt.datetime(2026, 5, 1, 10, 0), "u2": dt.datetime(2026, 5, 1, 12, 0)}


def test_integer_ids_and_date_typed_timestamps(spark, tmp_path):
    cfg = _orders_only(tmp_path, "sources.orders.columns.ts=day")
    _write(
        spark,
        [(1, 42, dt.date(2026, 5, 1), 1.0, 1, "completed")],
        "order_id long, user_id long, day date, amount double, n_items int, status string",
        f"{cfg.lake_dir}/orders",
    )
    row = ingest(spark, cfg, "r", CLOCK).tables["orders"].first()
    assert row.user_id == "42" and row.ts == dt.datetime(2026, 5, 1)


def test_too_many_bad_rows_stops_before_writing(spark, tmp_path):
    cfg = _orders_only(tmp_path, "validation.max_bad_fraction=0.2")
    _write(
        spark,
        [(1, None, "2026-05-01", 1.0, 1, "completed"), (2, "u", "2026-05-01", 1.0, 1, "completed")],
        "order_id long, user_id string, order_ts string, amount double, n_items int, status string",
        f"{cfg.lake_dir}/orders",
    )
    with pytest.raises(BadInputError) as e:
        ingest(spark, cfg, "r", CLOCK)
    assert "orders" in str(e.value) and "max_bad_fraction" in str(e.value) and "null_user_id" in str(e.value)


def test_missing_source_path_and_missing_column_are_clear_errors(spark, tmp_path):
    cfg = _orders_only(tmp_path)
    with pytest.raises(ConfigError, match="sources.orders.path"):
        ingest(spark, cfg, "r", CLOCK)
    _write(
        spark,
        [(1, "u", "2026-05-01", 1.0)],
        "order_id long, customer string, order_ts string, amount double",
        f"{cfg.lake_dir}/orders",
    )
    with pytest.raises(BadInputError) as e:
        ingest(spark, cfg, "r", CLOCK)
    assert "'user_id'" in str(e.value) and "sources.orders.columns.user_id" in str(e.value)


def test_empty_orders_source_is_an_error(spark, tmp_path):
    cfg = _orders_only(tmp_path)
    _write(spark, [], "order_id long, user_id string, order_ts string, amount double", f"{cfg.lake_dir}/orders")
    with pytest.raises(BadInputError, match="empty"):
        ingest(spark, cfg, "r", CLOCK)


def test_negative_or_unparseable_item_counts_are_quarantined(spark, tmp_path):
    cfg = _orders_only(tmp_path, "validation.max_bad_fraction=0.9")
    _write(
        spark,
        [
            (1, "u1", "2026-05-01", 1.0, "2", "completed"),
            (2, "u1", "2026-05-01", 1.0, "-1", "completed"),
            (3, "u1", "2026-05-01", 1.0, "some", "completed"),
            (4, "u1", "2026-05-02", 1.0, None, "completed"),
        ],
        "order_id long, user_id string, order_ts string, amount double, n_items string, status string",
        f"{cfg.lake_dir}/orders",
    )
    res = ingest(spark, cfg, "r", CLOCK)
    assert res.counts["orders"].by_reason == {"bad_n_items": 2} and res.counts["orders"].balanced
    assert sorted(r.n_items for r in res.tables["orders"].collect()) == [1.0, 2.0]  # a missing count means one item


ORDERS = "order_id long, user_id string, order_ts string, amount double, n_items int, status string"


def test_statuses_outside_the_configured_ones_are_quarantined(spark, tmp_path):
    cfg = _orders_only(tmp_path, "validation.max_bad_fraction=0.9")
    _write(
        spark,
        [
            (1, "u1", "2026-05-01", 1.0, 1, "completed"),
            (2, "u1", "2026-05-01", 1.0, 1, " Refunded "),
            (3, "u1", "2026-05-01", 1.0, 1, "CANCELLED"),
            (4, "u1", "2026-05-01", 1.0, 1, "shipped"),
            (5, "u1", "2026-05-01", 1.0, 1, None),
            (6, "u1", "2026-05-01", 1.0, 1, ""),
        ],
        ORDERS,
        f"{cfg.lake_dir}/orders",
    )
    res = ingest(spark, cfg, "r", CLOCK)
    assert res.counts["orders"].by_reason == {"unknown_status": 3} and res.counts["orders"].balanced
    assert sorted(r.status for r in res.tables["orders"].collect()) == ["cancelled", "completed", "refunded"]
    # a status the operator declares is no longer unknown
    cfg = _orders_only(tmp_path, "validation.max_bad_fraction=0.9", "validation.purchase_statuses=[completed, Shipped]")
    assert ingest(spark, cfg, "r", CLOCK).counts["orders"].by_reason == {"unknown_status": 2}


def test_orders_without_a_status_column_are_all_purchases(spark, tmp_path):
    cfg = _orders_only(tmp_path)
    _write(
        spark,
        [(1, "u1", "2026-05-01", 1.0), (2, "u2", "2026-05-02", 2.0)],
        "order_id long, user_id string, order_ts string, amount double",
        f"{cfg.lake_dir}/orders",
    )
    res = ingest(spark, cfg, "r", CLOCK)
    assert res.counts["orders"].by_reason == {} and res.counts["orders"].used == 2
    assert {r.status for r in res.tables["orders"].collect()} == {"completed"}


def test_missing_amount_is_a_bad_amount(spark, tmp_path):
    cfg = _orders_only(tmp_path, "validation.max_bad_fraction=0.9")
    _write(
        spark,
        [(1, "u1", "2026-05-01", 4.5, 1, "completed"), (2, "u1", "2026-05-02", None, 1, "completed")],
        ORDERS,
        f"{cfg.lake_dir}/orders",
    )
    res = ingest(spark, cfg, "r", CLOCK)
    assert res.counts["orders"].by_reason == {"bad_amount": 1} and res.counts["orders"].balanced
    assert [r.amount for r in res.tables["orders"].collect()] == [4.5]


def test_naive_values_ignore_the_session_time_zone(spark, tmp_path):
    """Strings, dates and TIMESTAMP_NTZ are wall clocks of the source zone, whatever spark.sql.session.timeZone is;
    the future check compares with midnight UTC of the clock."""
    cfg = _orders_only(tmp_path, "sources.orders.timezone=Europe/Berlin", "validation.max_bad_fraction=0.9")
    _write(
        spark,
        [
            (1, "u1", "2026-05-01 12:00:00", 1.0, 1, "completed"),
            (2, "u2", "2026-05-01T12:00:00+00:00", 1.0, 1, "completed"),
            (3, "u3", "2026-06-01 01:30:00", 1.0, 1, "completed"),  # 23:30 UTC May 31: not in the future
            (4, "u4", "2026-06-01 02:30:00", 1.0, 1, "completed"),
        ],  # 00:30 UTC June 1: future
        ORDERS,
        f"{cfg.lake_dir}/orders",
    )
    utc = make_config(
        tmp_path / "utc",
        "sources.events=null",
        "sources.reviews=null",
        "sources.orders.columns.ts=day",
        "sources.users.columns.ts=seen",
    )
    _write(
        spark,
        [(1, "u1", dt.date(2026, 5, 1), 1.0, 1, "completed")],
        "order_id long, user_id string, day date, amount double, n_items int, status string",
        f"{utc.lake_dir}/orders",
    )
    _write(
        spark,
        [("u1", dt.datetime(2026, 5, 1, 23, 30), "DE", "ads")],
        "user_id string, seen timestamp_ntz, country string, channel string",
        f"{utc.lake_dir}/users",
    )
    before = spark.conf.get("spark.sql.session.timeZone")
    try:
        spark.conf.set("spark.sql.session.timeZone", "Europe/Paris")
        res = ingest(spark, cfg, "r", CLOCK)
        got = {r.user_id: r.ts for r in res.tables["orders"].collect()}
        assert res.counts["orders"].by_reason == {"future_ts": 1}
        typed = ingest(spark, utc, "r", CLOCK)
        typed_ts = typed.tables["orders"].select("ts").collect() + typed.tables["users"].select("ts").collect()
    finally:
        spark.conf.set("spark.sql.session.timeZone", before)
    # collected timestamps are naive datetimes in the driver's zone: compare instants
    epoch = {u: int(t.timestamp()) for u, t in got.items()}
    assert epoch == {"u1": _utc(2026, 5, 1, 10), "u2": _utc(2026, 5, 1, 12), "u3": _utc(2026, 5, 31, 23, 30)}
    assert [int(r.ts.timestamp()) for r in typed_ts] == [_utc(2026, 5, 1), _utc(2026, 5, 1, 23, 30)]


def _utc(*parts) -> int:
    return int(dt.datetime(*parts, tzinfo=dt.timezone.utc).timestamp())
