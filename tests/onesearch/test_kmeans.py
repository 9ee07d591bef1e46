from dataclasses import replace

import numpy as np
import pytest

from onesearch.tokenizer.base import Quantizer
from onesearch.tokenizer.kmeans import RQKMeansConfig, RQKMeansQuantizer, balanced_assign, kmeans


def test_balanced_assign_by_hand():
    # two columns of capacity 2; rows 0-2 all prefer column 0. Regrets: row0 4-0=4, row1 3-1=2, row2 1.1-1=0.1.
    d = np.array([[0.0, 4.0], [1.0, 3.0], [1.0, 1.1], [5.0, 0.0]])
    assert balanced_assign(d, 2).tolist() == [0, 0, 1, 1]  # row 2 has least to lose, moves
    assert balanced_assign(d, 4).tolist() == [0, 0, 0, 1]  # no pressure: plain nearest
    with pytest.raises(ValueError, match="cannot hold 4 items"):
        balanced_assign(d, 1)


def test_kmeans_capacity_is_respected():
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 0.1, (90, 2)), rng.normal(5, 0.1, (10, 2))].astype(np.float32)
    _, a = kmeans(x, 4, np.random.default_rng(0), capacity=25)
    assert np.bincount(a, minlength=4).max() <= 25


def test_points_on_centroids_reproduce_them():
    # residual levels: level-0 centres far apart, level-1 offsets small; every point is centre + offset exactly
    c0 = np.array([[10.0, 0, 0], [0, 10.0, 0], [0, 0, 10.0]], dtype=np.float32)
    c1 = np.array([[0.5, 0, 0], [0, 0.5, 0]], dtype=np.float32)
    pts = np.array([c0[i] + c1[j] for i in range(3) for j in range(2)], dtype=np.float32)
    q = RQKMeansQuantizer(RQKMeansConfig(codebook_sizes=(3, 2), normalize=False)).fit(
        np.repeat(pts, 5, 0), seed=1
    )
    codes, resid = q.encode(pts)
    recon = q.codebooks[0][codes[:, 0]] + q.codebooks[1][codes[:, 1]]
    assert np.allclose(recon, pts, atol=1e-5) and np.allclose(resid, 0, atol=1e-4)
    assert len({tuple(c) for c in codes}) == 6
    got0 = {tuple(np.round(c, 4)) for c in q.codebooks[0]}
    assert got0 == {tuple(np.round(c + c1.mean(0), 4)) for c in c0}  # level 0 centres = cluster means


def _mixture(n=600, k=12, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    lab = rng.integers(k, size=n)
    return (centres[lab] + 0.05 * rng.normal(size=(n, d))).astype(np.float32), lab


def test_rqkmeans_follows_the_protocol_is_seeded_and_round_trips(tmp_path):
    x, _ = _mixture()
    cfg = RQKMeansConfig(codebook_sizes=(8, 8), balanced="residual", pq_subspaces=2, pq_codes=8, opq_iters=3)
    q = RQKMeansQuantizer(cfg, method="khqe").fit(x, seed=3)
    assert isinstance(q, Quantizer)
    assert q.codebook_sizes == (8, 8, 8, 8) and q.train_codes.shape == (600, 4)
    again = RQKMeansQuantizer(cfg, method="khqe").fit(x, seed=3)
    assert np.array_equal(q.train_codes, again.train_codes)
    assert np.bincount(q.train_codes[:, 1], minlength=8).max() <= 75  # balanced: ceil(600 / 8)
    q.save(tmp_path / "q")
    back = RQKMeansQuantizer.load(tmp_path / "q")
    assert np.array_equal(back.encode(x)[0], q.encode(x)[0])
    r = q.rotation
    assert np.allclose(r @ r.T, np.eye(r.shape[0]), atol=1e-4)  # OPQ rotation stays orthogonal


def test_level0_recovers_separated_clusters():
    x, lab = _mixture(k=8)
    q = RQKMeansQuantizer(RQKMeansConfig(codebook_sizes=(8, 4))).fit(x, seed=0)
    # each true cluster maps to one level-0 code and codes are distinct
    mapping = {int(c): {int(v) for v in q.train_codes[lab == c, 0]} for c in range(8)}
    assert all(len(v) == 1 for v in mapping.values())
    assert len({next(iter(v)) for v in mapping.values()}) == 8


def test_bad_embeddings_get_clear_errors():
    q = RQKMeansQuantizer(RQKMeansConfig(codebook_sizes=(2,)))
    bad = np.ones((5, 3), dtype=np.float32)
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"1 row\(s\) contain NaN or inf, first at row 3"):
        q.fit(bad)
    with pytest.raises(ValueError, match="expected a 2-D"):
        q.fit(np.ones(5))
    q.fit(np.random.default_rng(0).normal(size=(10, 3)))
    with pytest.raises(ValueError, match="dimension 4, the quantizer was fitted on dimension 3"):
        q.encode(np.ones((2, 4)))
    with pytest.raises(ValueError, match="balanced must be none, last or residual"):
        RQKMeansConfig(balanced="all")


def test_spread_collisions_by_hand():
    from onesearch.tokenizer.kmeans import spread_collisions

    # items 0, 1, 2 share (0, 5); item 3 is (0, 6); item 4 is (1, 5), another prefix
    codes = np.array([[0, 5], [0, 5], [0, 5], [0, 6], [1, 5]])
    d = np.array(
        [
            [9, 9, 9, 9, 9, 0.5, 1.0, 9],  # nearer the shared code 5 than item 1 (0.7) is: keeps it
            [9, 9, 9, 9, 9, 0.7, 0.8, 0.9],  # 6 is held by item 3 in prefix 0: takes 7
            [0.2, 9, 9, 9, 9, 0.9, 9, 9],  # farthest from 5: moves last, to its nearest code 0
            [9, 9, 9, 9, 9, 9, 0.1, 9],
            [9, 9, 9, 9, 9, 0.1, 9, 9],
        ]
    )
    assert spread_collisions(codes, d).tolist() == [5, 7, 0, 6, 5]
    # a prefix whose codes are all taken (0 by two items, 1 by one) keeps a collision no spreading could undo
    assert spread_collisions(np.array([[0, 0], [0, 0], [0, 1]]), np.zeros((3, 2))).tolist() == [0, 0, 1]
    # seven identical items on one code of a 3-code prefix: two move to the free codes 1 and 2, then the other
    # four are dealt out to the least-held code, so no ID holds more than ceil(7 / 3) = 3 of them
    got = spread_collisions(np.zeros((7, 2), dtype=int), np.zeros((7, 3)))
    assert np.bincount(got, minlength=3).tolist() == [3, 2, 2]
    # a full prefix: a mover goes to the least-held code (nearest first among equals) if it holds two fewer.
    # Item 1 takes the free code 2; item 2 then sees code 0 held by 3, codes 1 and 2 by one: moves to 1, its
    # nearer; item 3 sees 0 held by 2 and its nearest least-held code 2 by one: a move would only swap the crowding
    codes = np.array([[0, 0]] * 4 + [[0, 1]])
    d = np.array([[0, 1, 2], [0, 1, 2], [0, 1, 2], [0, 2, 1], [9, 0, 9]], dtype=float)
    assert spread_collisions(codes, d).tolist() == [0, 2, 1, 0, 1]


def test_spread_collisions_leaves_no_shared_id_and_earlier_levels_alone():
    rng = np.random.default_rng(0)
    x = np.repeat(rng.normal(size=(30, 8)), 4, axis=0)  # every item has three exact duplicates
    base = RQKMeansConfig(codebook_sizes=(4,), pq_subspaces=2, pq_codes=16)
    plain = RQKMeansQuantizer(base).fit(x, seed=0)
    spread = RQKMeansQuantizer(replace(base, spread_collisions=True)).fit(x, seed=0)
    assert len(np.unique(plain.train_codes, axis=0)) < len(x)
    assert len(np.unique(spread.train_codes, axis=0)) == len(x)
    np.testing.assert_array_equal(spread.train_codes[:, :-1], plain.train_codes[:, :-1])


def test_fit_on_a_sample_assigns_and_balances_every_item():
    x, lab = _mixture(n=2000, k=8)
    cfg = RQKMeansConfig(codebook_sizes=(8, 8), balanced="residual", pq_subspaces=1, pq_codes=8, opq_iters=2)
    q = RQKMeansQuantizer(replace(cfg, max_fit_points=400)).fit(x, seed=0)
    assert q.train_codes.shape == (2000, 3)
    # balanced levels hold at most ceil(2000 / 8) items each over the whole catalogue, not just the sample
    assert np.bincount(q.train_codes[:, 1], minlength=8).max() <= 250
    assert np.bincount(q.train_codes[:, 2], minlength=8).max() <= 250
    # the unbalanced level 0 is the nearest code of every item, as encode gives it, and still finds the clusters
    assert np.array_equal(q.train_codes[:, 0], q.encode(x)[0][:, 0])
    assert all(len(set(q.train_codes[lab == c, 0].tolist())) == 1 for c in range(8))
    # a cap at or above the catalogue fits on every item: the same codes as no cap
    full = RQKMeansQuantizer(replace(cfg, max_fit_points=0)).fit(x, seed=0)
    same = RQKMeansQuantizer(replace(cfg, max_fit_points=2000)).fit(x, seed=0)
    assert np.array_equal(full.train_codes, same.train_codes)
    with pytest.raises(ValueError, match="max_fit_points"):
        RQKMeansConfig(max_fit_points=-1)
