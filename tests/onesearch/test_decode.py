"""Constrained decoding: the trie tables on a hand-made catalogue, exactness against brute force, greedy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onesearch.decode import SIDTrie
from onesearch.model import generator as G
from onesearch.model.beam import beam_search, for_decoding, greedy, level_logprobs, score_all_items
from tests.onesearch.test_generator import SIZES, batch, catalog, tiny_model


def test_trie_tables_on_a_hand_made_catalogue():
    codes = np.array([[0, 1], [0, 2], [1, 0]])
    t = SIDTrie.build(codes, (2, 3))
    assert t.nodes_per_level() == [1, 2]
    assert t.valid[0].tolist() == [[True, True]]
    assert t.valid[1].tolist() == [[False, True, True], [True, False, False]]
    n1 = t.step(0, torch.tensor([0, 0]), torch.tensor([0, 1]))
    assert n1.tolist() == [0, 1]
    # leaves are rows of the table; a missing edge and a dead node give -1
    assert t.step(1, torch.tensor([0, 0, 1, 1, -1]), torch.tensor([1, 2, 0, 1, 0])).tolist() == [
        0,
        1,
        2,
        -1,
        -1,
    ]
    assert t.mask(1, torch.tensor([-1])).tolist() == [[False, False, False]]


def test_trie_refuses_duplicates_and_bad_shapes():
    with pytest.raises(ValueError, match="not unique"):
        SIDTrie.build(np.array([[0, 1], [0, 1]]), (2, 2))
    with pytest.raises(ValueError, match="codebook sizes"):
        SIDTrie.build(np.array([[0, 1]]), (2,))
    with pytest.raises(ValueError, match="non-empty"):
        SIDTrie.build(np.zeros((0, 2)), (2, 2))


def test_wide_beam_is_exact_against_brute_force():
    codes = catalog()
    m = tiny_model(codes)
    b = batch(m)
    trie = SIDTrie.build(codes, SIZES)
    widest = max(trie.nodes_per_level())
    out = beam_search(m, b, trie, beam=max(widest, 8), k=8)
    brute = score_all_items(m, b, torch.as_tensor(codes)).topk(8)
    assert torch.equal(out.items, brute.indices)
    torch.testing.assert_close(out.scores, brute.values)
    assert torch.equal(out.codes, torch.as_tensor(codes)[out.items])


def test_level_logprobs_sum_to_the_beam_scores_and_are_each_a_log_probability():
    codes = catalog()
    m = tiny_model(codes)
    b = batch(m)
    trie = SIDTrie.build(codes, SIZES)
    out = beam_search(m, b, trie, beam=512, k=len(codes) + 2)  # the last two rows are padding (-1)
    lv = level_logprobs(m, b, torch.as_tensor(codes), out.items)
    assert lv.shape == (*out.items.shape, len(SIZES))
    n = len(codes)
    torch.testing.assert_close(lv[:, :n].sum(-1), out.scores[:, :n])
    assert (lv[:, :n] <= 0).all() and torch.isinf(lv[:, n:]).all()
    # level 0 of item i is log p(c_0 = codes[i, 0] | request): the same for every item with that first code
    first = torch.as_tensor(codes)[out.items[:, :n], 0]
    for r in range(b.size):
        for c in first[r].unique():
            vals = lv[r, :n, 0][first[r] == c]
            torch.testing.assert_close(vals, vals[:1].expand_as(vals))
    with pytest.raises(ValueError, match="rows of item_codes"):
        level_logprobs(m, b, torch.as_tensor(codes), torch.full((b.size, 1), n))
    with pytest.raises(ValueError, match="requests"):
        level_logprobs(m, b, torch.as_tensor(codes), out.items[:1])


def test_beam_one_is_greedy_and_uses_the_cache_correctly():
    codes = catalog()
    m = tiny_model(codes)
    b = batch(m)
    trie = SIDTrie.build(codes, SIZES)
    one = beam_search(m, b, trie, beam=1)
    ref = greedy(m, b, trie)
    assert torch.equal(one.items, ref.items)
    torch.testing.assert_close(one.scores, ref.scores)


def test_beam_wider_than_the_catalogue_pads_and_stays_valid():
    codes = catalog()
    m = tiny_model(codes)
    b = batch(m)
    trie = SIDTrie.build(codes, SIZES)
    out = beam_search(m, b, trie, beam=512, k=30)
    n = len(codes)
    assert out.items.shape == (3, 30)
    assert (out.items[:, :n] >= 0).all() and (out.items[:, n:] == -1).all()
    assert torch.isinf(out.scores[:, n:]).all()
    for row in out.items[:, :n]:
        assert sorted(row.tolist()) == list(range(n))  # every item exactly once
    assert (out.scores[:, : n - 1] >= out.scores[:, 1:n]).all()  # best first


def test_unconstrained_mode_reports_invalid_ids():
    codes = catalog(n=6)
    m = tiny_model(codes)
    b = batch(m)
    trie = SIDTrie.build(codes, SIZES)
    free = beam_search(m, b, trie, beam=20, constrained=False)
    assert not free.valid.all()  # 24 possible IDs, 6 real: an untrained model names some that do not exist
    valid_codes = {tuple(c) for c in codes.tolist()}
    for items, cs in zip(free.items.tolist(), free.codes.tolist(), strict=True):
        for it, c in zip(items, cs, strict=True):
            assert (it >= 0) == (tuple(c) in valid_codes)
    constrained = beam_search(m, b, trie, beam=20)
    assert constrained.valid[:, : len(codes)].all()


def test_argument_checks():
    codes = catalog()
    m = tiny_model(codes)
    b = batch(m)
    trie = SIDTrie.build(codes, SIZES)
    with pytest.raises(ValueError, match="beam"):
        beam_search(m, b, trie, beam=0)
    with pytest.raises(ValueError, match="k must be"):
        beam_search(m, b, trie, beam=4, k=5)
    with pytest.raises(ValueError, match="levels"):
        beam_search(m, b, SIDTrie.build(np.array([[0, 0], [1, 2]]), SIZES[:2]), beam=4)


def reference_beam(model, b, trie, beam):
    """Beam search the slow way: per request, every beam re-runs the decoder over its prefix (no cache)."""
    enc_all = model.encode(b)
    out = []
    for r in range(b.size):
        enc = type(enc_all)(
            [(k[r : r + 1], v[r : r + 1]) for k, v in enc_all.mem_kv], enc_all.keep[r : r + 1]
        )
        beams = [([], 0.0, 0)]
        for lv in range(model.cfg.levels):
            cand = []
            for codes, score, node in beams:
                prefix = torch.tensor([codes], dtype=torch.long)
                x = torch.cat([model.start_tokens(1)[:, 0], model.embed_codes(prefix, 0)], dim=1)
                h, _ = model.decode_step(x.unsqueeze(1), enc, None)
                logp = model.level_logits(h[0, 0, -1], lv).float().log_softmax(-1)
                for c in np.flatnonzero(trie.valid[lv][node].numpy()):
                    nxt = int(trie.step(lv, torch.tensor([node]), torch.tensor([int(c)]))[0])
                    cand.append((codes + [int(c)], score + float(logp[c]), nxt))
            cand.sort(key=lambda t: -t[1])
            beams = cand[:beam]
        out.append(beams)
    return out


@torch.no_grad()
def test_narrow_beam_matches_a_cache_free_reference():
    codes = catalog()
    m = tiny_model(codes)
    for head in m.heads:  # spread the logits so that no two candidates tie
        head.weight.mul_(30.0)
    b = batch(m)
    trie = SIDTrie.build(codes, SIZES)
    got = beam_search(m, b, trie, beam=3)
    ref = reference_beam(m, b, trie, 3)
    for r, beams in enumerate(ref):
        assert got.items[r].tolist() == [item for _, _, item in beams]
        assert got.scores[r].tolist() == pytest.approx([s for _, s, _ in beams], abs=1e-4)


def test_dense_fusion_ranks_the_beam_and_the_dense_items_by_the_combined_score_by_hand():
    codes = catalog()
    m = tiny_model(codes, dense_head=True, dense_candidates=5)
    with torch.no_grad():
        m.dense_item.weight.normal_(0, 1.0)  # dense scores that disagree with the beam
    b = batch(m)
    trie = SIDTrie.build(codes, SIZES)
    beam = beam_search(m, b, trie, beam=4, k=4)  # dense_weight 0: the plain beam
    gen_all = score_all_items(m, b, torch.as_tensor(codes))  # (B, n) log p(ID) of every item
    enc = m.encode(b)
    h, _ = m.decode_step(m.start_tokens(b.size), enc, None)
    dense = m.dense_logits(h[:, 0, 0]).log_softmax(-1)
    w = 0.7
    m.cfg = G.replace(m.cfg, dense_weight=w)
    got = beam_search(m, b, trie, beam=4, k=4)
    for r in range(b.size):
        cands = list(dict.fromkeys(beam.items[r].tolist() + dense[r].topk(5).indices.tolist()))
        want = sorted(cands, key=lambda i: -(float(gen_all[r, i]) + w * float(dense[r, i])))[:4]
        assert got.items[r].tolist() == want
        fused = torch.tensor([float(gen_all[r, i]) + w * float(dense[r, i]) for i in want])
        torch.testing.assert_close(got.scores[r], fused, rtol=1e-4, atol=1e-4)
        assert torch.equal(got.codes[r], torch.as_tensor(codes)[want])
    # an item that the beam never reaches can come in through the dense head
    assert any(set(got.items[r].tolist()) - set(beam.items[r].tolist()) for r in range(b.size))


def prior_model(codes: np.ndarray) -> tuple[G.Generator, np.ndarray, G.GeneratorConfig]:
    """A tiny generator with the popularity prior over ``codes``, and the purchase counts it holds (some 0: cold)."""
    counts = np.arange(len(codes)) * 7 % 23
    torch.manual_seed(0)
    cfg = G.replace(G.with_data_shape(G.PRESETS["tiny"], SIZES, 10), popularity_prior=True)
    return G.Generator(cfg, codes, item_purchases=counts).eval(), counts, cfg


def test_popularity_prior_reranks_by_score_minus_weighted_log_purchases_by_hand():
    codes = catalog()
    m, counts, cfg = prior_model(codes)
    torch.testing.assert_close(m.item_log_pop, torch.log1p(torch.as_tensor(counts, dtype=torch.float32)))
    b = batch(m)
    trie = SIDTrie.build(codes, SIZES)
    plain = beam_search(m, b, trie, beam=6, k=6)  # weight 0: the plain beam
    w = 0.8
    m.cfg = G.replace(m.cfg, popularity_weight=w)
    got = beam_search(m, b, trie, beam=6, k=6)
    for r in range(b.size):
        items = plain.items[r].tolist()
        score = {
            i: float(s) - w * float(np.log1p(counts[i])) for i, s in zip(items, plain.scores[r], strict=True)
        }
        want = sorted(items, key=lambda i: -score[i])
        assert got.items[r].tolist() == want
        torch.testing.assert_close(
            got.scores[r], torch.tensor([score[i] for i in want]), rtol=1e-5, atol=1e-5
        )
        assert torch.equal(got.codes[r], torch.as_tensor(codes)[want])
    assert not torch.equal(got.items, plain.items)  # the prior changed some order
    # with k < beam the top k of the re-ranked beam come out: an item from beyond the plain top 3 can get in
    top3 = beam_search(m, b, trie, beam=6, k=3)
    assert torch.equal(top3.items, got.items[:, :3]) and torch.equal(top3.scores, got.scores[:, :3])
    assert any(set(got.items[r, :3].tolist()) - set(plain.items[r, :3].tolist()) for r in range(b.size))
    with pytest.raises(ValueError, match="needs popularity_prior"):
        G.replace(cfg, popularity_prior=False, popularity_weight=0.5)
    with pytest.raises(ValueError, match=">= 0"):
        G.Generator(cfg, codes, item_purchases=-counts - 1)


def test_the_one_standard_error_rule_by_hand():
    from onesearch.model.train import largest_within_one_se

    # 10 requests; weight 0 hits 6; weight 0.5 loses two of them and finds one more; weight 1 loses three
    h0 = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], float)
    h5 = np.array([1, 1, 1, 1, 0, 0, 1, 0, 0, 0], float)
    h1 = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0], float)
    pick, table = largest_within_one_se({0.0: h0, 0.5: h5, 1.0: h1})
    # paired differences to the best (weight 0): 0.5 → (-1, -1, +1, 0 × 7): mean -0.1, squared deviations
    # 2 × 0.81 + 1.21 + 7 × 0.01 = 2.9, sd sqrt(2.9 / 9), se 0.1795 → within one se;
    # 1.0 → three -1: mean -0.3, squared deviations 3 × 0.49 + 7 × 0.09 = 2.1, se sqrt(2.1 / 9 / 10) = 0.1528 → not
    assert pick == 0.5
    assert table[0.5]["diff"] == pytest.approx(-0.1)
    assert table[0.5]["se"] == pytest.approx(np.sqrt(2.9 / 9) / np.sqrt(10))
    assert table[1.0]["se"] == pytest.approx(np.sqrt(2.1 / 9) / np.sqrt(10))
    assert table[0.0] == {"recall": 0.6, "diff": 0.0, "se": 0.0}
    # a larger weight that is better than the rest is the best itself
    assert largest_within_one_se({0.0: h5, 0.3: h0})[0] == 0.3
    # weights that change no hit at all: validation cannot tell them apart, nothing is changed
    assert largest_within_one_se({0.0: h0, 0.5: h0.copy(), 1.0: h0.copy()})[0] == 0.0


def test_incremental_attention_by_hand():
    # one query over two keys: weights softmax(q·k / sqrt(2)) = softmax([0, 2/sqrt(2)]), output their mix of v
    q = torch.tensor([[[[1.0, 1.0]]]])  # (1, 1, 1, 2)
    k = torch.tensor([[[[1.0, -1.0], [1.0, 1.0]]]])
    v = torch.tensor([[[[1.0, 0.0], [0.0, 3.0]]]])
    drop = G.Dropout(0.1).eval()
    w = torch.softmax(torch.tensor([0.0, 2.0 / 2**0.5]), 0)
    want = w[0] * v[0, 0, 0] + w[1] * v[0, 0, 1]
    got = G.attention(q, k, v, None, drop)
    assert got.shape == (1, 1, 1, 2) and torch.allclose(got[0, 0, 0], want, atol=1e-6)
    # the same as the general path (a masked key that is kept everywhere)
    keep = torch.ones(1, 1, 1, 2, dtype=torch.bool)
    assert torch.allclose(G.attention(q, k, v, keep, drop), got, atol=1e-6)


def test_bf16_decoding_copy_keeps_the_model_and_stays_close():
    codes = catalog()
    model = tiny_model(codes).eval()
    trie = SIDTrie.build(codes, SIZES)
    b = batch(model)
    fast = for_decoding(model, "bf16")
    assert next(model.parameters()).dtype == torch.float32  # the original is untouched
    assert next(fast.parameters()).dtype == torch.bfloat16 and not fast.training
    ref, got = beam_search(model, b, trie, beam=len(codes)), beam_search(fast, b, trie, beam=len(codes))
    assert got.scores.dtype == torch.float32 and bool(got.valid.all())
    # a full beam returns every item: the same set, each item's score within bf16 rounding of float32's
    assert torch.equal(got.items.sort(1).values, ref.items.sort(1).values)
    ref_by_item = ref.scores.gather(1, ref.items.argsort(1))
    got_by_item = got.scores.gather(1, got.items.argsort(1))
    assert (ref_by_item - got_by_item).abs().max() < 0.1
    assert next(for_decoding(model, "fp32").parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        for_decoding(model, "fp16")


def test_compiled_decoding_gives_the_eager_results():
    # torch.compile of the per-level step (inductor): same items, scores within float tolerance, the last smaller
    # batch compiling its own graph
    codes = catalog()
    model = tiny_model(codes).eval()
    trie = SIDTrie.build(codes, SIZES)
    fast = for_decoding(model, "fp32", compile=True)
    for b in (batch(model), batch(model, B=2)):
        got, ref = beam_search(fast, b, trie, beam=5), beam_search(model, b, trie, beam=5)
        assert torch.equal(got.items, ref.items)
        torch.testing.assert_close(got.scores, ref.scores)


def test_a_batch_padded_to_full_width_changes_no_result():
    # a batch with fewer history and query columns than the model reads; padding it to the full width (what a
    # compiled decoding copy does, to keep one graph per shape) gives the same search
    codes = catalog()
    model = tiny_model(codes).eval()
    trie = SIDTrie.build(codes, SIZES)
    full = batch(model)
    short = G.Batch(full.task, full.query[:, :4], full.history[:, -6:])
    padded = for_decoding(model, "fp32")
    padded.full_width = True
    got, ref = beam_search(padded, short, trie, beam=6), beam_search(model, short, trie, beam=6)
    assert torch.equal(got.items, ref.items)
    torch.testing.assert_close(got.scores, ref.scores)


def test_expose_tail_lays_out_pages_by_probability_plus_boost_by_hand():
    from onesearch.model.beam import expose_tail

    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    items = torch.tensor([[0, 1, 2, 3, -1]])
    score = torch.cat([p.log(), torch.tensor([float("-inf")])])[
        None
    ]  # a log-probability per item, one padding
    codes = torch.arange(5)[None, :, None].expand(1, 5, 2)
    tail = torch.tensor([0.0, 0.0, 1.0, 1.0])  # items 2 and 3 are long tail

    def run(boost, temperature, page):
        return expose_tail(items, score, codes, boost * tail, temperature, page)

    # T = 1: p as given. boost 0.2: utilities 0.5, 0.3, 0.35, 0.25 → page 1 = {0, 2}, shown by p; page 2 = {1, 3}
    got_i, got_s, got_c = run(0.2, 1.0, 2)
    assert got_i.tolist() == [[0, 2, 1, 3, -1]]
    # scores: log p capped by the score above (item 1's log 0.3 sits below item 2's log 0.15)
    torch.testing.assert_close(got_s[0, :4], torch.tensor([0.5, 0.15, 0.15, 0.05]).log())
    assert got_s[0, 4] == float("-inf") and got_c[0, :, 0].tolist() == [0, 2, 1, 3, 4]
    # boost 0.1 at T = 1: utilities 0.5, 0.3, 0.25, 0.15 → nothing moves
    assert run(0.1, 1.0, 2)[0].tolist() == [[0, 1, 2, 3, -1]]
    # T = 2: p ∝ sqrt(p) = 0.379, 0.294, 0.208, 0.120; boost 0.1 lifts item 2 to 0.308 > 0.294 → page 1 = {0, 2}
    q = p.sqrt() / p.sqrt().sum()
    assert run(0.1, 2.0, 2)[0].tolist() == [[0, 2, 1, 3, -1]]
    torch.testing.assert_close(run(0.1, 2.0, 2)[1][0, :2], q[[0, 2]].log())
    # one page that holds every candidate: the set is all of them, shown by p, so no boost changes anything
    assert run(1.0, 1.0, 5)[0].tolist() == [[0, 1, 2, 3, -1]]
    # pages of one: the order is by utility
    assert run(0.2, 1.0, 1)[0].tolist() == [[0, 2, 1, 3, -1]]
    assert run(0.5, 1.0, 1)[0].tolist() == [[2, 3, 0, 1, -1]]  # 0.65, 0.55 > 0.5 > 0.3
    # boosts per item: item 3 (cold, say) 0.3 on top of the tail's 0.1 → 0.45 beats item 1's 0.3, not item 0's 0.5
    per_item = torch.tensor([0.0, 0.0, 0.1, 0.4])
    assert expose_tail(items, score, codes, per_item, 1.0, 2)[0].tolist() == [[0, 3, 1, 2, -1]]
    # a request with no candidate at all stays empty
    empty = expose_tail(
        torch.full((1, 3), -1), torch.full((1, 3), float("-inf")), codes[:, :3], 0.2 * tail, 1.0, 2
    )
    assert empty[0].tolist() == [[-1, -1, -1]] and torch.isinf(empty[1]).all()


def test_tail_boost_in_beam_search_lays_out_the_plain_beam_and_tail_is_the_benchmarks_buckets():
    from onesearch.model.beam import expose_tail
    from onesearch.retrieval import COLD, TAIL, item_buckets

    codes = catalog()
    n = len(codes)
    m, counts, cfg = prior_model(codes)
    buckets = item_buckets(np.arange(n), np.repeat(np.arange(n), counts))
    assert m.item_tail().tolist() == np.isin(buckets, [TAIL, COLD]).tolist()
    b = batch(m)
    trie = SIDTrie.build(codes, SIZES)
    plain = beam_search(m, b, trie, beam=8, k=8)
    m.cfg = G.replace(m.cfg, tail_boost=0.05, cold_boost=0.2, score_temperature=2.0, page_size=3)
    boost = torch.as_tensor(
        0.05 * np.isin(buckets, [TAIL, COLD]) + 0.2 * (buckets == COLD), dtype=torch.float32
    )
    torch.testing.assert_close(m.item_boost(), boost)
    got = beam_search(m, b, trie, beam=8, k=8)
    want = expose_tail(plain.items, plain.scores, plain.codes, boost, 2.0, 3)
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)
    assert not torch.equal(got.items, plain.items)  # the boost moved something on this toy
    assert (got.items >= 0).all() and all(len(set(r.tolist())) == 8 for r in got.items)
    with pytest.raises(ValueError, match="need popularity_prior"):
        G.replace(cfg, popularity_prior=False, tail_boost=0.1)
    with pytest.raises(ValueError, match="need popularity_prior"):
        G.replace(cfg, popularity_prior=False, cold_boost=0.1)
    with pytest.raises(ValueError, match="score_temperature > 0"):
        G.replace(cfg, score_temperature=0.0)


def test_calibrated_temperature_and_the_budget_rule_by_hand():
    from onesearch.model.train import calibrate_temperature, largest_within_budget

    # three requests, two candidates scored 2 and 0: the target is first twice and second once. With a = 2 / T,
    # the mean NLL is (3 log(1 + e^-a) + a) / 3, least at e^-a = 1/2, T = 2 / ln 2 = 2.89; of 1, 2, 4, 8 it is 4
    items = np.array([[0, 1], [0, 1], [1, 0]])
    scores = np.array([[2.0, 0.0]] * 3)
    target = np.array([0, 0, 0])
    t, nll = calibrate_temperature(items, scores, target, grid=(1.0, 2.0, 4.0, 8.0))
    assert t == 4.0
    for T in (1.0, 2.0, 4.0, 8.0):
        a = 2 / T
        assert nll[T] == pytest.approx((3 * np.log1p(np.exp(-a)) + a) / 3)
    # a request whose target is no candidate, and padding, do not count
    t2, nll2 = calibrate_temperature(
        np.array([[0, 1, -1], [0, 1, -1], [1, 0, -1], [5, 6, -1]]),
        np.array([[2.0, 0.0, -np.inf]] * 4), np.array([0, 0, 0, 0]), grid=(1.0, 2.0, 4.0, 8.0),
    )  # fmt: skip
    assert t2 == 4.0 and nll2 == pytest.approx(nll)
    assert calibrate_temperature(np.array([[1, 2]]), np.array([[0.0, -1.0]]), np.array([0])) == (1.0, {})
    # budget 1%: the best recall is 0.80 → at least 0.792 → the largest such setting is 0.02
    recall = {0.0: 0.80, 0.01: 0.795, 0.02: 0.792, 0.03: 0.7919}
    assert largest_within_budget(recall, 0.01) == 0.02
    assert largest_within_budget(recall, 0.0) == 0.0
    assert largest_within_budget({0.0: 0.5, 0.1: 0.6}, 0.0) == 0.1  # a better boost is the best itself


def _pages_reference(items, score, boost, temperature, page):
    """Page by page in plain Python, one request at a time: the remaining candidates with the highest
    p + boost fill the page, shown by p (ties: the earlier candidate)."""
    out = []
    for it, sc in zip(items.tolist(), score.tolist(), strict=True):
        live = [(i, s) for i, s in zip(it, sc, strict=True) if i >= 0 and s != float("-inf")]
        z = np.array([s / temperature for _, s in live])
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum() if live else np.array([])
        rest = list(range(len(live)))
        row = []
        while rest:
            take = sorted(rest, key=lambda j: (-(p[j] + float(boost[live[j][0]])), j))[:page]
            row += [live[j][0] for j in sorted(take, key=lambda j: (-p[j], j))]
            rest = [j for j in rest if j not in take]
        out.append(row + [-1] * (len(it) - len(row)))
    return out


def test_expose_tail_matches_a_page_by_page_reference_row_by_row():
    from onesearch.model.beam import expose_tail

    g = torch.Generator().manual_seed(3)
    for page in (1, 2, 3, 7):
        items = torch.stack([torch.randperm(20, generator=g)[:7] for _ in range(4)])
        score = torch.randn(4, 7, generator=g) * 2
        items[1, 5:] = -1  # padding at the end of one row
        score[1, 5:] = float("-inf")
        items[2, 3] = -1  # and a dead candidate inside another
        score[2, 3] = float("-inf")
        boost = torch.rand(20, generator=g) * 0.3
        codes = items.clamp(min=0)[..., None].expand(-1, -1, 2)
        got_i, got_s, got_c = expose_tail(items, score, codes, boost, 1.5, page)
        assert got_i.tolist() == _pages_reference(items, score, boost, 1.5, page)
        assert (got_s[:, 1:] <= got_s[:, :-1]).all()  # scores never rise down the list
        live = got_i >= 0
        assert torch.equal(got_c[..., 0][live], got_i[live])  # codes follow their items


def test_budget_rule_with_no_hit_at_all_changes_nothing_and_bf16_keeps_exact_counts():
    from onesearch.model.beam import for_decoding
    from onesearch.model.train import largest_within_budget

    assert largest_within_budget({0.0: 0.0, 0.5: 0.0, 1.0: 0.0}, 0.01) == 0.0
    codes = catalog()
    counts = np.arange(len(codes)) * 10 + 3000  # log1p 8.006 ... 8.065: bfloat16 (step 1/16 there) ties them
    cfg = G.replace(G.with_data_shape(G.PRESETS["tiny"], SIZES, 10), popularity_prior=True, tail_boost=0.1)
    m = G.Generator(cfg, codes, item_purchases=counts).eval()
    half = for_decoding(m, "bf16")
    assert torch.equal(half.item_log_pop, m.item_log_pop) and torch.equal(half.item_tail(), m.item_tail())
    assert m.item_tail()[-4:].logical_not().all()  # the 4 most bought (20% of 19) are the last rows
    rounded = m.item_log_pop.to(torch.bfloat16)
    assert len(set(rounded.tolist())) < len(codes)  # what the copy would have held without the float32 counts
