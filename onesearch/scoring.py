"""Batch scoring of (query, user, history) requests with a generator bundle, with a row-level bad-input policy.

Input columns: ``request_id`` (unique, not null), ``user_id`` (not null), ``query`` (text; null or empty = a
recommendation request), ``history`` (list of item ids, oldest first, or its JSON text in csv input; null = empty). A row is *bad*, skipped and
reported with its reason, never stopping the batch, when:

| reason | when |
|---|---|
| ``null request_id`` | the request id is missing |
| ``duplicate request_id`` | the id was seen before in this input (the first one is scored) |
| ``null user_id`` | the user id is missing |
| ``query over N characters`` | the query is longer than ``max_query_chars`` |
| ``empty query: search-only model`` | no query, and the model was trained for search only |
| ``query has no known word pieces`` | the model cannot read any of the query |
| ``malformed history`` | the history is not a list of integers (or holds nulls) |
| ``malformed history: ...`` | a text (csv) history that is not a JSON list of integers, e.g. ``[2383 4563]`` as pandas writes a numpy array |
| ``unknown items in history: [...]`` | the history names items the model's catalogue does not have |
| ``nothing to go on`` | empty query and empty history |

Scored rows come out as ``k`` rows each: ``request_id, rank (1..k), item_id, score, sid``;
the score is the ranking score of :func:`onesearch.model.beam.beam_search` (the ID's log-probability, with the dense
head's term and the popularity prior where the bundle has them).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import polars as pl

from onesearch.data.schema import EVENT, ITEM_ID, POSITION, QUERY, REQUEST_ID, TIMESTAMP, USER_ID
from onesearch.model.beam import BEAM, K, for_decoding
from onesearch.model.bundle import GeneratorBundle
from onesearch.model.text import UNK

HISTORY = "history"
RANK, SCORE, SID = "rank", "score", "sid"
ROW, REASON = "row", "reason"
INPUT_COLUMNS = (REQUEST_ID, USER_ID, QUERY, HISTORY)
MALFORMED_TEXT_HISTORY = "malformed history: csv needs a JSON list of item ids, e.g. [2383, 4563]"
"""The reason of a text history that is not a JSON list (numpy's ``[2383 4563]``, as pandas writes it, is not)."""
META_DATASET = "onesearch.dataset"
"""Parquet key-value metadata of a request file: the dataset its item ids come from (optional)."""
META_CATALOGUE = "onesearch.catalogue"
"""Parquet key-value metadata of a request file: :func:`catalogue_hash` of that dataset's items (optional)."""
OUTPUT_COLUMNS = (REQUEST_ID, RANK, ITEM_ID, SCORE, SID)
ERROR_COLUMNS = (REQUEST_ID, ROW, REASON)


def output_schema(rid_dtype=pl.String) -> dict:
    """The dtypes of the scored rows (the request id keeps the input's dtype)."""
    return {REQUEST_ID: rid_dtype, RANK: pl.Int16, ITEM_ID: pl.Int64, SCORE: pl.Float32, SID: pl.String}


def error_schema(rid_dtype=pl.String) -> dict:
    """The dtypes of the bad rows: the request id, the row's position in its chunk, the reason."""
    return {REQUEST_ID: rid_dtype, ROW: pl.Int64, REASON: pl.String}


def catalogue_hash(item_ids) -> str:
    """sha256 of the sorted item ids of a catalogue: which items a file's ids refer to, in 16 hex digits."""
    ids = np.unique(np.asarray(item_ids, dtype=np.int64))
    return hashlib.sha256(ids.tobytes()).hexdigest()[:16]


def search_requests(interactions: pl.DataFrame, log: pl.DataFrame) -> pl.DataFrame:
    """Score input (``request_id, user_id, query, history``) for the rows of a search ``log``, in their order: the
    history of a request is its user's purchases before it (the first ``position`` of them, oldest first)."""
    bought = (
        interactions.filter(pl.col(EVENT) == "purchase")
        .sort(USER_ID, TIMESTAMP)
        .group_by(USER_ID, maintain_order=True)
        .agg(pl.col(ITEM_ID).alias("bought"))
    )
    return log.join(bought, on=USER_ID, how="left", maintain_order="left").select(
        pl.col(REQUEST_ID).cast(pl.String),
        pl.col(USER_ID).cast(pl.String),
        QUERY,
        pl.col("bought").list.head(pl.col(POSITION)).alias(HISTORY),
    )


def write_requests(df: pl.DataFrame, path, dataset: str, item_ids) -> None:
    """Write a request file that records where its item ids come from (``dataset`` and the catalogue's hash), so
    that ``score`` refuses it with a model of another catalogue instead of scoring wherever ids happen to overlap."""
    check_columns(df, str(path))
    df.write_parquet(path, metadata={META_DATASET: str(dataset), META_CATALOGUE: catalogue_hash(item_ids)})


def check_provenance(recorded: dict[str, str], bundle: GeneratorBundle, where: str) -> None:
    """Refuse a request file whose recorded dataset or catalogue (see :func:`write_requests`) is not the model's.
    A file that records neither is accepted as it is (its ids are checked item by item)."""
    got_ds, got_cat = recorded.get(META_DATASET), recorded.get(META_CATALOGUE)
    model_ds = bundle.meta.get("dataset")
    if got_ds is not None and model_ds is not None and got_ds != model_ds:
        raise ValueError(
            f"{where}: the requests are from dataset {got_ds!r}, the model was trained on {model_ds!r}; "
            "item ids of one catalogue mean other products in another"
        )
    here = catalogue_hash(bundle.table.item_ids)
    if got_cat is not None and got_cat != here:
        raise ValueError(
            f"{where}: the requests' catalogue (hash {got_cat}) is not the model's (hash {here}): another "
            "version or slice of the catalogue; score them with a model of that catalogue"
        )


@dataclass(frozen=True)
class ScoreSettings:
    """How each request is decoded."""

    k: int = K
    """Items returned per request."""
    beam: int = BEAM
    """Beam width (at least k)."""
    batch_size: int = 256
    """Requests per decoding batch."""
    max_query_chars: int = 500
    """Longer queries are bad rows."""
    precision: str = "fp32"
    """Decoding precision: fp32, bf16 (weights in bfloat16, scores in float32; 1.6x the requests/s of float32 on a
    CPU with AMX, quality within 0.4% on Beauty) or auto (bf16 where the device multiplies it natively)."""
    compile: bool = False
    """Compile the encoder and the per-level decoding step with torch.compile (2.2x float32 with bf16; the first
    batch of each shape compiles, tens of seconds)."""


def check_columns(df: pl.DataFrame, where: str) -> None:
    """Raise a ``ValueError`` naming the missing input columns (a whole-input problem, not a row problem)."""
    missing = [c for c in INPUT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: missing input columns {missing} (need {list(INPUT_COLUMNS)})")


class Scorer:
    """Scores chunks of requests with one loaded bundle; keeps the request ids it has seen (for duplicates)."""

    def __init__(self, bundle: GeneratorBundle, settings: ScoreSettings, seen: set | None = None) -> None:
        if (settings.precision != "fp32" or settings.compile) and not hasattr(bundle.model, "decoding"):
            bundle.model = for_decoding(bundle.model, settings.precision, settings.compile)  # once per bundle
        self.bundle = bundle
        self.settings = settings
        self.seen: set = set() if seen is None else seen
        tasks = bundle.meta.get("tasks") or ["search", "recommend"]
        self.serves_recommend = "recommend" in tasks
        self.serves_search = bundle.vocab is not None

    def _check(self, rid, uid, query, history) -> tuple[str | None, list[int], str | None]:
        s = self.settings
        if rid is None:
            return "null request_id", [], None
        if rid in self.seen:
            return "duplicate request_id", [], None
        self.seen.add(rid)
        if uid is None:
            return "null user_id", [], None
        q = None if query is None or not str(query).strip() else str(query)
        if q is not None and len(q) > s.max_query_chars:
            return f"query over {s.max_query_chars} characters", [], None
        if q is None and not self.serves_recommend:
            return "empty query: search-only model", [], None
        if q is not None and not self.serves_search:
            return "query given to a recommendation-only model", [], None
        if isinstance(history, str):  # text inputs (csv) carry the history as a JSON list
            try:
                history = json.loads(history) if history.strip() else None
            except json.JSONDecodeError:
                return MALFORMED_TEXT_HISTORY, [], None
            if history is not None and not isinstance(history, list):
                return MALFORMED_TEXT_HISTORY, [], None
        if history is None:
            h: list[int] = []
        else:
            try:
                h = [int(x) for x in history]
                if any(x is None for x in history):
                    raise TypeError
            except (TypeError, ValueError):
                return "malformed history", [], None
        if h:
            ids = np.asarray(h, dtype=np.int64)
            unknown = sorted(set(ids[~self.bundle.table.contains(ids)].tolist()))
            if unknown:
                return (
                    f"unknown items in history: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}",
                    [],
                    None,
                )
        if q is None and not h:
            return "nothing to go on", [], None
        if q is not None:
            pieces = self.bundle.vocab.encode([q], self.bundle.model.cfg.max_query_tokens)[0]
            if not np.any(pieces > UNK):
                return "query has no known word pieces", [], None
        return None, h, q

    def score(self, df: pl.DataFrame, positions: bool = False) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Score one chunk: (scored rows, bad rows ``request_id, row, reason``), ``row`` being the position in the
        chunk. With ``positions`` the scored rows carry ``row`` too."""
        s = self.settings
        good_rows, good_ids, histories, queries = [], [], [], []
        bad_ids, bad_rows, reasons = [], [], []
        for j, (rid, uid, query, history) in enumerate(
            zip(
                df[REQUEST_ID].to_list(),
                df[USER_ID].to_list(),
                df[QUERY].to_list(),
                df[HISTORY].to_list(),
                strict=True,
            )
        ):
            reason, h, q = self._check(rid, uid, query, history)
            if reason is None:
                good_rows.append(j)
                good_ids.append(rid)
                histories.append(h)
                queries.append(q)
            else:
                bad_ids.append(rid)
                bad_rows.append(j)
                reasons.append(reason)
        rid_dtype = df.schema[REQUEST_ID]
        err = pl.DataFrame(
            dict(zip(ERROR_COLUMNS, (bad_ids, bad_rows, reasons), strict=True)),
            schema=error_schema(rid_dtype),
        )
        if not good_ids:
            out = empty_output(rid_dtype)
            return (out.with_columns(pl.lit(0, dtype=pl.Int64).alias(ROW)).head(0) if positions else out), err
        ids, scores = self.bundle.retrieve(
            histories, queries, k=s.k, beam=max(s.beam, s.k), batch_size=s.batch_size
        )
        n, k = ids.shape
        flat = ids.reshape(-1)
        found = flat >= 0
        sid = np.full(flat.shape, None, dtype=object)  # "c1-c2-...", made for the returned items only
        if found.any():
            codes = self.bundle.table.codes[self.bundle.table.rows(flat[found])]
            sid[found] = ["-".join(map(str, row)) for row in codes.tolist()]
        cols = {
            REQUEST_ID: pl.Series(np.repeat(np.array(good_ids, dtype=object), k).tolist(), dtype=rid_dtype),
            RANK: np.tile(np.arange(1, k + 1, dtype=np.int16), n),
            ITEM_ID: flat.astype(np.int64),
            SCORE: scores.reshape(-1).astype(np.float32),
            SID: pl.Series(sid.tolist(), dtype=pl.String),
        }
        if positions:
            cols[ROW] = np.repeat(np.asarray(good_rows, dtype=np.int64), k)
        return pl.DataFrame(cols).filter(pl.col(ITEM_ID) >= 0), err


def empty_output(rid_dtype=pl.String) -> pl.DataFrame:
    return pl.DataFrame(schema=output_schema(rid_dtype))
