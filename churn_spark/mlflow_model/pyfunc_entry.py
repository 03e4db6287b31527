"""MLflow "models from code" entry point: defines the pyfunc model without pickling it (see the package docstring)."""

import mlflow

from churn_spark.mlflow_model import _python_model_class

mlflow.models.set_model(_python_model_class()())
