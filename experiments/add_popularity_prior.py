"""Give a trained generator bundle the popularity prior, with its weight picked on validation, without retraining.

A bundle that has the prior already gets its weight picked again on the current grid.

    .venv/bin/python experiments/add_popularity_prior.py BUNDLE OUT [--eval-examples 3000] [--seed 0] [--dataset D]

The prior is a decoding-time lever (``--popularity-prior`` of train-generator): the final ranking is by
``score − w · log(1 + training purchases)``. Training is unchanged by it, so adding it to a bundle trained without
it gives exactly the model that ``--popularity-prior`` would have trained, and isolates the lever in an ablation.
Counts are the purchases of the bundle's task's training split; ``w`` is picked by
:func:`onesearch.model.train.tune_popularity_weight` on the same validation sample training uses. Writes the new
bundle to OUT and prints the grid as one JSON line.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from onesearch.data.registry import load_dataset
from onesearch.decode import SIDTrie
from onesearch.model import generator as G
from onesearch.model.bundle import GeneratorBundle
from onesearch.model.data import item_purchase_counts, recommend_examples, search_examples
from onesearch.model.train import TrainConfig, tune_popularity_weight


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("out")
    ap.add_argument("--eval-examples", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--dataset", default="", help="dataset name or folder (default: the one the bundle records)"
    )
    args = ap.parse_args()
    b = GeneratorBundle.load(args.bundle)
    ds = load_dataset(args.dataset or b.meta["dataset"])
    task = b.meta["task"]
    m = b.model
    H, Q = m.cfg.max_history, m.cfg.max_query_tokens
    if task == "search":
        splits = search_examples(ds, b.table, b.vocab, H, Q, "recommend" in b.meta.get("tasks", []))
    else:
        splits = recommend_examples(ds, b.table, H, Q)
    counts = item_purchase_counts(ds, b.table, task)
    cfg = replace(m.cfg, popularity_prior=True, popularity_weight=0.0)
    new = G.Generator(cfg, m.item_codes[:-1], getattr(m, "item_tokens", None), counts)
    missing, unexpected = new.load_state_dict(m.state_dict(), strict=False)
    if missing not in ([], ["item_log_pop"]) or unexpected:  # [] : the bundle has the prior; it is re-tuned
        raise SystemExit(f"unexpected state: missing {missing}, unexpected {unexpected}")
    new.eval()
    trie = SIDTrie.build(b.table.codes, b.table.codebook_sizes)
    tcfg = TrainConfig(eval_examples=args.eval_examples, seed=args.seed)
    w, grid = tune_popularity_weight(new, splits.valid, trie, tcfg)
    meta = {
        k: v
        for k, v in b.meta.items()
        if k not in ("config", "sid_hash", "vocab_hash", "weights_sha256", "params", "format")
    }
    meta |= {
        "popularity_weight": w,
        "popularity_grid": {str(k): v for k, v in grid.items()},
        "prior_from": args.bundle,
    }
    GeneratorBundle(new, b.table, b.vocab, {}).save(args.out, extra=meta)
    print(json.dumps({"popularity_weight": w, "grid": grid}))


if __name__ == "__main__":
    main()
