"""The trained bundle as a real MLflow Model (pyfunc, "models from code"): no pickle, checksums still verified.

``mlflow.pyfunc.load_model("models:/<name>/<version>")`` and ``mlflow models predict`` work on every registered
version. The model directory holds ``MLmodel``, the code file ``pyfunc_entry.py`` (which defines the model, so
nothing is pickled), the project package (``code_paths``) and the bundle as an artifact; loading verifies the
bundle's SHA-256 manifest exactly like the Spark scorer does. Input: feature rows (``sequence`` + static columns);
output: ``churn_probability`` (calibrated) and ``raw_score``.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

import pandas as pd

BUNDLE_ARTIFACT = "bundle"
ENTRY = Path(__file__).with_name("pyfunc_entry.py")


def _python_model_class():
    import mlflow.pyfunc

    class ChurnModel(mlflow.pyfunc.PythonModel):
        """Feature rows in, calibrated probability and raw score out, through the project's own preprocessing."""

        def load_context(self, context):
            from churn_spark.bundle import load_bundle

            self.bundle = load_bundle(context.artifacts[BUNDLE_ARTIFACT])

        def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
            from churn_spark.predict import probabilities

            b = self.bundle
            # sequences as lists or arrays: preprocess.raw_matrix takes either
            raw, p = probabilities(b, model_input, b.stats.inputs(model_input))
            return pd.DataFrame({"churn_probability": p, "raw_score": raw})

    return ChurnModel


def save_pyfunc(bundle_dir: str, path: str) -> str:
    """Write an MLflow pyfunc model wrapping ``bundle_dir`` at ``path`` (replaced if present)."""
    import mlflow.pyfunc

    from ..bundle import verify_bundle

    verify_bundle(bundle_dir)
    shutil.rmtree(path, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        package = _package_dir(Path(tmp))
        mlflow.pyfunc.save_model(
            path,
            python_model=str(package / ENTRY.relative_to(Path(__file__).parent.parent)),
            artifacts={BUNDLE_ARTIFACT: bundle_dir},
            code_paths=[str(package)],
            pip_requirements=_requirements(),
        )
    return path


def _package_dir(tmp: Path) -> Path:
    """The churn_spark package as a directory. Under spark-submit ``--py-files churn_spark.zip`` it is imported from
    a zip, which MLflow cannot copy as code: the package's files are then extracted to ``tmp`` first."""
    package = Path(__file__).parent.parent
    if package.is_dir():
        return package.resolve()
    archive = next((p for p in package.parents if p.is_file() and zipfile.is_zipfile(p)), None)
    if archive is None:
        raise RuntimeError(f"cannot locate the churn_spark package files (loaded from {package})")
    inner = package.relative_to(archive).as_posix() + "/"  # e.g. "churn_spark/"
    with zipfile.ZipFile(archive) as z:
        for name in z.namelist():
            if name.startswith(inner) and not name.endswith("/"):
                target = tmp / "churn_spark" / name[len(inner) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(z.read(name))
    return tmp / "churn_spark"


def _requirements() -> list:
    from importlib.metadata import version

    return [
        f"{p}=={version(p)}"
        for p in ("tensorflow-cpu", "numpy", "pandas", "scikit-learn", "mlflow", "pydantic", "pyyaml")
    ]


def bundle_dir_of(model_dir: str) -> str:
    """The bundle inside a downloaded registered version (an MLflow model dir, or a plain bundle of older runs)."""
    import yaml

    d = Path(model_dir)
    if not (d / "MLmodel").is_file():
        return str(d)
    flavor = yaml.safe_load((d / "MLmodel").read_text())["flavors"]["python_function"]
    return str(d / flavor["artifacts"][BUNDLE_ARTIFACT]["path"])
