"""Jobs: one per step of the toolkit, each an MLflow run; ``python -m pipelines --help`` lists them."""
