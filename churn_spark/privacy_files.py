"""Erasure's file side (``churn-spark forget``, see :mod:`churn_spark.privacy`): find the files under a directory
that still hold an id, and rewrite the plain ones without it.

Everything goes through :mod:`churn_spark.storage`, so the root may be a local directory or an object-store prefix
(``s3a://bucket/work``): a local tree is walked without entering skipped directories, a prefix is listed once,
recursively; a rewrite is a temp file renamed into place locally and a single PUT of the whole object remotely.
Parquet files lose the rows of the ids (their Hadoop ``.crc`` sidecars are removed), CSV files with a ``user_id``
column lose those rows, text files (HTML reports, JSON) get the id replaced by ``[erased]``.
"""

from __future__ import annotations

import os
import re
from pathlib import PurePosixPath
from typing import Dict, Iterable, List

from . import storage

ERASED = "[erased]"
TEXT_SUFFIXES = {".html", ".htm", ".json", ".jsonl", ".txt", ".log", ".md", ".yaml", ".yml", ".tsv"}
# characters that can be part of an id: a hit must not be the middle of a longer token ("u1" inside "u12")
_ID_CHAR = r"A-Za-z0-9_\-"


# ---------------------------------------------------------------------------------------------------------
# scanning files for ids (used by forget's own verification and by the tests)
# ---------------------------------------------------------------------------------------------------------
def id_pattern(ids: Iterable[str]) -> re.Pattern:
    """A bytes regex matching any of the ids as a whole token."""
    alt = "|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True))
    return re.compile(f"(?<![{_ID_CHAR}])(?:{alt})(?![{_ID_CHAR}])".encode())


def _arrow_hits(arr, pattern: str) -> int:
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(arr, pa.ChunkedArray):
        return sum(_arrow_hits(c, pattern) for c in arr.chunks)
    t = arr.type
    if pa.types.is_struct(t):
        return sum(_arrow_hits(arr.field(i), pattern) for i in range(t.num_fields))
    if pa.types.is_map(t):
        return _arrow_hits(arr.keys, pattern) + _arrow_hits(arr.items, pattern)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _arrow_hits(arr.flatten(), pattern)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return int(pc.sum(pc.match_substring_regex(arr, pattern)).as_py() or 0)
    return 0


def _read_parquet(path: str):
    import pyarrow.parquet as pq

    fs, inner = storage.filesystem(path)
    return pq.read_table(inner, filesystem=fs)


def parquet_hits(path: str, ids: Iterable[str]) -> int:
    """Values in a Parquet file (decoded, nested columns included) that hold one of the ids as a token."""
    alt = "|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True))
    # Arrow's regex engine (RE2) has no look-around: the token boundaries are matched as characters instead
    pattern = f"(?:^|[^{_ID_CHAR}])(?:{alt})(?:[^{_ID_CHAR}]|$)"
    table = _read_parquet(str(path))
    return sum(_arrow_hits(col, pattern) for col in table.columns)


def files_under(root: str, skip: Iterable[str] = ()) -> List[str]:
    """Files under ``root`` (relative to it) outside the directories in ``skip`` (absolute paths or URIs): a
    local tree is walked without entering them, an object-store prefix is listed once, recursively."""
    import pyarrow.fs as pafs

    root = str(root)
    if storage.is_local(root):
        base = storage.local_path(root)
        skipped = {os.path.abspath(storage.local_path(s)) for s in skip if storage.is_local(s)}
        out = []
        for d, dirs, files in os.walk(base):
            dirs[:] = [x for x in dirs if os.path.abspath(os.path.join(d, x)) not in skipped]
            out += [os.path.relpath(os.path.join(d, f), base) for f in files]
        return out
    fs, inner = storage.filesystem(root)
    skipped = [str(s) for s in skip if storage.is_uri(s)]
    infos = fs.get_file_info(pafs.FileSelector(inner, allow_not_found=True, recursive=True))
    rels = sorted(i.path[len(inner) :].lstrip("/") for i in infos if i.type == pafs.FileType.File)
    return [r for r in rels if not any(_under(storage.join(root, r), s) for s in skipped)]


def scan(root: str, ids: Iterable[str], skip: Iterable[str] = ()) -> Dict[str, int]:
    """{file relative to root: hits} for every file under ``root`` that still holds an id (Parquet decoded,
    everything else as raw bytes); directories in ``skip`` (absolute paths or URIs) are not entered."""
    ids = list(ids)
    pat = id_pattern(ids)
    out = {}
    for rel in files_under(root, skip):
        p = storage.join(root, rel)
        try:
            n = parquet_hits(p, ids) if rel.endswith(".parquet") else len(pat.findall(storage.read_bytes(p)))
        except Exception:  # an unreadable Parquet file (e.g. half-written): fall back to its bytes
            n = len(pat.findall(storage.read_bytes(p)))
        if n:
            out[rel] = n
    return out


# ---------------------------------------------------------------------------------------------------------
# rewriting plain files
# ---------------------------------------------------------------------------------------------------------
def _replace_atomically(path: str, data: bytes) -> None:
    """The whole new content in place (temp file + rename locally, one PUT on an object store)."""
    storage.write_bytes(path, data)
    crc = storage.join(storage.parent(path), f".{storage.name(path)}.crc")  # Hadoop's checksum of the old content
    if storage.is_file(crc):  # would now fail the read
        storage.delete(crc)


def rewrite_parquet(path: str, ids: List[str]) -> int:
    """Drop the rows whose ``user_id`` is one of ids; returns rows removed (0: file untouched)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = _read_parquet(str(path))
    if "user_id" not in table.column_names:
        return 0
    keep = pc.invert(pc.is_in(pc.cast(table["user_id"], "string"), value_set=pa.array(ids)))
    keep = pc.fill_null(keep, True)
    out = table.filter(keep)
    removed = table.num_rows - out.num_rows
    if removed:
        buf = pa.BufferOutputStream()
        pq.write_table(out, buf)
        _replace_atomically(str(path), buf.getvalue().to_pybytes())
    return removed


def rewrite_csv(path: str, ids: List[str]) -> int:
    """Drop the rows of a CSV file whose ``user_id`` is one of ids; returns rows removed."""
    import io

    import pandas as pd

    df = pd.read_csv(io.BytesIO(storage.read_bytes(str(path))), dtype=str, keep_default_na=False)
    if "user_id" not in df.columns:
        return 0
    keep = ~df["user_id"].str.strip().isin(ids)
    removed = int((~keep).sum())
    if removed:
        _replace_atomically(str(path), df[keep].to_csv(index=False).encode("utf-8"))
    return removed


def redact_text(path: str, ids: List[str]) -> int:
    """Replace every whole-token occurrence of an id in a text file by ``[erased]``; returns replacements."""
    data = storage.read_bytes(str(path))
    new, n = id_pattern(ids).subn(ERASED.encode(), data)
    if n:
        _replace_atomically(str(path), new)
    return n


def erase_files(root: str, ids: List[str], skip: Iterable[str]) -> Dict[str, int]:
    """Rewrite the plain files under ``root`` (outside ``skip``) that hold an id: {relative path: rows/redactions}."""
    out = {}
    for rel in scan(root, ids, skip):
        p = storage.join(root, rel)
        suffix = PurePosixPath(rel).suffix.lower()
        if suffix == ".parquet":
            n = rewrite_parquet(p, ids)
        elif suffix == ".csv":
            n = rewrite_csv(p, ids) or redact_text(p, ids)
        elif suffix in TEXT_SUFFIXES:
            n = redact_text(p, ids)
        else:
            continue  # binary (a database, an archive): reported by the final scan
        if n:
            out[rel] = n
    return out


def _under(path: str, root: str) -> bool:
    if storage.is_uri(path) or storage.is_uri(root):
        p, r = str(path).rstrip("/"), str(root).rstrip("/")
        return p == r or p.startswith(r + "/")
    p, r = os.path.abspath(path), os.path.abspath(root)
    return p == r or p.startswith(r + os.sep)


def delta_tables(root: str) -> List[str]:
    """Every Delta table directory under ``root`` (a directory holding ``_delta_log``), in the form of ``root``."""
    if not storage.is_uri(root):
        if not os.path.isdir(root):
            return []
        return sorted(d for d, dirs, _ in os.walk(root) if "_delta_log" in dirs)
    tables = set()
    for rel in files_under(root):
        parts = rel.split("/")
        tables |= {"/".join(parts[:i]) for i in range(len(parts) - 1) if parts[i] == "_delta_log"}
    return sorted(storage.join(root, t) if t else str(root) for t in tables)
