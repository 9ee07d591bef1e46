"""Generator training: the schedule, early-stopping bookkeeping, and an exact resume after an interruption."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from onesearch.decode import SIDTrie
from onesearch.model.data import Examples, Splits
from onesearch.model.train import (
    STATE_FILE,
    TrainConfig,
    ema_update,
    evaluate,
    lr_factor,
    swapped_weights,
    train,
)
from tests.onesearch.test_generator import SIZES, catalog, tiny_model


def splits(n_items: int, cfg, seed: int = 0) -> Splits:
    """Histories whose next item is (last item + 1) mod n: a rule the model can learn."""
    rng = np.random.default_rng(seed)

    def make(n: int) -> Examples:
        hist = rng.integers(0, n_items, (n, cfg.max_history)).astype(np.int32)
        hist[: n // 3, :3] = -1
        return Examples(
            rng.integers(0, 2, n),
            np.zeros((n, cfg.max_query_tokens), np.int64),
            hist,
            (hist[:, -1].astype(np.int64) + 1) % n_items,
        )

    return Splits("recommend", make(96), make(32), make(32))


def test_lr_schedule_warms_up_then_decays_to_five_percent():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(10, 10, 100) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100) == pytest.approx(0.05 + 0.95 * 0.5)
    assert lr_factor(100, 10, 100) == pytest.approx(0.05)


def test_training_learns_a_simple_rule():
    codes = catalog()
    m = tiny_model(codes, vocab=0, dropout=0.0)
    sp = splits(len(codes), m.cfg)
    trie = SIDTrie.build(codes, SIZES)
    before = evaluate(m, sp.test, trie, beam=5, k=5).metrics["recall@5"]
    cfg = TrainConfig(
        batch_size=16,
        lr=1e-2,
        warmup_steps=5,
        epochs=40,
        patience=0,
        eval_beam=5,
        progress=False,
        length_buckets=0,
    )
    res = train(m, sp, trie, cfg)
    after = evaluate(res.model, sp.test, trie, beam=5, k=5).metrics
    assert after["recall@5"] > max(0.8, before + 0.3)
    assert after["valid_rate"] == 1.0
    assert res.stopped == "epochs" and len(res.history) == 40
    assert res.best["recall@5"] == max(h["val_recall@5"] for h in res.history)


def test_max_steps_stops_mid_epoch_and_the_schedule_spans_them(monkeypatch):
    codes = catalog()
    m = tiny_model(codes, vocab=0)
    sp = splits(len(codes), m.cfg)  # 96 training examples: 6 steps an epoch at batch 16
    seen = []
    real = lr_factor

    def spy(step, warmup, total):
        seen.append((step, total))
        return real(step, warmup, total)

    monkeypatch.setattr("onesearch.model.train.lr_factor", spy)
    cfg = TrainConfig(batch_size=16, warmup_steps=1, epochs=5, max_steps=8, eval_every=1.0, patience=0,
                      eval_beam=5, progress=False, length_buckets=0)  # fmt: skip
    res = train(m, sp, SIDTrie.build(codes, SIZES), cfg)
    assert res.steps == 8 and res.stopped == "steps"
    assert [h["step"] for h in res.history] == [6, 8]  # the end of epoch 1, then the last step
    assert list(dict.fromkeys(seen)) == [
        (i, 8) for i in range(8)
    ]  # the schedule ends at step 8, not 5 epochs
    with pytest.raises(ValueError, match="max_steps"):
        train(m, sp, SIDTrie.build(codes, SIZES), replace(cfg, max_steps=-1))


def test_patience_stops_training():
    codes = catalog()
    m = tiny_model(codes, vocab=0)
    sp = splits(len(codes), m.cfg)
    cfg = TrainConfig(
        batch_size=32, lr=0.0, warmup_steps=1, epochs=20, patience=2, eval_beam=5, progress=False
    )
    res = train(m, sp, SIDTrie.build(codes, SIZES), cfg)  # lr 0: nothing improves after the first eval
    assert res.stopped == "patience" and len(res.history) == 3


def test_ema_update_by_hand():
    avg, p = [torch.tensor([1.0, 2.0])], [torch.tensor([3.0, 6.0])]
    ema_update(avg, p, decay=0.9, step=0)  # d = min(0.9, 1/10) = 0.1: avg = 0.1·[1, 2] + 0.9·[3, 6]
    torch.testing.assert_close(avg[0], torch.tensor([2.8, 5.6]))
    ema_update(avg, p, decay=0.5, step=100)  # d = min(0.5, 101/110) = 0.5: halfway to [3, 6]
    torch.testing.assert_close(avg[0], torch.tensor([2.9, 5.8]))


def test_swapped_weights_restores_the_live_weights():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    with swapped_weights([w], [torch.tensor([5.0, 7.0])]):
        torch.testing.assert_close(w.detach(), torch.tensor([5.0, 7.0]))
    torch.testing.assert_close(w.detach(), torch.tensor([1.0, 2.0]))
    with swapped_weights([w], None):
        torch.testing.assert_close(w.detach(), torch.tensor([1.0, 2.0]))


def test_ema_training_returns_the_averaged_weights(monkeypatch):
    """The kept weights are the average of the live weights after every optimiser step, started at the
    initialisation, not the last live weights."""
    import onesearch.model.train as T

    codes = catalog()
    trie = SIDTrie.build(codes, SIZES)
    sp = splits(len(codes), tiny_model(codes, vocab=0).cfg)
    cfg = TrainConfig(batch_size=16, lr=0.05, warmup_steps=1, epochs=1, patience=0, eval_beam=5, progress=False,
                      ema=0.2)  # fmt: skip
    m = tiny_model(codes, vocab=0)
    expected = [p.detach().clone() for p in m.parameters()]
    seen = []
    real = T.ema_update

    def spy(avg, params, decay, step):
        seen.append(step)
        d = min(0.2, (1 + step) / (10 + step))
        for e, p in zip(expected, params, strict=True):
            e.mul_(d).add_((1 - d) * p.detach())
        real(avg, params, decay, step)

    monkeypatch.setattr(T, "ema_update", spy)
    res = train(m, sp, trie, cfg)
    assert seen == list(range(6))  # 96 examples / 16 = 6 steps, each averaged once
    live = train(tiny_model(codes, vocab=0), sp, trie, replace(cfg, ema=0.0)).model  # same steps, no average
    for p, e in zip(res.model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), e)
    assert any(not torch.allclose(e, p.detach()) for e, p in zip(expected, live.parameters(), strict=True))
    with pytest.raises(ValueError, match="ema must be in"):
        train(tiny_model(codes, vocab=0), sp, trie, replace(cfg, ema=1.0))


@pytest.mark.parametrize("eval_every,ema", [(1.0, 0.0), (0.5, 0.0), (0.5, 0.9)])
def test_interrupted_run_resumes_exactly(tmp_path, eval_every, ema):
    """Stopped after an evaluation (at an epoch boundary, or mid-epoch with eval_every 0.5) and started again, a run
    ends with the same losses and weights as one that was never interrupted."""
    codes = catalog()
    trie = SIDTrie.build(codes, SIZES)
    cfg = TrainConfig(batch_size=16, lr=5e-3, warmup_steps=3, epochs=3, patience=0, eval_beam=5, progress=False,
                      eval_every=eval_every, ema=ema)  # fmt: skip
    sp = splits(len(codes), tiny_model(codes, vocab=0).cfg)
    straight = train(tiny_model(codes, vocab=0), sp, trie, cfg)

    def stop(entry):
        if entry["epoch"] >= 1.4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_model(codes, vocab=0), sp, trie, cfg, workdir=tmp_path, on_eval=stop)
    assert (tmp_path / STATE_FILE).exists()
    resumed = train(
        tiny_model(codes, vocab=0, seed=123), sp, trie, cfg, workdir=tmp_path
    )  # other init: state wins
    assert len(resumed.history) == len(straight.history)
    assert [h["train_loss"] for h in resumed.history] == pytest.approx(
        [h["train_loss"] for h in straight.history]
    )
    for (k, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=k)


def test_training_refuses_empty_splits():
    codes = catalog()
    m = tiny_model(codes, vocab=0)
    sp = splits(len(codes), m.cfg)
    empty = sp.train.take(np.zeros(0, dtype=np.int64))
    with pytest.raises(ValueError, match="no training examples"):
        train(m, Splits("recommend", empty, sp.valid, sp.test), SIDTrie.build(codes, SIZES), TrainConfig())


def test_epoch_batches_cover_everything_once_and_sort_runs_by_length():
    from onesearch.model.train import batches_per_epoch, epoch_batches

    lengths = np.random.default_rng(0).integers(0, 50, 103)
    a = epoch_batches(103, 10, lengths, np.random.default_rng(1), buckets=3)
    b = epoch_batches(103, 10, lengths, np.random.default_rng(2), buckets=3)
    assert len(a) == len(b) == 11  # runs of 30, 30, 30, 13 examples: 3 + 3 + 3 + 2 batches
    assert sorted(np.concatenate(a).tolist()) == list(range(103))
    spans = [lengths[x].max() - lengths[x].min() for x in a]
    assert np.mean(spans) < 30  # sorted runs: a batch holds similar lengths
    assert batches_per_epoch(103, 10, 3) == 11 and batches_per_epoch(103, 10, 0) == 11
    plain = epoch_batches(103, 10, lengths, np.random.default_rng(1), buckets=0)
    assert len(plain) == 11 and sorted(np.concatenate(plain).tolist()) == list(range(103))


@pytest.mark.parametrize("weight", [0.0, 3.0])
def test_a_dense_head_model_is_validated_with_its_dense_head_at_the_eval_weight(weight):
    codes = catalog()
    m = tiny_model(codes, vocab=0, dense_head=True, dense_candidates=5)
    sp = splits(len(codes), m.cfg)
    trie = SIDTrie.build(codes, SIZES)
    cfg = TrainConfig(
        batch_size=16, lr=1e-2, warmup_steps=5, epochs=3, patience=0, eval_beam=5, progress=False,
        length_buckets=0, eval_dense_weight=weight,
    )  # fmt: skip
    res = train(m, sp, trie, cfg)
    assert res.model.cfg.dense_weight == 0.0  # the served weight is left for tuning after training
    with torch.no_grad():  # the kept weights, measured as validation measured them
        served = evaluate(res.model, sp.valid, trie, beam=5, k=5).metrics
        res.model.cfg = replace(res.model.cfg, dense_weight=weight)
        fused = evaluate(res.model, sp.valid, trie, beam=5, k=5).metrics
    keys = sorted(k for k in fused if k != "decode_qps")
    assert [res.best[k] for k in keys] == pytest.approx([fused[k] for k in keys])
    if weight:  # the check can tell the two apart on this toy
        assert [served[k] for k in keys] != pytest.approx([fused[k] for k in keys])
    with pytest.raises(ValueError, match="eval_dense_weight"):
        train(m, sp, trie, replace(cfg, eval_dense_weight=-1.0))
