"""Behaviour of the RQ-VAE quantizer: protocol, determinism, learning, cluster recovery, persistence, errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from onesearch.tokenizer.base import QUANTIZER_CONFIG, QUANTIZER_WEIGHTS, Quantizer
from onesearch.tokenizer.rqvae import (
    RQVAE_PRESETS,
    RQVAEConfig,
    RQVAEQuantizer,
    kmeans,
    quantization_loss,
    residual_quantize,
)
from onesearch.tokenizer.sid import collision_rate, utilization

TINY = RQVAE_PRESETS["tiny"]


def _mixture(
    n: int = 400, k: int = 8, dim: int = 24, spread: float = 0.05, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points around ``k`` random unit centres in ``dim``-d; noise of norm about ``spread``."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.arange(n) % k
    x = centres[labels] + rng.standard_normal((n, dim)) * spread / np.sqrt(dim)
    return x.astype(np.float32), labels


@pytest.fixture(scope="module")
def toy() -> np.ndarray:
    return _mixture(spread=0.4)[0]


@pytest.fixture(scope="module")
def fitted(toy: np.ndarray) -> RQVAEQuantizer:
    return RQVAEQuantizer(TINY).fit(toy, seed=0)


# -- protocol and output --------------------------------------------------------------------------------------


def test_conforms_to_protocol_and_codes_are_in_range(fitted: RQVAEQuantizer, toy: np.ndarray) -> None:
    assert isinstance(fitted, Quantizer)
    assert fitted.method == "rqvae"
    assert fitted.codebook_sizes == (8, 8)
    codes, norms = fitted.encode(toy)
    assert codes.shape == (len(toy), 2) and codes.dtype == np.int64
    assert (codes >= 0).all() and (codes < np.asarray(fitted.codebook_sizes)).all()
    assert norms.shape == (len(toy),) and np.issubdtype(norms.dtype, np.floating)
    assert np.isfinite(norms).all() and (norms >= 0).all()
    # the fitted items' codes kept from fit are what the frozen model gives them
    np.testing.assert_array_equal(fitted.train_codes, codes)
    np.testing.assert_array_equal(fitted.train_residual, norms)
    assert [cb.shape for cb in fitted.codebooks] == [(8, TINY.latent_dim), (8, TINY.latent_dim)]
    # encoding in one batch or many gives the same answer
    small_batches = RQVAEQuantizer(replace(TINY, encode_batch_size=7))
    small_batches.model, small_batches.dim = fitted.model, fitted.dim
    np.testing.assert_array_equal(small_batches.encode(toy)[0], codes)


def test_presets_follow_tiger() -> None:
    d = RQVAE_PRESETS["default"]
    assert (d.codebook_sizes, d.latent_dim, d.hidden_dims, d.beta) == (
        (256, 256, 256),
        32,
        (512, 256, 128),
        0.25,
    )
    assert d.kmeans_init and d.dead_code_restart and d.device == "auto"
    assert RQVAEQuantizer("tiny").cfg == TINY


# -- determinism and learning ---------------------------------------------------------------------------------


def test_same_seed_same_codes_and_history(fitted: RQVAEQuantizer, toy: np.ndarray) -> None:
    again = RQVAEQuantizer(TINY).fit(toy, seed=0)
    np.testing.assert_array_equal(again.encode(toy)[0], fitted.encode(toy)[0])
    assert again.history == fitted.history
    other = RQVAEQuantizer(TINY).fit(toy, seed=1)
    assert other.history != fitted.history


def test_reconstruction_loss_decreases(fitted: RQVAEQuantizer) -> None:
    h = fitted.history
    assert len(h) == TINY.epochs
    assert set(h[0]) >= {"epoch", "loss", "recon", "quant", "restarted", "warmup"}
    # warm-up epochs train the plain autoencoder: no quantization loss yet
    assert [e["warmup"] for e in h] == [e["epoch"] < TINY.warmup_epochs for e in h]
    assert all(e["quant"] == 0 for e in h[: TINY.warmup_epochs]) and all(
        e["quant"] > 0 for e in h[TINY.warmup_epochs :]
    )
    recon = np.array([e["recon"] for e in h])
    assert recon[-1] < 0.5 * recon[0]
    # a trend, not one lucky epoch: the last fifth is below the first fifth throughout
    fifth = len(recon) // 5
    assert recon[-fifth:].max() < recon[:fifth].min()
    assert all(np.isclose(e["loss"], e["recon"] + e["quant"], rtol=1e-4) for e in h)


def test_max_steps_caps_training(toy: np.ndarray) -> None:
    q = RQVAEQuantizer(replace(TINY, max_steps=5)).fit(toy)
    # 400 items in batches of 128 -> 3 steps an epoch: the cap ends training in the second epoch
    assert len(q.history) == 2


def test_well_separated_clusters_get_their_own_level0_code() -> None:
    x, labels = _mixture(n=400, k=8, dim=24, spread=0.05, seed=3)
    codes, _ = RQVAEQuantizer(TINY).fit(x, seed=0).encode(x)
    table = np.zeros((8, 8), dtype=int)
    np.add.at(table, (labels, codes[:, 0]), 1)
    # match clusters to codes one to one, greedily by count (a permutation when the codes follow the clusters)
    matched, used_rows, used_cols = 0, set(), set()
    for flat in np.argsort(-table, axis=None):
        r, c = divmod(int(flat), 8)
        if r not in used_rows and c not in used_cols:
            matched += table[r, c]
            used_rows.add(r)
            used_cols.add(c)
    assert matched / len(x) >= 0.9
    assert utilization(codes, TINY.codebook_sizes)[0] == 1.0


def test_dead_code_restart_raises_utilisation() -> None:
    # codebooks start as N(0, 1) far from the (small) latents, so without help most codes are never picked
    x, _ = _mixture(n=400, k=16, dim=24, spread=0.3, seed=5)
    base = replace(TINY, kmeans_init=False, warmup_epochs=0, codebook_sizes=(16, 16), epochs=20)
    without = RQVAEQuantizer(replace(base, dead_code_restart=False)).fit(x).encode(x)[0]
    with_restart = RQVAEQuantizer(base).fit(x).encode(x)[0]
    u_without = utilization(without, base.codebook_sizes)
    u_with = utilization(with_restart, base.codebook_sizes)
    assert u_with[0] >= u_without[0] + 0.25 and u_with[1] >= u_without[1] + 0.25
    assert collision_rate(with_restart) < collision_rate(without)


def test_l2_normalisation_makes_codes_scale_free(toy: np.ndarray) -> None:
    q = RQVAEQuantizer(replace(TINY, normalize="l2")).fit(toy)
    np.testing.assert_array_equal(q.encode(toy * 3.0)[0], q.encode(toy)[0])


# -- the quantization step ------------------------------------------------------------------------------------


def test_residual_quantize_by_hand() -> None:
    level0 = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    level1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    z = torch.tensor([[9.0, 1.2], [0.4, 8.0], [0.2, -0.3]], requires_grad=True)
    codes, quantized = residual_quantize(z, [level0, level1])
    # (9, 1.2): nearest (10, 0), residual (-1, 1.2), nearest (0, 1) -> quantized (10, 1), residual (-1, 0.2)
    # (0.4, 8): nearest (0, 10), residual (0.4, -2), nearest (0, -1) -> quantized (0, 9), residual (0.4, -1)
    # (0.2, -0.3): nearest (0, 0), residual (0.2, -0.3), nearest (0, -1) -> quantized (0, -1), residual (0.2, 0.7)
    assert codes.dtype == torch.int64
    assert codes.tolist() == [[1, 1], [2, 3], [0, 3]]
    torch.testing.assert_close(quantized, torch.tensor([[10.0, 1.0], [0.0, 9.0], [0.0, -1.0]]))
    torch.testing.assert_close(z - quantized, torch.tensor([[-1.0, 0.2], [0.4, -1.0], [0.2, 0.7]]))
    # straight-through: the gradient reaches z unchanged
    (quantized * torch.tensor([1.0, 2.0])).sum().backward()
    torch.testing.assert_close(z.grad, torch.tensor([[1.0, 2.0]] * 3))


def test_quantization_loss_moves_only_chosen_codewords_and_matches_hand_value() -> None:
    level0 = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], requires_grad=True)
    level1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], requires_grad=True)
    z = torch.tensor([[9.0, 1.2]], requires_grad=True)
    codes, _ = residual_quantize(z, [level0, level1])
    loss = quantization_loss(z, codes, [level0, level1], beta=0.25)
    # level 0: residual (9, 1.2) vs (10, 0): mean sq error (1 + 1.44) / 2 = 1.22
    # level 1: residual (-1, 1.2) vs (0, 1): (1 + 0.04) / 2 = 0.52; each counted (1 + beta) times
    assert loss.item() == pytest.approx(1.25 * (1.22 + 0.52))
    loss.backward()
    assert level0.grad[[0, 2]].abs().sum() == 0 and level0.grad[1].abs().sum() > 0
    assert level1.grad[[0, 2, 3]].abs().sum() == 0 and level1.grad[1].abs().sum() > 0
    assert z.grad.abs().sum() > 0


def test_kmeans_finds_separated_blobs() -> None:
    g = torch.Generator().manual_seed(0)
    means = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    x = means.repeat_interleave(50, 0) + 0.1 * torch.randn(150, 2, generator=g)
    centres = kmeans(x, 3, 10, g)
    # every blob mean has a centre within 0.1 of it (so one centre per blob)
    assert torch.cdist(means, centres).min(1).values.max() < 0.1
    # fewer points than codes still gives k centres, each a data point
    assert kmeans(x[:2], 5, 3, g).shape == (5, 2)


# -- persistence ----------------------------------------------------------------------------------------------


def test_save_load_round_trip(fitted: RQVAEQuantizer, toy: np.ndarray, tmp_path: Path) -> None:
    fitted.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {QUANTIZER_CONFIG, QUANTIZER_WEIGHTS}
    loaded = RQVAEQuantizer.load(tmp_path)
    assert (
        loaded.cfg == fitted.cfg
        and loaded.codebook_sizes == fitted.codebook_sizes
        and loaded.dim == toy.shape[1]
    )
    before, after = fitted.encode(toy), loaded.encode(toy)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    # new (cold-start) items go through the same frozen codebooks
    fresh = _mixture(n=50, spread=0.4, seed=9)[0]
    np.testing.assert_array_equal(loaded.encode(fresh)[0], fitted.encode(fresh)[0])


@pytest.mark.parametrize("missing", [QUANTIZER_CONFIG, QUANTIZER_WEIGHTS])
def test_load_names_the_missing_file(fitted: RQVAEQuantizer, tmp_path: Path, missing: str) -> None:
    fitted.save(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.")):
        RQVAEQuantizer.load(tmp_path)


def test_load_rejects_weights_of_another_shape(
    fitted: RQVAEQuantizer, toy: np.ndarray, tmp_path: Path
) -> None:
    fitted.save(tmp_path / "a")
    RQVAEQuantizer(replace(TINY, latent_dim=4)).fit(toy).save(tmp_path / "b")
    (tmp_path / "b" / QUANTIZER_WEIGHTS).replace(tmp_path / "a" / QUANTIZER_WEIGHTS)
    with pytest.raises(ValueError, match="does not match|do not match"):
        RQVAEQuantizer.load(tmp_path / "a")


# -- errors ---------------------------------------------------------------------------------------------------


def test_encode_rejects_bad_embeddings(fitted: RQVAEQuantizer, toy: np.ndarray) -> None:
    bad = toy[:5].copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or inf, first at row 3"):
        fitted.encode(bad)
    with pytest.raises(ValueError, match="2-D"):
        fitted.encode(toy[0])
    with pytest.raises(
        ValueError, match=f"dimension 10, the quantizer was fitted on dimension {toy.shape[1]}"
    ):
        fitted.encode(toy[:, :10])


def test_fit_rejects_bad_input_and_encode_needs_fit(toy: np.ndarray) -> None:
    with pytest.raises(ValueError, match="NaN or inf"):
        RQVAEQuantizer(TINY).fit(np.full((10, 4), np.inf))
    with pytest.raises(ValueError, match="at least 2 items"):
        RQVAEQuantizer(TINY).fit(toy[:1])
    with pytest.raises(RuntimeError, match="not fitted"):
        RQVAEQuantizer(TINY).encode(toy)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="normalize"):
        RQVAEConfig(normalize="zscore")
    with pytest.raises(ValueError, match="codebook_sizes"):
        RQVAEConfig(codebook_sizes=())
    with pytest.raises(ValueError, match="warmup_epochs"):
        RQVAEConfig(epochs=5, warmup_epochs=5)
    with pytest.raises(ValueError, match="unknown field"):
        RQVAEConfig.from_dict({"codebook_size": 8})
    assert RQVAEConfig.from_dict(TINY.to_dict()) == TINY
    assert RQVAEConfig(codebook_sizes=[4, 4]).codebook_sizes == (4, 4)  # JSON lists become tuples


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fits_and_round_trips_on_cuda(toy: np.ndarray, tmp_path: Path) -> None:
    q = RQVAEQuantizer(replace(TINY, device="cuda")).fit(toy)
    codes = q.encode(toy)[0]
    assert utilization(codes, TINY.codebook_sizes)[0] >= 0.75
    q.save(tmp_path)
    np.testing.assert_array_equal(RQVAEQuantizer.load(tmp_path).encode(toy)[0], codes)
    cpu = RQVAEQuantizer.load(tmp_path, device="cpu")
    assert (cpu.encode(toy)[0] == codes).mean() > 0.99
