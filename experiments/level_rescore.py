"""Where a generator's test hits land, and whether re-weighting its per-level log-probabilities helps.

    .venv/bin/python experiments/level_rescore.py BUNDLE [--dataset beauty] [--beam 50]

Decodes the validation and test splits of a recommend bundle (constrained beam search), takes every candidate's
per-level log-probabilities (:func:`onesearch.model.beam.level_logprobs`), and reports: the ranking metrics; the rank
histogram of the hits; how many leading codes the rank-1 item shares with the target when the target is ranked
2..20; and the level weights ``w`` of the score ``Σ_l w_l log p(c_l | c_<l)`` that maximise validation ndcg@10 on
a grid (level 0 fixed at 1), with the test metrics under those weights. Weights all 1 are the model's own joint
log-probability. Results are printed as JSON lines.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys

import numpy as np

from onesearch.data.registry import load_dataset
from onesearch.metrics import ranking_metrics, target_ranks
from onesearch.model.beam import beam_search, level_logprobs
from onesearch.model.bundle import GeneratorBundle
from onesearch.model.data import Examples, recommend_examples


def decode_levels(bundle: GeneratorBundle, ex: Examples, beam: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, beam) candidate items and (n, beam, L) their per-level log-probabilities."""
    m, codes = bundle.model, bundle.model.item_codes
    order = np.argsort(ex.history_lengths(), kind="stable")
    items = np.zeros((ex.size, beam), np.int64)
    lv = np.zeros((ex.size, beam, m.cfg.levels), np.float32)
    for s in range(0, ex.size, 256):
        idx = order[s : s + 256]
        b = ex.batch(idx)
        out = beam_search(m, b, bundle.trie, beam=beam, k=beam)
        items[idx] = out.items.numpy()
        lv[idx] = level_logprobs(m, b, codes, out.items).numpy()
    return items, lv


def rescored(items: np.ndarray, lv: np.ndarray, target: np.ndarray, w) -> dict:
    pad = items < 0  # fewer candidates than the beam: -inf at every level, kept last whatever the weights
    s = np.where(pad[..., None], 0.0, lv) @ np.asarray(w, np.float32)
    s[pad] = -np.inf
    o = np.argsort(-s, axis=1, kind="stable")
    return ranking_metrics(target_ranks(np.take_along_axis(items, o, 1), target), ks=(5, 10, 20))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--dataset", default="beauty")
    ap.add_argument("--beam", type=int, default=50)
    a = ap.parse_args(argv)
    if a.beam < 20:
        ap.error(f"--beam must be at least 20 (ranks up to 20 are reported), got {a.beam}")
    bundle = GeneratorBundle.load(a.bundle)
    if bundle.meta.get("task") != "recommend":
        ap.error(f"{a.bundle}: a recommend bundle is needed, this one serves {bundle.meta.get('task')!r}")
    mc = bundle.model.cfg
    splits = recommend_examples(load_dataset(a.dataset), bundle.table, mc.max_history, mc.max_query_tokens)
    codes = bundle.model.item_codes.numpy()
    L = mc.levels
    got = {}
    for split in ("valid", "test"):
        ex = getattr(splits, split)
        print(f"[level_rescore] decoding {ex.size} {split} requests", file=sys.stderr, flush=True)
        items, lv = decode_levels(bundle, ex, a.beam)
        got[split] = (items, lv, ex.target)
        r = target_ranks(items, ex.target)
        low = (r >= 2) & (r <= 20)
        share = [
            float((codes[ex.target[low], : j + 1] == codes[items[low, 0], : j + 1]).all(1).mean())
            for j in range(L)
        ]
        print(
            json.dumps(
                {
                    "split": split,
                    "beam": a.beam,
                    "metrics": rescored(items, lv, ex.target, [1.0] * L),
                    "hits_by_rank_1_to_10": np.bincount(np.clip(r, 0, 11), minlength=12)[1:11].tolist(),
                    "hits_at_rank_2_to_20": int(low.sum()),
                    "rank1_shares_first_j_codes_with_target": dict(zip(range(1, L + 1), share, strict=True)),
                }
            )
        )
    iv, lvv, tv = got["valid"]
    mid, last = (0.5, 0.75, 1.0, 1.25, 1.5), (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
    grid = [(1.0, *w) for w in itertools.product(*([mid] * (L - 2)), last)]
    if len(grid) > 20000:
        raise SystemExit(f"{L} levels give a {len(grid)}-point grid; this script is meant for up to 6 levels")
    best = max(grid, key=lambda w: rescored(iv, lvv, tv, w)["ndcg@10"])
    it, lt, tt = got["test"]
    print(
        json.dumps(
            {
                "grid_points": len(grid),
                "best_valid_weights": best,
                "valid_ndcg@10": rescored(iv, lvv, tv, best)["ndcg@10"],
                "test": rescored(it, lt, tt, best),
                "test_last_level_weight": {
                    str(w): rescored(it, lt, tt, [1.0] * (L - 1) + [w])["ndcg@10"] for w in last
                },
            }
        )
    )


if __name__ == "__main__":
    main()
