"""Preference alignment of the generator: interaction levels, a LightGBM reward model, list-wise DPO.

- :mod:`onesearch.align.levels`: per search request, the levelled items (purchased > purchased elsewhere > clicked
  > shown > same category > random) derived from the logs.
- :mod:`onesearch.align.reward`: click and purchase propensities over the cascade ranker's features, plus query-item
  relevance, combined into one reward.
- :mod:`onesearch.align.dpo`: the list-wise DPO loss, sequence log-probabilities, preference lists and the trainer.
- :mod:`onesearch.align.pipeline`: :func:`~onesearch.align.pipeline.align_bundle`, the stages over a dataset.

The job is ``python -m pipelines align`` (``docs/alignment.md``).
"""
