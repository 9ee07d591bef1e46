"""The generator model: shapes, masking, the decoder's causality, the dropout bank, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from onesearch.model import generator as G
from onesearch.model.generator import Batch, Dropout, Generator

SIZES = (4, 3, 2)


def catalog(n: int = 19, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = sorted({tuple(int(rng.integers(0, s)) for s in SIZES) for _ in range(200)})
    return np.array(rows[:n])


def tiny_model(codes: np.ndarray, vocab: int = 10, seed: int = 0, **kw) -> Generator:
    torch.manual_seed(seed)
    cfg = G.with_data_shape(G.PRESETS["tiny"], SIZES, vocab)
    cfg = G.GeneratorConfig(**{**cfg.to_dict(), **kw}) if kw else cfg
    return Generator(cfg, codes).eval()


def batch(model: Generator, B: int = 3, seed: int = 1, target: bool = False) -> Batch:
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    hist = torch.randint(0, model.n_items, (B, cfg.max_history), generator=g)
    hist[0, :4] = -1  # left padding
    hist[1, :] = -1
    hist[1, -1] = 2  # a one-item history
    query = torch.randint(1, max(cfg.text_vocab, 2), (B, cfg.max_query_tokens), generator=g)
    query[0, 3:] = 0
    tgt = model.item_codes[torch.randint(0, model.n_items, (B,), generator=g)] if target else None
    return Batch(torch.tensor([0, 1, 0][:B]), query, hist, tgt)


def test_shapes_of_encoder_tokens_and_level_logits():
    codes = catalog()
    m = tiny_model(codes)
    b = batch(m, target=True)
    x, keep = m.encode_tokens(b)
    assert x.shape == (3, m.cfg.encoder_tokens, m.cfg.d_model)
    assert keep.shape == (3, m.cfg.encoder_tokens)
    logits = m(b)
    assert [tuple(lg.shape) for lg in logits] == [(3, v) for v in SIZES]
    assert torch.isfinite(m.loss(b))


def test_recommend_only_model_reads_no_query_tokens():
    cfg = G.with_data_shape(G.PRESETS["tiny"], SIZES, 0)
    assert cfg.max_query_tokens == 0
    m = Generator(cfg, catalog())
    b = Batch(torch.tensor([1]), torch.zeros(1, 0, dtype=torch.long), torch.full((1, cfg.max_history), -1))
    b = b._replace(history=b.history.clone().index_fill_(1, torch.tensor([cfg.max_history - 1]), 3))
    x, keep = m.encode_tokens(b)
    assert x.shape[1] == 1 + cfg.levels * len(cfg.decays) + cfg.short_term


def test_padding_does_not_reach_the_output():
    """Changing what the padding row holds (history -1, query 0) must not change any logit."""
    codes = catalog()
    m = tiny_model(codes)
    b = batch(m, target=True)
    before = [lg.clone() for lg in m(b)]
    m.item_codes[-1] = torch.tensor([3, 2, 1])  # the padding row of the code table
    with torch.no_grad():
        m.query_emb.weight[0] += 5.0  # the padding query token
    after = m(b)
    for a, c in zip(before, after, strict=True):
        torch.testing.assert_close(a, c)


def test_decoder_is_causal_over_levels():
    """Level l's logits depend on the target codes of levels < l only."""
    codes = catalog()
    m = tiny_model(codes)
    b = batch(m, target=True)
    base = m(b)
    t2 = b.target.clone()
    t2[:, 1] = (t2[:, 1] + 1) % SIZES[1]  # change level 1's code
    changed = m(b._replace(target=t2))
    torch.testing.assert_close(base[0], changed[0])
    torch.testing.assert_close(base[1], changed[1])
    assert not torch.allclose(base[2], changed[2])


def test_history_order_matters_and_long_term_weights_are_recency_decays():
    m = tiny_model(catalog(), decays=(1.0, 0.5))
    w = m.decay_w
    assert w.shape == (2, m.cfg.max_history)
    assert torch.all(w[0] == 1)
    assert w[1, -1] == 1.0 and w[1, -2] == 0.5 and w[1, -3] == 0.25  # most recent last


def test_dropout_bank_is_identity_in_eval_and_unbiased_in_training():
    d = Dropout(0.25)
    x = torch.ones(1000, 100)
    d.eval()
    assert torch.equal(d(x), x)
    d.train()
    torch.manual_seed(0)
    y = d(x)
    kept = (y != 0).float().mean().item()
    assert abs(kept - 0.75) < 0.01
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.75))
    assert not torch.equal(d(x), y)  # another window of the bank
    with pytest.raises(ValueError, match="dropout"):
        Dropout(1.0)


def test_loss_decreases_when_fitting_a_tiny_set():
    codes = catalog()
    m = tiny_model(codes, dropout=0.0).train()
    b = batch(m, B=3, target=True)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    first = float(m.loss(b).detach())
    for _ in range(60):
        loss = m.loss(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(m.loss(b).detach()) < 0.2 * first


def test_item_embeddings_add_one_vector_per_item_to_short_term_tokens_only(tmp_path):
    codes = catalog()
    plain, m = tiny_model(codes), tiny_model(codes, item_embeddings=True)
    n, d = len(codes), m.cfg.d_model
    assert m.n_params() - plain.n_params() == (n + 1) * d  # one row per item plus the padding row
    H, S = m.cfg.max_history, m.cfg.short_term
    hist = torch.full((1, H), -1)
    hist[0, 2:] = torch.arange(H - 2)  # distinct items 0 … H-3, item H-3 the most recent; two padding slots
    b = Batch(torch.tensor([0]), torch.zeros(1, m.cfg.max_query_tokens, dtype=torch.long), hist)
    x0, _ = m.encode_tokens(b)
    with torch.no_grad():
        m.item_emb.weight[H - 3] += 1.0  # the most recent item: short-term position 0, the last encoder token
        m.item_emb.weight[0] += 100.0  # the oldest item: in the long-term view only
        m.item_emb.weight[n] += 100.0  # the padding row
    x1, _ = m.encode_tokens(b)
    want = torch.zeros_like(x0)
    want[0, -1] = 1.0
    torch.testing.assert_close(x1 - x0, want)
    assert H - 2 > S  # (the oldest item is outside the short-term view)
    G.save_checkpoint(m, tmp_path, sid_hash="abc", vocab_hash="v1")
    m2, _ = G.load_checkpoint(tmp_path, codes, sid_hash="abc", vocab_hash="v1")
    assert m2.cfg.item_embeddings and torch.equal(m2.item_emb.weight, m.item_emb.weight)


def test_checkpoint_round_trip_and_refusals(tmp_path):
    codes = catalog()
    m = tiny_model(codes)
    b = batch(m, target=True)
    G.save_checkpoint(m, tmp_path, sid_hash="abc", vocab_hash="v1", extra={"task": "search"})
    m2, meta = G.load_checkpoint(tmp_path, codes, sid_hash="abc", vocab_hash="v1")
    assert meta["task"] == "search" and m2.cfg == m.cfg
    for a, c in zip(m(b), m2.eval()(b), strict=True):
        torch.testing.assert_close(a, c)
    with pytest.raises(G.CheckpointMismatch, match="SID table"):
        G.load_checkpoint(tmp_path, codes, sid_hash="other", vocab_hash="v1")
    with pytest.raises(G.CheckpointMismatch, match="vocabulary"):
        G.load_checkpoint(tmp_path, codes, sid_hash="abc", vocab_hash="v2")
    (tmp_path / G.WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="weights do not match"):
        G.load_checkpoint(tmp_path, codes, sid_hash="abc", vocab_hash="v1")
    with pytest.raises(FileNotFoundError, match="not a generator checkpoint"):
        G.load_checkpoint(tmp_path / "nope", codes, sid_hash="abc", vocab_hash="v1")


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        G.GeneratorConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="short_term"):
        G.GeneratorConfig(short_term=30, max_history=10)
    with pytest.raises(ValueError, match="unknown fields"):
        G.GeneratorConfig.from_dict({"d_model": 32, "colour": "red"})
    with pytest.raises(ValueError, match="item_codes"):
        Generator(G.with_data_shape(G.PRESETS["tiny"], SIZES, 0), np.zeros((5, 2)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    codes = catalog()
    m = tiny_model(codes)
    b = batch(m, target=True)
    cpu = m(b)
    gpu = m.to("cuda")(b.to("cuda"))
    for a, c in zip(cpu, gpu, strict=True):
        torch.testing.assert_close(a, c.cpu(), atol=1e-4, rtol=1e-4)


def test_trimmed_batches_give_the_same_output():
    """Dropping history columns that are padding in every row (and trailing query padding) changes nothing."""
    from onesearch.model.data import Examples

    codes = catalog()
    m = tiny_model(codes)
    H, Q = m.cfg.max_history, m.cfg.max_query_tokens
    hist = np.full((3, H), -1, dtype=np.int32)
    hist[0, -3:] = [1, 2, 3]
    hist[1, -1:] = [4]
    hist[2, -2:] = [5, 6]
    query = np.zeros((3, Q), dtype=np.int64)
    query[0, :2] = [3, 4]
    ex = Examples(np.array([0, 1, 0]), query, hist, np.array([0, 1, 2]))
    item_codes = torch.as_tensor(codes)
    full = ex.batch(np.arange(3), item_codes, trim=False)
    trimmed = ex.batch(np.arange(3), item_codes)
    assert trimmed.history.shape == (3, 3) and trimmed.query.shape == (3, 2)
    for a, c in zip(m(full), m(trimmed), strict=True):
        torch.testing.assert_close(a, c)


def test_dense_head_loss_is_the_code_loss_plus_the_weighted_catalogue_cross_entropy(tmp_path):
    codes = catalog()
    m = tiny_model(codes, dense_head=True, dense_loss=0.5)
    with torch.no_grad():  # a non-zero learned offset per item, so that it is part of the check
        m.dense_item.weight.normal_(0, 0.1)
    b = batch(m, target=True)
    rows = torch.tensor([int((m.item_codes[:-1] == t).all(1).nonzero()) for t in b.target])
    b = b._replace(target_item=rows)
    plain = torch.stack([F.cross_entropy(lg, b.target[:, lv]) for lv, lg in enumerate(m(b))]).mean()
    # by hand: the first decoder state, projected, dotted with each item's summed code embeddings + offset
    enc = m.encode(b)
    h, _ = m.decode_step(m.start_tokens(b.size), enc, None)
    u = m.dense_proj(h[:, 0, 0])
    vec = (
        torch.stack(
            [
                sum(m.code_emb.weight[int(m.code_offsets[lv]) + int(c)] for lv, c in enumerate(row))
                for row in codes
            ]
        )
        + m.dense_item.weight
    )
    logits = u @ vec.T / m.cfg.d_model**0.5
    torch.testing.assert_close(m.dense_logits(h[:, 0, 0]), logits)
    torch.testing.assert_close(m.loss(b), plain + 0.5 * F.cross_entropy(logits, rows))
    with pytest.raises(ValueError, match="target_item"):
        m.loss(b._replace(target_item=None))
    # saved and loaded with its head; a model without one has none to call
    G.save_checkpoint(m, tmp_path, sid_hash="abc", vocab_hash="v1")
    m2, _ = G.load_checkpoint(tmp_path, codes, sid_hash="abc", vocab_hash="v1")
    torch.testing.assert_close(m2.eval().loss(b), m.loss(b))
    with pytest.raises(ValueError, match="no dense head"):
        tiny_model(codes).item_vectors()


def test_a_bundle_from_before_the_dense_head_still_loads(tmp_path):
    import json

    codes = catalog()
    m = tiny_model(codes)
    G.save_checkpoint(m, tmp_path, sid_hash="abc", vocab_hash=None)
    meta = json.loads((tmp_path / G.CONFIG_FILE).read_text())
    for k in ("dense_head", "dense_loss", "dense_weight", "dense_candidates"):
        del meta["config"][k]  # what an older bundle's config holds
    (tmp_path / G.CONFIG_FILE).write_text(json.dumps(meta))
    m2, _ = G.load_checkpoint(tmp_path, codes, sid_hash="abc", vocab_hash=None)
    assert not m2.cfg.dense_head and m2.dense_proj is None
    b = batch(m, target=True)
    for a, c in zip(m(b), m2.eval()(b), strict=True):
        torch.testing.assert_close(a, c)


def test_dense_head_item_vectors_read_the_items_words_by_hand(tmp_path):
    codes = catalog()
    n = len(codes)
    cfg = G.GeneratorConfig(
        **{
            **G.with_data_shape(G.PRESETS["tiny"], SIZES, 10).to_dict(),
            "dense_head": True,
            "dense_text_tokens": 3,
        }
    )
    tokens = np.zeros((n, 3), dtype=np.int64)
    tokens[0] = [4, 7, 0]  # two words, one padding
    tokens[1] = [9, 0, 0]
    torch.manual_seed(0)
    m = Generator(cfg, codes, tokens).eval()
    base = m._level_embed(m.code_emb, m.item_codes[:-1]).sum(-2) + m.dense_item.weight
    # the maps start at zero: an item starts as its codes
    torch.testing.assert_close(m.item_vectors(), base)
    with torch.no_grad():
        m.dense_words.weight.normal_(0, 0.3)
    E, W = m.query_emb.weight, m.dense_words.weight
    want0 = base[0] + W @ ((E[4] + E[7]) / 2)
    want1 = base[1] + W @ E[9]
    want2 = base[2]  # no words: padding only adds nothing
    got = m.item_vectors()
    torch.testing.assert_close(got[0], want0)
    torch.testing.assert_close(got[1], want1)
    torch.testing.assert_close(got[2], want2)
    # the words are saved with the weights
    G.save_checkpoint(m, tmp_path, sid_hash="abc", vocab_hash="v1")
    m2, _ = G.load_checkpoint(tmp_path, codes, sid_hash="abc", vocab_hash="v1")
    torch.testing.assert_close(m2.eval().item_vectors(), got)
    assert m2.item_tokens.tolist() == tokens.tolist()
    with pytest.raises(ValueError, match=r"\(19, 3\)"):
        Generator(cfg, codes, tokens[:5])
    with pytest.raises(ValueError, match="need dense_head"):
        G.GeneratorConfig(**{**cfg.to_dict(), "dense_head": False})
    with pytest.raises(ValueError, match="text_vocab"):
        G.GeneratorConfig(**{**cfg.to_dict(), "text_vocab": 0})


def test_item_vectors_are_kept_outside_training_and_recomputed_when_the_weights_change():
    codes = catalog()
    n = len(codes)
    tokens = np.random.default_rng(1).integers(0, 10, (n, 3))
    cfg = G.GeneratorConfig(
        **{
            **G.with_data_shape(G.PRESETS["tiny"], SIZES, 10).to_dict(),
            "dense_head": True,
            "dense_text_tokens": 3,
        }
    )
    m = Generator(cfg, codes, tokens).eval()
    with torch.no_grad():
        a = m.item_vectors()
        assert m.item_vectors() is a  # kept
        m.dense_words.weight.add_(0.5)  # a weight change (in place, as an optimiser step does)
        b = m.item_vectors()
        assert b is not a and not torch.equal(a, b)
        m.load_state_dict({k: v.clone() for k, v in m.state_dict().items()})
        assert m.item_vectors() is not b  # loading weights computes them again ...
        torch.testing.assert_close(m.item_vectors(), b)  # ... to the same values
    # with gradients (training) they are never kept: the graph must be fresh
    v = m.item_vectors()
    assert v.requires_grad and m.item_vectors() is not v
