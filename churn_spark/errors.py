"""Exit codes a scheduler can act on, decided from the exception that ended a job.

* 2 = bad input or configuration (a config key, a missing bucket or refused credentials, unreadable or invalid
  source data, too little data, a model that does not fit the features, a corrupt model): retrying the same
  command cannot help, a person must act.
* 3 = transient infrastructure (storage or network I/O, a lost executor or Horovod rank, a concurrent Delta commit
  that kept conflicting, another run holding the run lock): retry later.
* 1 = anything else, i.e. a bug.

The whole ``__cause__`` chain is inspected, so a step failure wrapped by ``weekly`` keeps its step's code.
"""

from __future__ import annotations

EXIT_OK, EXIT_BUG, EXIT_BAD_INPUT, EXIT_TRANSIENT = 0, 1, 2, 3


class BadInput(Exception):
    """Mixin for errors a retry cannot fix (exit 2)."""


class Transient(Exception):
    """Mixin for errors a retry may fix (exit 3)."""


def _bad_input_types() -> tuple:
    from .bundle import ModelIntegrityError
    from .config import ConfigError
    from .lake import BadInputError
    from .storage import StorageRefused

    return (BadInput, ConfigError, BadInputError, ModelIntegrityError, StorageRefused)


def _transient_types() -> tuple:
    from .storage import StorageUnreachable

    types = [Transient, ConnectionError, TimeoutError, StorageUnreachable]
    try:
        from py4j.protocol import Py4JNetworkError

        types.append(Py4JNetworkError)
    except ImportError:  # pragma: no cover - py4j ships with pyspark
        pass
    return tuple(types)


_TRANSIENT_JAVA = (
    "java.io.IOException",
    "java.net.",
    "org.apache.spark.SparkException: Job aborted due to stage " "failure: Task",
    "ExecutorLostFailure",
    "ConcurrentModificationException",
    "ConcurrentAppend",
    "java.util.concurrent.TimeoutException",
)


def exit_code(exc: BaseException) -> int:
    """2, 3 or 1 for an exception (see the module docstring)."""
    bad, transient = _bad_input_types(), _transient_types()
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, bad):
            return EXIT_BAD_INPUT
        if isinstance(e, transient):
            return EXIT_TRANSIENT
        text = str(e)
        if type(e).__name__ in ("Py4JJavaError", "SparkRuntimeException") or "java." in text[:200]:
            if any(marker in text for marker in _TRANSIENT_JAVA):
                return EXIT_TRANSIENT
        e = e.__cause__ or e.__context__
    return EXIT_BUG
