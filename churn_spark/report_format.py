"""Display text for the report: numbers rounded the same way everywhere, and tables for the template's macro.

Why a module of its own: every report section (:mod:`churn_spark.report`, :mod:`churn_spark.report_action`) formats
values the same way; the helpers live here so the sections share them instead of copying them.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Sequence

import numpy as np

from .report_data import is_number


def f4(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    try:
        return f"{float(v):.4f}"
    except (TypeError, ValueError):
        return str(v)


def integer(v: Any) -> str:
    try:
        return f"{int(v):,}"
    except (TypeError, ValueError):
        return "—" if v is None else str(v)


def pct(v: Any) -> str:
    return f"{float(v):.2%}" if is_number(v) else "—"


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    row_classes: Optional[Sequence[str]] = None,
    left: Sequence[int] = (0,),
    css: str = "",
) -> Dict[str, Any]:
    """A table for the template's ``table`` macro. A cell is a value or ``(value, css class)``; columns in ``left``
    are left-aligned. Values become text here; the template escapes them."""
    lc = set(left)
    out_rows = []
    for j, row in enumerate(rows):
        cells = []
        for i, cell in enumerate(row):
            text, cls = cell if isinstance(cell, tuple) else (cell, "")
            cells.append((str(text), " ".join(x for x in ("l" if i in lc else "", cls) if x)))
        out_rows.append({"cls": row_classes[j] if row_classes else "", "cells": cells})
    return {"css": css, "headers": [(str(h), "l" if i in lc else "") for i, h in enumerate(headers)], "rows": out_rows}


def reasons_text(reasons: Any) -> str:
    """Reason codes as one cell: ``a; b; c``."""
    return "; ".join(map(str, reasons)) if isinstance(reasons, (list, tuple, np.ndarray)) else (reasons or "")


def timings_table(timings: Dict[str, Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """Where the run's time went: one row per weekly step (wall seconds, share of the run) with the logged parts
    inside it (nested parts overlap, so they need not add up)."""
    if not timings:
        return None
    total = sum(float(t.get("seconds") or 0.0) for t in timings.values())
    rows = []
    for name, t in timings.items():
        s = float(t.get("seconds") or 0.0)
        parts = ", ".join(f"{k} {float(v):.1f}s" for k, v in (t.get("parts") or {}).items() if k != name)
        rows.append([name, f"{s:.1f}", pct(s / total) if total else "—", parts])
    rows.append(["total", f"{total:.1f}", "100.00%" if total else "—", ""])
    return table(["step", "seconds", "share", "parts"], rows, left=(0, 3))
