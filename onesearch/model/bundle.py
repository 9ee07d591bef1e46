"""A trained generator with everything it needs to serve: SID table, trie, query vocabulary, checkpoint.

A bundle folder holds ``generator.safetensors`` + ``generator.json`` (the checkpoint), ``sid.parquet`` +
``sid.json`` (the SID table it was trained with) and, when it reads queries, ``query_vocab.json``. Loading checks
that the three belong together (hashes recorded in ``generator.json``), so a bundle cannot silently pair a model
with another catalogue's IDs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from onesearch.decode import SIDTrie
from onesearch.io import atomic_dir
from onesearch.model.beam import BEAM, Decoded, K, beam_search
from onesearch.model.data import Examples, requests
from onesearch.model.generator import CONFIG_FILE, Generator, load_checkpoint, save_checkpoint
from onesearch.model.text import VOCAB_FILE, QueryTokenizer
from onesearch.tokenizer.sid import SIDTable


@dataclass
class GeneratorBundle:
    model: Generator
    table: SIDTable
    vocab: QueryTokenizer | None
    meta: dict

    def __post_init__(self) -> None:
        self._trie: SIDTrie | None = None

    @property
    def trie(self) -> SIDTrie:
        if self._trie is None or self._trie.valid[0].device != self.device:
            self._trie = SIDTrie.build(self.table.codes, self.table.codebook_sizes).to(self.device)
        return self._trie

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> GeneratorBundle:
        self.model.to(device)
        return self

    def save(self, directory: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write the bundle atomically (an existing bundle at ``directory`` is replaced)."""
        with atomic_dir(Path(directory), CONFIG_FILE) as tmp:
            self.table.save(tmp)
            if self.vocab is not None:
                self.vocab.save(tmp)
            save_checkpoint(
                self.model,
                tmp,
                sid_hash=self.table.content_hash(),
                vocab_hash=None if self.vocab is None else self.vocab.content_hash(),
                extra={**{k: v for k, v in self.meta.items() if k not in _OWN}, **(extra or {})},
            )
        return Path(directory)

    @classmethod
    def load(cls, directory: str | os.PathLike, device: torch.device | str = "cpu") -> GeneratorBundle:
        d = Path(directory)
        if not (d / CONFIG_FILE).exists():
            raise FileNotFoundError(f"{d}: not a generator bundle (no {CONFIG_FILE})")
        table = SIDTable.load(d)
        vocab = QueryTokenizer.load(d) if (d / VOCAB_FILE).exists() else None
        model, meta = load_checkpoint(
            d,
            table.codes,
            sid_hash=table.content_hash(),
            vocab_hash=None if vocab is None else vocab.content_hash(),
        )
        return cls(model.to(device).eval(), table, vocab, meta)

    def requests(self, histories: list[list[int]], queries: list[str | None] | None = None) -> Examples:
        """Model inputs for requests given as item ids and query strings (None = a recommendation request)."""
        cfg = self.model.cfg
        tasks = self.meta.get("tasks")
        if tasks and "recommend" not in tasks and (queries is None or any(q is None for q in queries)):
            raise ValueError(
                "this model was trained for search only: every request needs a query (train with --mix-recommend "
                "or --task recommend to serve recommendations)"
            )
        return requests(self.table, self.vocab, histories, queries, cfg.max_history, cfg.max_query_tokens)

    def retrieve(
        self,
        histories: list[list[int]],
        queries: list[str | None] | None = None,
        *,
        k: int = K,
        beam: int | None = None,
        batch_size: int = 256,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item ids (-1 where fewer exist) and their log-probabilities for each request."""
        ex = self.requests(histories, queries)
        beam = max(k, beam or BEAM)
        ids, scores = [], []
        self.model.eval()
        for s in range(0, ex.size, batch_size):
            b = ex.batch(np.arange(s, min(s + batch_size, ex.size))).to(self.device)
            out: Decoded = beam_search(self.model, b, self.trie, beam=beam, k=k)
            rows = out.items.cpu().numpy()
            ids.append(np.where(rows >= 0, self.table.item_ids[np.maximum(rows, 0)], -1))
            scores.append(out.scores.float().cpu().numpy())
        if not ids:
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        return np.concatenate(ids), np.concatenate(scores)


_OWN = {"format", "config", "sid_hash", "vocab_hash", "weights_sha256", "params"}


class GenerativeRetriever:
    """The ``generative`` system: a bundle behind the common retriever interface."""

    name = "generative"

    def __init__(self, bundle: GeneratorBundle, beam: int = 50, batch_size: int = 256):
        self.bundle, self.beam, self.batch_size = bundle, beam, batch_size

    def retrieve(self, requests, k: int):
        from onesearch.retrieval import Retrieved

        ids, scores = self.bundle.retrieve(
            list(requests.history),
            list(requests.query),
            k=k,
            beam=max(self.beam, k),
            batch_size=self.batch_size,
        )
        return Retrieved(ids.astype(np.int64), scores.astype(np.float32))
