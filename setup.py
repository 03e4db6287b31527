"""churn-spark: churn early-warning on Spark (behaviour sequences, Horovod-trained CNN+RNN, Delta risk table)."""

from setuptools import find_namespace_packages, setup

setup(
    name="churn-spark",
    version="0.1.0",
    description="Churn early-warning system for e-commerce platforms as distributed Spark batch jobs",
    # churn_spark has no __init__.py (a namespace package, also shipped as a zip): find_packages would find nothing
    packages=find_namespace_packages(include=["churn_spark", "churn_spark.*"], exclude=["*.__pycache__"]),
    package_data={"churn_spark": ["templates/*.j2"]},  # the report page template
    python_requires=">=3.11,<3.12",
    install_requires=[
        "pyspark>=3.5.3,<3.6",
        "delta-spark>=3.3,<3.4",
        "tensorflow-cpu==2.15.1",
        "numpy==1.26.4",
        "pandas>=2.1,<2.2",
        "pyarrow==10.0.1",
        "scikit-learn",
        "mlflow",
        "jinja2>=3",
        "pyyaml",
        "pydantic>=2",
        "matplotlib",
        "horovod[spark]==0.28.1",
    ],
    extras_require={"test": ["pytest"]},
    entry_points={"console_scripts": ["churn-spark=churn_spark.cli:main"]},
)
