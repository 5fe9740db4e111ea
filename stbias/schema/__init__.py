"""The schema of ``results.json``, shipped with the package, and a validator for it.

``results.schema.json`` is a JSON Schema (draft 2020-12). :func:`validate` checks a record
against the part of JSON Schema that file uses (``type``, ``const``, ``enum``, ``required``,
``properties``, ``additionalProperties``, ``items``, ``minItems``/``maxItems``, ``minimum``,
``allOf``/``anyOf``, ``if``/``then`` and local ``$ref``), so no schema library is needed; any
JSON Schema validator (``jsonschema``) reads the same file.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Mapping
from typing import Any

from stbias.errors import StbiasError

SCHEMA_FILE = os.path.join(os.path.dirname(__file__), "results.schema.json")
SCHEMA_NAME = "stbias/results/1"
HEADER = ("task", "model", "dataset", "weights", "seed", "settings")


@functools.cache
def schema() -> dict[str, Any]:
    """The results.json schema (a dict; read once)."""
    with open(SCHEMA_FILE) as fh:
        return json.load(fh)


def numbers_key(task: str) -> str:
    """The key under which ``task`` writes its own numbers (``layers`` for a probe)."""
    return schema()["x-numbers"][task]


_TYPES = {
    "object": lambda v: isinstance(v, Mapping),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def errors(value: Any, node: Mapping[str, Any] | None = None, where: str = "") -> list[str]:
    """Every way ``value`` breaks ``node`` (the whole schema by default), one line each."""
    root = schema()
    return _errors(value, root if node is None else node, where or "results.json", root)


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        ref = str(node["$ref"])
        if not ref.startswith("#/"):
            raise StbiasError(f"schema reference {ref!r} is not local ('#/...')")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
    return node


def _errors(value: Any, node: Mapping[str, Any], where: str, root: Mapping[str, Any]) -> list[str]:
    node = _resolve(node, root)
    out: list[str] = []
    if "type" in node:
        kinds = node["type"] if isinstance(node["type"], list) else [node["type"]]
        if not any(_TYPES[k](value) for k in kinds):
            return [f"{where} is {_show(value)}, not {' or '.join(kinds)}"]
    if isinstance(value, float) and not math.isfinite(value):
        out.append(f"{where} is {value}, not a finite number")
    if "const" in node and value != node["const"]:
        out.append(f"{where} is {_show(value)}, not {node['const']!r}")
    if "enum" in node and value not in node["enum"]:
        out.append(f"{where} is {_show(value)}; valid: {', '.join(map(str, node['enum']))}")
    if "minimum" in node and _TYPES["number"](value) and value < node["minimum"]:
        out.append(f"{where} is {value}, below the minimum {node['minimum']}")
    if isinstance(value, Mapping):
        for key in node.get("required", ()):
            if key not in value:
                out.append(f"{where} has no key {key!r}")
        properties = node.get("properties", {})
        extra = node.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                out += _errors(item, properties[key], f"{where}.{key}", root)
            elif extra is False:
                out.append(f"{where}.{key} is not an allowed key")
            elif isinstance(extra, Mapping):
                out += _errors(item, extra, f"{where}.{key}", root)
    if isinstance(value, list):
        if "minItems" in node and len(value) < node["minItems"]:
            out.append(f"{where} has {len(value)} items, fewer than {node['minItems']}")
        if "maxItems" in node and len(value) > node["maxItems"]:
            out.append(f"{where} has {len(value)} items, more than {node['maxItems']}")
        if "items" in node:
            for k, item in enumerate(value):
                out += _errors(item, node["items"], f"{where}[{k}]", root)
    for part in node.get("allOf", ()):
        out += _errors(value, part, where, root)
    if "anyOf" in node:
        found = [_errors(value, part, where, root) for part in node["anyOf"]]
        if all(found):
            out.append(f"{where} matches none of: " + " | ".join("; ".join(f) for f in found))
    if "if" in node and not _errors(value, node["if"], where, root):
        out += _errors(value, node.get("then", {}), where, root)
    return out


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate(record: Mapping[str, Any], where: str = "results.json") -> None:
    """Raise :class:`StbiasError` naming every key of ``record`` that breaks the schema."""
    found = errors(record, where=where)
    if found:
        shown = "; ".join(found[:8]) + (f"; and {len(found) - 8} more" if len(found) > 8 else "")
        raise StbiasError(f"{where} does not follow {SCHEMA_NAME} ({SCHEMA_FILE}): {shown}")
