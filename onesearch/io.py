"""Writing outputs so that a crash leaves the old output or none, never half of one."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_temporaries(folder: str | os.PathLike, names: str = "*") -> int:
    """Delete what :func:`atomic_write` leaves in ``folder`` when a process is killed mid-write (``.<name>.<random>``
    for files matching ``names``); returns how many. Call it before resuming into a folder."""
    gone = 0
    for p in Path(folder).glob(f".{names}.*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            gone += 1
    return gone


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, marker: str) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out`` whole.

    An existing ``out`` is replaced only if it holds ``marker`` (the file every such output has), so a
    mistyped ``--output`` never deletes a folder this toolkit did not write.
    """
    out = Path(out)
    if out.exists() and not (out / marker).is_file():
        raise FileExistsError(
            f"{out} exists and is not an earlier output (it has no {marker}); refusing to replace it"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


WEIGHTS_SUFFIX = ".safetensors"


def save_weights(out: str | os.PathLike, name: str, tensors: dict, meta: dict) -> Path:
    """Write ``<name>.safetensors`` (the tensors) and ``<name>.json`` (``meta`` plus the weights' sha256) as one
    folder ``out``, replaced whole (see :func:`atomic_dir`): a crash leaves the old pair or the new one, never one of
    each. Nothing here is pickled; :func:`load_weights` reads it back and checks the hash."""
    import json

    from safetensors.torch import save_file

    with atomic_dir(out, f"{name}.json") as tmp:
        weights = tmp / f"{name}{WEIGHTS_SUFFIX}"
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(weights))
        full = {**meta, "weights_sha256": sha256_file(weights)}
        (tmp / f"{name}.json").write_text(json.dumps(full, indent=2))
    return Path(out)


def load_weights(src: str | os.PathLike, name: str, what: str) -> tuple[dict, dict]:
    """The tensors and the meta written by :func:`save_weights` into ``src``; a missing file, unreadable JSON, or
    weights that are not the ones the JSON was written with (a torn or mixed copy) raise an error naming ``src``."""
    import json

    from safetensors.torch import load as load_bytes

    src = Path(src)
    meta_file, weights = src / f"{name}.json", src / f"{name}{WEIGHTS_SUFFIX}"
    if not meta_file.is_file() or not weights.is_file():
        raise FileNotFoundError(f"{src}: not a saved {what} (needs {meta_file.name} and {weights.name})")
    try:
        meta = json.loads(meta_file.read_text())
        want = meta["weights_sha256"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{meta_file}: not the description of a saved {what} ({type(e).__name__}: {e}); a save from before "
            "weights were hashed, or another file: train and save it again"
        ) from None
    data = weights.read_bytes()  # hashed and loaded from the same bytes
    if hashlib.sha256(data).hexdigest() != want:
        raise ValueError(
            f"{weights}: not the weights {meta_file.name} was written with (a torn or mixed copy)"
        )
    return load_bytes(data), meta
