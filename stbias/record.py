"""One record for every run: ``results.json`` with the header the shipped schema fixes.

Every run directory's record goes through :func:`write_results` — a task's (``stbias.tasks``
fills the header from the composed config first: ``stbias.tasks.record.complete``) and one the
Python API saves (``ProbeResults.save``, ``Explanation.save``). It puts the shared header first
(``schema``, ``task``, ``model``, ``dataset``, ``weights``, ``seed``, ``settings``, then
``config`` and ``environment``), refuses NaN and infinite numbers, checks the whole record
against ``stbias/schema/results.schema.json`` and writes it atomically. A record that breaks the
schema is never written: the error names the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from stbias import io
from stbias.schema import HEADER, SCHEMA_NAME, validate
from stbias.validation import require_finite


def joined(values: Sequence[Any]) -> str | None:
    """Several runs' values of one header key as one string (``None`` when there are none)."""
    # a table's missing values (NaN) are no value either
    distinct = list(dict.fromkeys(str(v) for v in values if v is not None and v == v))
    return ", ".join(distinct) if distinct else None


def order(record: dict[str, Any], filled: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``record`` (changed in place and returned) with the schema's header first.

    A header key the record lacks comes from ``filled`` (``None`` where that lacks it too);
    ``config`` defaults to ``{}`` and ``environment`` to this process's.
    """
    filled = {"schema": SCHEMA_NAME, "task": record["task"], **dict(filled or {})}
    ordered = {k: record[k] if k in record else filled.get(k) for k in ("schema", *HEADER)}
    if ordered["settings"] is None:
        ordered["settings"] = {}
    rest = {k: v for k, v in record.items() if k not in ordered}
    rest.setdefault("config", dict(filled.get("config") or {}))
    rest.setdefault("environment", io.environment())
    record.clear()
    record.update(ordered)
    record.update(rest)
    return record


def check_results(record: Any, task: str) -> None:
    """Stop with one line, before anything is written, when a task's results hold NaN or inf."""
    advice = "nothing was written (a model or checkpoint that computes NaN?)"
    require_finite(record, f"the results of {task}", advice)


def write_results(
    folder: str | os.PathLike, record: dict[str, Any], filled: Mapping[str, Any] | None = None
) -> str:
    """Order ``record`` (see :func:`order`), check it (finite numbers, the schema), write it.

    Returns:
        The path of ``results.json``.
    """
    order(record, filled)
    path = os.path.join(os.fspath(folder), "results.json")
    check_results(record, f"task={record['task']}")  # no NaN or inf is written
    validate(io._jsonable(record), where=path)
    io.write_json(path, record)
    return path


def random_note(record: Mapping[str, Any]) -> str:
    """``, random weights`` for a title part when the record's model ran untrained, else ``""``."""
    return ", random weights" if record.get("weights") == "random" else ""


def header(record: Mapping[str, Any]) -> dict[str, Any]:
    """The shared header of a record: what every task logs as its W&B config, same types."""
    return {k: record.get(k) for k in HEADER}
