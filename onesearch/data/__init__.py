"""Datasets as validated polars tables: schemas, loaders, splits, the search set and the synthetic world."""
