"""Config loading: profiles, overrides, and every error path names the key and the file."""

from pathlib import Path

import pytest
from conftest import REPO

from churn_spark.config import ConfigError, load_config


def test_default_and_profiles_load():
    cfg = load_config([str(REPO / "conf" / "local.yaml")])
    assert cfg.spark.master == "local[2]"
    assert cfg.spark.conf["spark.sql.session.timeZone"] == "UTC"  # merged from default.yaml
    assert cfg.spark.conf["spark.sql.shuffle.partitions"] == "4"  # overridden by the profile
    assert set(cfg.sources) == {"orders", "events", "reviews", "users"}
    cluster = load_config([str(REPO / "conf" / "cluster.yaml")])
    assert cluster.spark.master is None and cluster.training.num_proc == 4


def test_set_overrides_typed_values(tmp_path):
    cfg = load_config(
        None,
        [
            f"work_dir={tmp_path}",
            "training.epochs=3",
            "spark.conf.spark.sql.shuffle.partitions=2",
            "sources.orders.columns.ts=created_at",
            "registry.gate_margin=0.01",
        ],
    )
    assert cfg.training.epochs == 3 and cfg.registry.gate_margin == 0.01
    assert cfg.spark.conf["spark.sql.shuffle.partitions"] == "2"
    assert cfg.sources["orders"].columns["ts"] == "created_at"
    assert cfg.sources["orders"].columns["user_id"] == "user_id"  # the rest of the mapping is kept
    assert cfg.risk_table_path == str(Path(tmp_path, "tables", "churn_risk"))


def test_unknown_key_names_key_and_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("training:\n  epochz: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config([str(f)])
    assert "training.epochz" in str(e.value) and str(f) in str(e.value) and "unknown key" in str(e.value)


def test_wrong_type_names_key_and_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("sequence:\n  n_buckets: many\n")
    with pytest.raises(ConfigError) as e:
        load_config([str(f)])
    assert "sequence.n_buckets" in str(e.value) and str(f) in str(e.value)


@pytest.mark.parametrize(
    "trial, named",
    [("{num_proc: 4}", "search[0].num_proc cannot be searched"), ("{dropout: 1.5}", "dropout")],
)
def test_a_search_trial_that_cannot_run_names_the_key_and_file(tmp_path, trial, named):
    """A trial may only change the network's settings, and each trial must be a valid training config itself."""
    from churn_spark.search import trials

    f = tmp_path / "search.yaml"
    f.write_text(f"training:\n  search:\n    - {trial}\n")
    try:
        cfg = load_config([str(f)])
    except ConfigError as e:  # refused at load time, naming the file
        assert "training.search" in str(e) and named in str(e) and str(f) in str(e)
        return
    with pytest.raises(ValueError, match=named):  # or when the trial is built, before any training
        trials(cfg.training)


def test_search_trials_start_with_the_configured_settings():
    from churn_spark.search import trials

    cfg = load_config(None, ["training.search=[{rnn_units: 8}, {class_weight: false, learning_rate: 0.01}]"])
    got = trials(cfg.training)
    assert [t.overrides for t in got] == [{}, {"rnn_units": 8}, {"class_weight": False, "learning_rate": 0.01}]
    assert got[0].settings.rnn_units == cfg.training.rnn_units and got[1].settings.rnn_units == 8
    assert not got[2].settings.class_weight and got[2].settings.rnn_units == cfg.training.rnn_units


def test_wrong_type_from_set_names_the_override():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["training.batch_size=-5"])
    assert "training.batch_size" in str(e.value) and "--set training.batch_size=-5" in str(e.value)


def test_missing_config_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config([str(tmp_path / "nope.yaml")])
    f = tmp_path / "broken.yaml"
    f.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config([str(f)])


def test_orders_source_is_required(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("sources:\n  orders: null\n")
    with pytest.raises(ConfigError):
        load_config([str(f)], include_default=False)


def test_source_path_cannot_escape_the_lake_root(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"work_dir={tmp_path}", "sources.orders.path=${lake_root}/../../etc"])
    assert "sources.orders.path" in str(e.value) and "outside the lake root" in str(e.value)


def test_missing_source_path_is_reported_with_key(tmp_path):
    from churn_spark.locations import require_source_exists

    cfg = load_config(None, [f"work_dir={tmp_path}"])
    with pytest.raises(ConfigError) as e:
        require_source_exists(cfg, "events")
    assert "sources.events.path" in str(e.value) and "does not exist" in str(e.value)
