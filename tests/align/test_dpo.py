"""The list-wise DPO loss against hand-computed values, exact sequence log-probabilities, list building, and a
reference model that stays frozen while the policy trains."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from onesearch.align.dpo import (
    PRESETS,
    PreferenceLists,
    align,
    fit_report,
    frozen_copy,
    level_lists,
    listwise_dpo_loss,
    rerank_ndcg,
    reward_lists,
    sequence_logprob,
)
from onesearch.align.levels import CLICKED, PURCHASED, PURCHASED_ELSEWHERE, RANDOM, SHOWN
from onesearch.decode import SIDTrie
from onesearch.model import generator as G
from onesearch.model.beam import score_all_items
from onesearch.model.data import Examples


def test_listwise_dpo_loss_matches_a_hand_computed_value():
    policy = torch.tensor([[-1.0, -2.0, -3.0], [-2.0, -1.0, -9.0]])
    ref = torch.tensor([[-1.5, -1.0, -3.0], [-2.0, -2.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    # list 1: z = 0.5 * (0.5, -1.0, 0.0) = (0.25, -0.5, 0); loss = log(e^0.25 + e^-0.5 + e^0) - 0.25
    # list 2: z = 0.5 * (0.0, 1.0) = (0, 0.5) (third item masked); loss = log(e^0 + e^0.5) - 0
    l1 = math.log(math.exp(0.25) + math.exp(-0.5) + 1.0) - 0.25
    l2 = math.log(1.0 + math.exp(0.5))
    assert abs(l1 - 0.811449) < 1e-5 and abs(l2 - 0.974077) < 1e-5
    got = listwise_dpo_loss(policy, ref, mask, beta=0.5)
    assert got.item() == pytest.approx((l1 + l2) / 2, abs=1e-6)


def test_one_rejected_item_is_dpo_and_equal_ratios_give_log_of_the_list_length():
    p, r = torch.tensor([[-1.0, -4.0]]), torch.tensor([[-2.0, -3.0]])
    dpo = -torch.nn.functional.logsigmoid(torch.tensor(0.1 * ((-1.0 + 2.0) - (-4.0 + 3.0))))
    got = listwise_dpo_loss(p, r, torch.ones(1, 2, dtype=torch.bool), beta=0.1)
    assert got.item() == pytest.approx(dpo.item(), abs=1e-6)
    same = torch.randn(3, 5)
    assert listwise_dpo_loss(same, same, torch.ones(3, 5, dtype=torch.bool), 0.7).item() == pytest.approx(
        math.log(5), abs=1e-6
    )
    with pytest.raises(ValueError, match="preferred"):
        listwise_dpo_loss(p, r, torch.tensor([[False, True]]), 0.1)


def test_rerank_ndcg_by_hand():
    beams = np.array([[1, 2, 3], [4, 5, -1]])
    lp = np.array([[0.0, -1.0, -2.0], [0.0, -1.0, -np.inf]])
    reward = np.array([[0.0, 0.0, 3.0], [0.0, 0.0, 9.0]])
    target = np.array([3, 6])  # the second request's target is not among its beams
    got = rerank_ndcg(beams, lp, reward, target, (0.0, 1.0))
    # scale 0: target third -> 1/log2(4) = 0.5; scale 1: scores (0, -1, 1), target first -> 1; the miss scores 0
    assert got == {"0": pytest.approx(0.25), "1": pytest.approx(0.5)}
    # an unknown target (-1) never matches a padded beam
    assert rerank_ndcg(beams[1:], lp[1:], reward[1:], np.array([-1]), (0.0,)) == {"0": 0.0}


def test_fit_report_by_hand():
    beams = np.array([[1, 2, 3], [4, 5, -1]])
    ref = np.array([[0.0, -1.0, -2.0], [0.0, -1.0, -np.inf]])
    reward = np.array([[0.0, 1.0, 2.0], [0.0, 1.0, 7.0]])  # the padded beam's reward must not count
    pol = np.array([[-2.0, -1.0, 0.0], [-1.0, -1.0, -np.inf]])
    got = fit_report(beams, ref, pol, reward, np.array([3, 4]))
    # shifts, centred per request: (-2, 0, 2) and (-0.5, 0.5) (the second: -1 - 0 = -1, -1 + 1 = 0);
    # rewards centred: (-1, 0, 1) and (-0.5, 0.5). Σ shift·reward = 4 + 0.5, Σ reward² = 2 + 0.5, Σ shift² = 8 + 0.5
    assert got["shift_reward_slope"] == pytest.approx(4.5 / 2.5)
    assert got["shift_reward_corr"] == pytest.approx(4.5 / np.sqrt(2.5 * 8.5))
    # policy order: request 1 puts item 3 first (ndcg 1); request 2 ties (-1, -1), the beam order keeps 4 first
    assert got["policy_ndcg@10"] == pytest.approx(1.0)
    # the reference itself: no shift, no slope
    same = fit_report(beams, ref, ref, reward, np.array([3, 4]))
    assert same["shift_reward_slope"] == 0.0 and same["shift_reward_corr"] == 0.0
    assert same["policy_ndcg@10"] == pytest.approx((0.5 + 1.0) / 2)


def _toy(seed: int = 0):
    torch.manual_seed(seed)
    codes = np.array([[a, b] for a in range(4) for b in range(5)])  # 20 items, 2 levels
    cfg = G.with_data_shape(replace(G.PRESETS["tiny"], dropout=0.0), (4, 5), 0)
    model = G.Generator(cfg, codes).eval()
    rng = np.random.default_rng(seed)
    n = 40
    hist = rng.integers(-1, 20, size=(n, cfg.max_history)).astype(np.int32)
    hist[:, -1] = rng.integers(0, 20, n)
    ex = Examples(np.full(n, 1, np.int64), np.zeros((n, 0), np.int64), hist, rng.integers(0, 20, n))
    return model, ex, SIDTrie.build(codes, (4, 5)), codes


def test_sequence_logprob_equals_teacher_forcing_every_item():
    model, ex, _, codes = _toy()
    b = ex.batch(np.arange(6))
    rows = torch.tensor([[0, 7, 19], [3, 3, 11], [1, 2, 4], [5, 6, 8], [9, 10, 12], [13, 14, 15]])
    with torch.no_grad():
        got = sequence_logprob(model, b, rows)
        every = score_all_items(model, b, torch.as_tensor(codes))
    torch.testing.assert_close(got, every.gather(1, rows), atol=1e-5, rtol=1e-5)


def test_reward_and_level_lists_keep_the_disagreeing_lists():
    ex = Examples(np.zeros(3, np.int64), np.zeros((3, 0), np.int64), np.zeros((3, 2), np.int32), np.arange(3))
    beams = np.array([[5, 6, 7], [1, 2, 3], [8, 9, -1]])
    lp = np.array([[-1.0, -2.0, -3.0], [-1.0, -2.0, -3.0], [-1.0, -2.0, -np.inf]], np.float32)
    reward = np.array([[0.0, 2.0, 1.0], [3.0, 2.0, 1.0], [1.0, 0.0, 9.0]], np.float32)
    lists = reward_lists(ex, beams, lp, reward, rejected=2)
    # request 0: the reward prefers item 6 over the reference's first 5 -> kept, 5 then 7 rejected;
    # request 1: same order as the reference -> dropped; request 2: the reward's best is a padding slot -> 8 first
    assert lists.items.tolist() == [[6, 5, 7]] and lists.examples.target.tolist() == [0]
    assert lists.ref_logp.tolist() == [[-2.0, -1.0, -3.0]]
    assert reward_lists(ex, beams, lp, reward, rejected=2, disagreeing_only=False).size == 3

    items = np.array([[10, 11, 12, 13], [20, 21, -1, -1]])
    levels = np.array([[PURCHASED, SHOWN, PURCHASED_ELSEWHERE, RANDOM], [SHOWN, RANDOM, -1, -1]])
    ilp = np.array([[-3.0, -1.0, -2.0, -9.0], [-1.0, -2.0, -np.inf, -np.inf]], np.float32)
    got = level_lists(ex.take(np.arange(2)), items, levels, ilp, rejected=2,
                      beams=np.array([[14, 11, 10], [20, 21, 22]]), beam_logp=np.array([[-0.5, -1.0, -3.0]] * 2))  # fmt: skip
    # request 0: purchased 10 preferred; rejected: unlevelled beam 14 (-0.5), shown 11 (-1.0) (cut at 2);
    # request 1: nothing clicked or purchased -> no list
    assert got.items.tolist() == [[10, 14, 11]]
    levels[0, 0] = CLICKED  # a click is not preferred over a purchase elsewhere
    got = level_lists(ex.take(np.arange(2)), items, levels, ilp, rejected=3)
    assert got.items.tolist() == [[10, 11, 13, -1]]  # the purchase elsewhere (4) outranks a click (3)


def test_the_reference_stays_frozen_while_the_policy_learns():
    model, ex, trie, _ = _toy()
    ref = frozen_copy(model)
    before = {k: v.clone() for k, v in ref.state_dict().items()}
    assert all(not p.requires_grad for p in ref.parameters()) and not ref.training
    rows = np.stack([ex.target, (ex.target + 1) % 20, (ex.target + 7) % 20], 1)
    with torch.no_grad():
        ref_lp = sequence_logprob(ref, ex.batch(np.arange(ex.size)), torch.from_numpy(rows)).numpy()
    lists = PreferenceLists(ex, rows, ref_lp)
    cfg = replace(PRESETS["tiny"], lr=1e-2, batch=8, eval_every=2, eval_examples=0)
    res = align(
        model, ref, [("phase1", lists, 4), ("phase2", lists, 4)], ex, ex.take(np.arange(10)), trie, cfg
    )
    for k, v in ref.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(v, before[k]) for k, v in res.model.state_dict().items())
    assert [h["phase"] for h in res.history] == ["sft", "phase1", "phase1", "phase2", "phase2"]
    # the policy starts as the reference, so the first step's loss is log(list length)
    fresh = _toy()[0]  # the same weights as the reference
    first = align(
        fresh, ref, [("phase1", lists, 1)], ex, ex.take(np.arange(10)), trie, replace(cfg, eval_every=1)
    )
    assert first.history[1]["dpo_loss"] == pytest.approx(math.log(3), abs=1e-5)
    with pytest.raises(ValueError, match="frozen"):
        align(model, model, [("phase1", lists, 1)], ex, ex, trie, cfg)


def test_the_sft_anchor_aligns_a_dense_head_policy():
    # its loss reads the target rows, which the anchor batch once lacked (it raised)
    torch.manual_seed(0)
    model, ex, trie, codes = _toy()
    cfg_d = replace(model.cfg, dense_head=True)  # dense_loss 0.5: its loss reads the target rows
    policy = G.Generator(cfg_d, codes).eval()
    ref = frozen_copy(policy)
    rows = np.stack([ex.target, (ex.target + 1) % 20], 1)
    with torch.no_grad():
        ref_lp = sequence_logprob(ref, ex.batch(np.arange(ex.size)), torch.from_numpy(rows)).numpy()
    cfg = replace(PRESETS["tiny"], anchor="sft", batch=8, eval_every=1, eval_examples=0)
    lists = PreferenceLists(ex, rows, ref_lp)
    res = align(policy, ref, [("phase1", lists, 1)], ex, ex.take(np.arange(10)), trie, cfg)
    # the anchor of the first step: the policy's training loss (codes + dense head) on 8 of the 40 requests
    assert res.history[1]["anchor_loss"] > 0 and np.isfinite(res.history[1]["anchor_loss"])
