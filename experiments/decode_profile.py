"""Where constrained beam search spends its time: requests/s and an operator profile at beam 20, batch 256.

    .venv/bin/python experiments/decode_profile.py [--dataset beauty] [--tokenizer index:rqvae_native]
        [--model PATH] [--requests 2048] [--batch 256] [--beam 20] [--repeats 3] [--profile]
        [--save OUT.pt | --check OUT.pt]

Without ``--model`` the Beauty ``small`` generator is built with its initial (seeded) weights: decoding cost does not
depend on what the weights are, only on their shapes and the trie, so speed can be measured without a training run.
``--save`` writes the decoded items and scores; ``--check`` compares a later run's with them (the same model and
requests must give the same top-K: a speed change must not change results). Prints the median requests/s of
``--repeats`` passes over the requests, and with ``--profile`` torch's operator table of one pass.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from onesearch.decode.trie import SIDTrie
from onesearch.model.beam import beam_search, for_decoding
from onesearch.model.bundle import GeneratorBundle
from onesearch.model.generator import Generator
from pipelines import train_generator


def load(args):
    """Model, trie and test examples."""
    if args.model:
        bundle = GeneratorBundle.load(args.model)
        cfg = train_generator.Config(dataset=args.dataset, task=bundle.meta.get("task", "recommend"))
        model, table = bundle.model, bundle.table
        ex = train_generator.prepare(cfg).splits.test
    else:
        tmp = tempfile.mkdtemp(prefix="decode-profile-")
        cfg = train_generator.Config(
            dataset=args.dataset,
            task="recommend",
            tokenizer=args.tokenizer,
            model_size="small",
            tokenizer_dir=tmp,
        )
        p = train_generator.prepare(cfg)
        torch.manual_seed(0)
        model, table = Generator(p.model_cfg, p.table.codes), p.table
        ex = p.splits.test
    pick = np.sort(np.random.default_rng(0).choice(ex.size, min(args.requests, ex.size), replace=False))
    return model.eval(), SIDTrie.build(table.codes, table.codebook_sizes), ex.take(pick)


def one_pass(model, trie, ex, batch: int, beam: int):
    items, scores = [], []
    for s in range(0, ex.size, batch):
        out = beam_search(model, ex.batch(np.arange(s, min(s + batch, ex.size))), trie, beam=beam)
        items.append(out.items)
        scores.append(out.scores)
    return torch.cat(items), torch.cat(scores)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="beauty")
    ap.add_argument("--tokenizer", default="index:rqvae_native")
    ap.add_argument("--model", default="")
    ap.add_argument("--requests", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--beam", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precision", default="fp32", choices=("fp32", "amp", "bf16"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--save", default="")
    ap.add_argument("--check", default="")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, trie, ex = load(args)
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "amp")
    model = for_decoding(model, "fp32" if args.precision == "amp" else args.precision, compile=args.compile)
    print(f"{ex.size} requests, {model.n_params()} params, trie nodes {trie.nodes_per_level()}, "
          f"threads {torch.get_num_threads()}", flush=True)  # fmt: skip
    with torch.inference_mode(), amp:
        t0 = time.perf_counter()
        one_pass(model, trie, ex, args.batch, args.beam)  # warm-up (and, with --compile, compiling)
        print(f"warm-up pass {time.perf_counter() - t0:.1f} s", flush=True)
        qps = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            items, scores = one_pass(model, trie, ex, args.batch, args.beam)
            qps.append(ex.size / (time.perf_counter() - t0))
        print(f"requests/s at beam {args.beam}, batch {args.batch}: median {statistics.median(qps):.0f} "
              f"(passes {', '.join(f'{q:.0f}' for q in qps)})", flush=True)  # fmt: skip
        if args.save:
            torch.save({"items": items, "scores": scores}, args.save)
        if args.check:
            ref = torch.load(args.check)
            same = (ref["items"] == items).float().mean().item()
            gap = (ref["scores"] - scores).abs().nan_to_num(0.0).max().item()
            print(f"check against {args.check}: same items {same:.4f}, max |score gap| {gap:.2e}")
        if args.profile:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                one_pass(model, trie, ex, args.batch, args.beam)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
