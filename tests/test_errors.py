"""Exit codes a scheduler acts on: 2 = bad input (do not retry), 3 = transient (retry), 1 = bug."""

from churn_spark.config import ConfigError
from churn_spark.errors import EXIT_BAD_INPUT, EXIT_BUG, EXIT_TRANSIENT, exit_code
from churn_spark.lake import BadInputError
from churn_spark.pipeline import StepFailed
from churn_spark.score import ScoringError
from churn_spark.train import NotEnoughData, RanksFailed


def _wrapped(inner: BaseException) -> StepFailed:
    try:
        try:
            raise inner
        except BaseException as e:
            raise StepFailed("weekly run: step failed") from e
    except StepFailed as outer:
        return outer


def test_bad_input_is_2_transient_is_3_anything_else_is_1():
    assert exit_code(ConfigError("key 'x' in f")) == EXIT_BAD_INPUT
    assert exit_code(BadInputError("unreadable")) == EXIT_BAD_INPUT
    assert exit_code(NotEnoughData("11 users")) == EXIT_BAD_INPUT
    assert exit_code(ScoringError("contract")) == EXIT_BAD_INPUT
    assert exit_code(RanksFailed("rank 1 lost")) == EXIT_TRANSIENT
    assert exit_code(ConnectionResetError()) == EXIT_TRANSIENT
    assert exit_code(KeyError("bug")) == EXIT_BUG


def test_weekly_keeps_the_code_of_the_failed_step():
    assert exit_code(_wrapped(NotEnoughData("x"))) == EXIT_BAD_INPUT
    assert exit_code(_wrapped(RanksFailed("x"))) == EXIT_TRANSIENT
    assert exit_code(_wrapped(ValueError("x"))) == EXIT_BUG
