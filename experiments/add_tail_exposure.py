"""Give a trained generator bundle long-tail and new-item exposure, set on validation, without retraining.

    .venv/bin/python experiments/add_tail_exposure.py BUNDLE OUT [--budget 0.01] [--eval-examples 3000] [--seed 0]

The bundle must hold the popularity prior (``--popularity-prior`` of train-generator, or
``experiments/add_popularity_prior.py``): its purchase counts say which items are head. Long-tail exposure is a
decoding-time lever (``--tail-budget`` of train-generator): training is unchanged by it, so adding it to a trained
bundle gives exactly the model that ``--tail-budget`` would have trained, and isolates the lever in an ablation.
The boosts and the score temperature are set by :func:`onesearch.model.train.tune_exposure` on the validation
sample training uses. Writes the new bundle to OUT and prints the grid as one JSON line.
"""

from __future__ import annotations

import argparse
import json

from onesearch.data.registry import load_dataset
from onesearch.decode import SIDTrie
from onesearch.model.bundle import GeneratorBundle
from onesearch.model.data import recommend_examples, search_examples
from onesearch.model.train import TAIL_BUDGET, TrainConfig, exposure_meta, tune_exposure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("out")
    ap.add_argument(
        "--budget", type=float, default=TAIL_BUDGET, help="share of validation recall@10 to give up"
    )
    ap.add_argument("--eval-examples", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0, help="seed of the validation sample: the training seed")
    ap.add_argument(
        "--dataset", default="", help="dataset name or folder (default: the one the bundle records)"
    )
    args = ap.parse_args()
    b = GeneratorBundle.load(args.bundle)
    if not b.model.cfg.popularity_prior:
        raise SystemExit(
            f"{args.bundle}: no popularity prior; add it first (experiments/add_popularity_prior.py)"
        )
    ds = load_dataset(args.dataset or b.meta["dataset"])
    task = b.meta["task"]
    m = b.model.eval()
    H, Q = m.cfg.max_history, m.cfg.max_query_tokens
    if task == "search":
        splits = search_examples(ds, b.table, b.vocab, H, Q, "recommend" in b.meta.get("tasks", []))
    else:
        splits = recommend_examples(ds, b.table, H, Q)
    trie = SIDTrie.build(b.table.codes, b.table.codebook_sizes)
    tcfg = TrainConfig(eval_examples=args.eval_examples, seed=args.seed)
    tuned = exposure_meta(tune_exposure(m, splits.valid, trie, tcfg, budget=args.budget))
    meta = {
        k: v
        for k, v in b.meta.items()
        if k not in ("config", "sid_hash", "vocab_hash", "weights_sha256", "params", "format")
    }
    meta |= tuned | {"tail_from": args.bundle}
    GeneratorBundle(m, b.table, b.vocab, {}).save(args.out, extra=meta)
    print(json.dumps(tuned))


if __name__ == "__main__":
    main()
