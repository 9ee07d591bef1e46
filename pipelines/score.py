"""score: rank products for a batch of (query, user, history) requests with a generator, resumably.

``--engine ray`` scores the same chunks with Ray Data (``map_batches`` over an actor pool that loads the model once
per actor) on a local cluster or ``--ray-address``, and writes exactly the files the local engine writes: the driver
reads the input in order, and applies the duplicate-id rule across the whole input before writing.

Reads ``--input`` (parquet file or folder, csv, or a DuckDB database with ``--table``) in chunks of ``--chunk-rows``
rows; chunk i becomes ``part-<i>.parquet`` (k rows per scored request: ``request_id, rank, item_id, score, sid``) and
``errors-<i>.parquet`` (``request_id, row, reason`` for every bad row, see ``onesearch.scoring``), each written to a
temporary name and renamed, then recorded in ``manifest.json``. Re-run after any interruption (``kill -9``
included) with the same arguments, it skips the chunks in the manifest and redoes the one it was in, so the output
holds every input row exactly once. The manifest also records the input and settings; a re-run with others refuses
to mix them into the same output.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import polars as pl
import pyarrow as pa

from onesearch.data.schema import REQUEST_ID, USER_ID
from onesearch.io import atomic_write, remove_temporaries
from onesearch.model.beam import check_precision
from onesearch.scoring import (
    META_CATALOGUE,
    META_DATASET,
    OUTPUT_COLUMNS,
    RANK,
    REASON,
    ROW,
    Scorer,
    ScoreSettings,
    check_columns,
    check_provenance,
    error_schema,
    output_schema,
)
from pipelines import tracking
from pipelines.engines import start_ray

JOB = "score"


@dataclass(frozen=True)
class Config:
    """Settings of the score job."""

    model: str = ""
    """A generator bundle folder, or an MLflow URI of one (runs:/..., models:/...)."""
    input: str = ""
    """Requests: a parquet file or folder, a .csv file, or a DuckDB database file (with --table)."""
    table: str = ""
    """Table to read when --input is a DuckDB database."""
    output: str = "artifacts/scores"
    """Output folder (part files, error files, manifest.json)."""
    settings: ScoreSettings = field(default_factory=ScoreSettings)
    """Decoding and bad-row settings."""
    chunk_rows: int = 10_000
    """Rows per chunk (one part file each)."""
    engine: str = "local"
    """local (this process) or ray (Ray Data, an actor pool with one model per actor)."""
    ray_address: str = ""
    """Ray cluster to join; empty = start a local one."""
    workers: int = 2
    """Ray actors scoring in parallel."""
    ray_temp_dir: str = ""
    """Temporary folder of a local Ray cluster (empty = Ray's default)."""
    progress: bool = True
    """Report each chunk on stderr."""


PRESETS = {"default": Config(), "tiny": Config(chunk_rows=64)}


def load_bundle(model: str):
    """A bundle folder, or an MLflow URI of a bundle or of the pyfunc model (its ``bundle`` artifact)."""
    from onesearch.model.bundle import GeneratorBundle

    path = Path(model)
    if not path.exists():
        import mlflow

        path = Path(mlflow.artifacts.download_artifacts(tracking.resolve_model(model)))
    # a bundle folder, or a pyfunc model folder whose "bundle" artifact is a folder under artifacts/
    for candidate in (path, *sorted(p for p in (path / "artifacts").glob("*") if p.is_dir())):
        if (candidate / "generator.json").is_file():
            return GeneratorBundle.load(candidate), str(candidate.resolve())
    raise FileNotFoundError(f"{model}: no generator bundle there (expected generator.json)")


def read_chunks(cfg: Config) -> Iterator[pl.DataFrame]:
    """The input in chunks of exactly ``chunk_rows`` rows (the last one shorter), always in the same order."""
    src = Path(cfg.input)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such input file or folder")
    suffix = src.suffix.lower()
    if suffix in (".duckdb", ".db"):
        import duckdb

        if not cfg.table:
            raise ValueError(f"{src}: a DuckDB input needs --table")
        con = duckdb.connect(str(src), read_only=True)
        batches = con.execute(f'select * from "{cfg.table}"').fetch_record_batch(cfg.chunk_rows)
    elif suffix == ".csv":
        import pyarrow.csv as pacsv

        batches = pacsv.open_csv(
            src,
            convert_options=pacsv.ConvertOptions(
                column_types={REQUEST_ID: pa.string(), USER_ID: pa.string()}
            ),
        )
    else:
        import pyarrow.dataset as pads

        batches = pads.dataset(src, format="parquet").to_batches(batch_size=cfg.chunk_rows, use_threads=False)
    pending: list[pa.RecordBatch] = []
    n = 0
    for batch in batches:
        while batch.num_rows:
            take = min(batch.num_rows, cfg.chunk_rows - n)
            pending.append(batch.slice(0, take))
            batch = batch.slice(take)
            n += take
            if n == cfg.chunk_rows:
                yield pl.from_arrow(pa.Table.from_batches(pending))
                pending, n = [], 0
    if n:
        yield pl.from_arrow(pa.Table.from_batches(pending))


KIND = "onesearch-score"
"""The ``kind`` a score output's manifest.json records (manifests from before it have none and are accepted)."""


def recorded_provenance(cfg: Config) -> dict[str, str]:
    """The dataset and catalogue a parquet input records in its key-value metadata (every file of a folder, which
    must agree); {} for other inputs and files that record nothing."""
    src = Path(cfg.input)
    if src.suffix.lower() in (".duckdb", ".db", ".csv"):
        return {}
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    files = (
        sorted(pads.dataset(src, format="parquet").files) if src.is_dir() else [src]
    )  # what read_chunks reads
    found: dict[str, str] = {}
    for f in files:
        meta = pq.read_metadata(f).metadata or {}
        for key in (META_DATASET, META_CATALOGUE):
            v = meta.get(key.encode())
            if v is None:
                continue
            v = v.decode()
            if found.setdefault(key, v) != v:
                raise ValueError(f"{src}: its files record different {key} values ({found[key]!r}, {v!r})")
    return found


def _identity(cfg: Config, model_path: str) -> dict:
    st = Path(cfg.input).stat()
    return {
        "input": str(Path(cfg.input).resolve()),
        "input_bytes": st.st_size if Path(cfg.input).is_file() else None,
        "input_mtime": st.st_mtime,
        "table": cfg.table,
        "model": str(Path(model_path).resolve()),
        "settings": asdict(cfg.settings),
        "chunk_rows": cfg.chunk_rows,
    }


def _write_atomic(df: pl.DataFrame, path: Path) -> None:
    atomic_write(path, df.write_parquet)


def _save_manifest(manifest: dict, path: Path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1)))


def main(cfg: Config) -> dict:
    if not cfg.model or not cfg.input:
        raise ValueError("score needs --model and --input")
    if cfg.chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {cfg.chunk_rows}")
    if cfg.engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {cfg.engine!r}")
    check_precision(cfg.settings.precision)
    bundle, model_path = load_bundle(cfg.model)
    # the input's columns are checked before anything is written
    first = next(read_chunks(replace(cfg, chunk_rows=1)), None)
    if first is not None:
        check_columns(first, cfg.input)
    check_provenance(recorded_provenance(cfg), bundle, cfg.input)
    out = Path(cfg.output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {out} is a file, not a folder")
    manifest_path = out / "manifest.json"
    identity = _identity(cfg, model_path)
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
            ok = manifest.get("kind", KIND) == KIND and isinstance(manifest.get("chunks"), dict)
        except (ValueError, AttributeError):
            ok = False
        if not ok:
            raise ValueError(f"{manifest_path} is not a score manifest; use another --output")
        if manifest.get("identity") != identity:
            raise ValueError(
                f"{out} holds scores of another input, model or settings (see its manifest.json); "
                "use another --output or delete it"
            )
        remove_temporaries(out)  # half-written files of a run that was killed
    else:
        # a score output starts empty: anything else there (a model bundle, other files) is not ours to mix into
        if out.exists() and any(not p.name.startswith(f".{manifest_path.name}.") for p in out.iterdir()):
            raise ValueError(
                f"--output {out} is not empty and holds no score manifest.json (not a score output); "
                "use a new or empty folder"
            )
        out.mkdir(parents=True, exist_ok=True)
        manifest = {"kind": KIND, "identity": identity, "chunks": {}}
        _save_manifest(manifest, manifest_path)
    done = manifest["chunks"]
    seen: set = set()
    for key in done:  # request ids already handled, for the duplicate check
        for name in (f"part-{int(key):06d}.parquet", f"errors-{int(key):06d}.parquet"):
            seen.update(pl.read_parquet(out / name, columns=[REQUEST_ID])[REQUEST_ID].drop_nulls().to_list())
    scorer = Scorer(bundle, cfg.settings, seen=seen)
    with tracking.job_run(JOB, cfg):
        t0 = time.perf_counter()
        rows_now = 0
        if cfg.engine == "ray":
            source = _ray_scored(cfg, model_path, enumerate(read_chunks(cfg)), done, seen)
        else:
            source = ((i, c, None) for i, c in enumerate(read_chunks(cfg)))
        for i, chunk, ready in source:
            if str(i) in done:
                continue
            scored, errors = ready if ready is not None else scorer.score(chunk)
            errors = errors.with_columns(pl.col("row") + i * cfg.chunk_rows)  # the row's number in the input
            _write_atomic(scored, out / f"part-{i:06d}.parquet")
            _write_atomic(errors, out / f"errors-{i:06d}.parquet")
            n_scored = chunk.height - errors.height
            done[str(i)] = {"rows_in": chunk.height, "rows_scored": n_scored, "rows_failed": errors.height}
            _save_manifest(manifest, manifest_path)
            rows_now += chunk.height
            if cfg.progress:
                rate = rows_now / max(time.perf_counter() - t0, 1e-9)
                print(
                    f"[score] chunk {i}: {chunk.height} rows, {errors.height} bad, {rate:.0f} rows/s",
                    file=sys.stderr,
                )
        seconds = time.perf_counter() - t0
        result = {
            "rows_in": sum(c["rows_in"] for c in done.values()),
            "rows_scored": sum(c["rows_scored"] for c in done.values()),
            "rows_failed": sum(c["rows_failed"] for c in done.values()),
            "output": str(out),
            "rows_per_second": rows_now / seconds if rows_now else None,
            "rows_this_run": rows_now,
            "chunks": len(done),
            "mkl_cbwr": os.environ.get("MKL_CBWR"),
        }
        tracking.log_metrics({k: v for k, v in result.items() if isinstance(v, (int, float))})
    return result


class RayScorer:
    """Ray actor: loads the bundle once and scores batches; every output row keeps its input position ``_row``."""

    def __init__(self, bundle_dir: str, settings: dict) -> None:
        from onesearch.model.bundle import GeneratorBundle

        self.bundle = GeneratorBundle.load(bundle_dir)
        self.settings = ScoreSettings(**settings)

    def __call__(self, batch: pa.Table) -> pa.Table:
        df = pl.from_arrow(batch)
        scored, errors = Scorer(self.bundle, self.settings).score(df.drop("_row"), positions=True)
        where = df["_row"]
        scored = scored.with_columns(pl.Series("_row", where.gather(scored["row"]))).drop("row")
        errors = errors.with_columns(pl.Series("_row", where.gather(errors["row"]))).drop("row")
        return pl.concat(
            [scored.with_columns(pl.lit(None, dtype=pl.String).alias(REASON)), errors],
            how="diagonal_relaxed",
        ).to_arrow()


def _ray_scored(cfg: Config, bundle_dir: str, chunks, done: dict, seen: set):
    """Score the chunks not yet done with Ray Data; yield ``(i, chunk, (scored, errors))`` in input order."""
    import ray

    todo = [(i, c) for i, c in chunks if str(i) not in done]
    if not todo:
        return
    check_columns(todo[0][1], cfg.input)
    init: dict = {"include_dashboard": False, "ignore_reinit_error": True, "log_to_driver": False}
    if os.environ.get("MKL_CBWR"):  # the actors compute exactly as this process does (see pipelines.cli)
        init["runtime_env"] = {"env_vars": {"MKL_CBWR": os.environ["MKL_CBWR"]}}
    if cfg.ray_address:
        init["address"] = cfg.ray_address
    elif cfg.ray_temp_dir:
        init["_temp_dir"] = str(Path(cfg.ray_temp_dir).resolve())
    tables = [
        c.with_columns(
            pl.int_range(0, c.height, dtype=pl.Int64).alias("_row") + i * cfg.chunk_rows
        ).to_arrow()
        for i, c in todo
    ]
    start_ray(init)
    try:
        ds = ray.data.from_arrow(tables).map_batches(
            RayScorer,
            fn_constructor_kwargs={"bundle_dir": bundle_dir, "settings": asdict(cfg.settings)},
            concurrency=cfg.workers,
            batch_size=cfg.chunk_rows,
            batch_format="pyarrow",
        )
        result = pl.concat([pl.from_arrow(t) for t in ray.get(ds.to_arrow_refs())], how="diagonal_relaxed")
    finally:
        ray.shutdown()
    # The duplicate rule over the whole input, as the local engine applies it row by row: the first row with an id
    # keeps its outcome, every later row with that id (or one seen in a finished chunk) is a duplicate.
    inputs = pl.concat([pl.from_arrow(t).select(REQUEST_ID, "_row") for t in tables])
    first = inputs.drop_nulls(REQUEST_ID).group_by(REQUEST_ID).agg(pl.col("_row").min().alias("_first"))
    result = result.join(first, on=REQUEST_ID, how="left")
    dup = pl.col("_first").is_not_null() & (pl.col("_row") > pl.col("_first"))
    if seen:
        dup = dup | pl.col(REQUEST_ID).is_in(list(seen))
    dups = (
        result.filter(dup)
        .group_by("_row")
        .agg(pl.col(REQUEST_ID).first())
        .with_columns(pl.lit("duplicate request_id").alias(REASON))
    )
    result = pl.concat([result.filter(~dup | dup.is_null()), dups], how="diagonal_relaxed")
    for i, chunk in todo:
        lo = i * cfg.chunk_rows
        part = result.filter(pl.col("_row").is_between(lo, lo + chunk.height - 1))
        rid = chunk.schema[REQUEST_ID]
        scored = (
            part.filter(pl.col(REASON).is_null())
            .sort("_row", RANK)
            .select(OUTPUT_COLUMNS)
            .cast(output_schema(rid))
        )
        errors = (
            part.filter(pl.col(REASON).is_not_null())
            .sort("_row")
            .select(REQUEST_ID, (pl.col("_row") - lo).alias(ROW), REASON)
            .cast(error_schema(rid))
        )
        yield i, chunk, (scored, errors)
