"""trackflow: tracked ML pipelines on Prefect 3 and MLflow."""

__version__ = "0.1.0"
