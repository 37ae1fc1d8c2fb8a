"""A small, strict YAML writer for the configuration files we generate.

Prometheus and Grafana read YAML; the standard library writes none and the project does not
depend on PyYAML. The files we write hold only mappings with string keys, sequences, strings,
numbers, booleans and null, so this writer covers exactly that, in block style. Strings are
written plain only when they cannot be mistaken for another type, otherwise single-quoted (the
one YAML style without escapes), and multi-line strings as literal blocks, so PromQL stays
readable. ``promtool check config|rules`` parses every Prometheus file written with it.

Examples
--------
>>> print(dump({"groups": [{"name": "ops", "rules": [{"alert": "Down", "expr": 'up{job="w"} == 0',
...                                                       "for": "1m"}]}]}), end="")
groups:
  - name: ops
    rules:
      - alert: Down
        expr: 'up{job="w"} == 0'
        for: 1m
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Union

#: What :func:`dump` can write.
Node = Union[str, int, float, bool, None, Mapping[str, "Node"], Sequence["Node"]]

_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./-]*")
#: Durations such as ``15s`` or ``5m`` resolve to strings in YAML 1.1 and 1.2 alike.
_DURATION = re.compile(r"[0-9]+(?:ms|[smhdwy])")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
#: Plain scalars that YAML 1.1 (go-yaml, PyYAML) would read as booleans or null.
_RESERVED = {"y", "n", "yes", "no", "true", "false", "on", "off", "null", "~"}
INDENT = "  "


def scalar(value: str | int | float | bool | None) -> str:
    """One scalar as YAML text.

    Examples
    --------
    >>> [scalar(v) for v in ("worker", "on", "a: b", "it's", "$VITALS_PG_HOST", "15s", "10", 3, 0.5, True, None)]
    ['worker', "'on'", "'a: b'", "'it''s'", "'$VITALS_PG_HOST'", '15s', "'10'", '3', '0.5', 'true', 'null']
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"YAML output takes finite numbers only, got {value!r}")
        return repr(value)
    if not isinstance(value, str):
        raise TypeError(f"cannot write {type(value).__name__} as a YAML scalar")
    if "\n" in value:
        raise ValueError("multi-line strings are written as blocks, not scalars")
    if (_PLAIN.fullmatch(value) and value.lower() not in _RESERVED) or _DURATION.fullmatch(value):
        return value
    return "'" + value.replace("'", "''") + "'"


def _key(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"mapping keys must be strings, got {type(key).__name__}")
    if _PLAIN_KEY.fullmatch(key) and key.lower() not in _RESERVED:
        return key
    return scalar(key)  # quoted; raises ValueError for a multi-line key


def _block(text: str, depth: int) -> list[str]:
    """A literal block (``|`` keeps one final newline, ``|-`` none)."""
    indicator = "|" if text.endswith("\n") and not text.endswith("\n\n") else "|-"
    if text.startswith((" ", "\t")):
        raise ValueError("literal blocks must not start with whitespace")
    pad = INDENT * depth
    return [indicator] + [pad + line if line else "" for line in text.rstrip("\n").split("\n")]


def _lines(node: Node, depth: int) -> list[str]:
    """``node`` as lines indented ``depth`` levels (the caller writes what precedes it)."""
    pad = INDENT * depth
    out: list[str] = []
    if isinstance(node, Mapping):
        for key, value in node.items():
            out.extend(_entry(pad + _key(key) + ":", value, depth))
        return out
    if isinstance(node, Sequence) and not isinstance(node, str):
        for item in node:
            if isinstance(item, Mapping) and item:
                inner = _lines(item, depth + 2)
                out.append(pad + INDENT + "- " + inner[0].lstrip())
                out.extend(inner[1:])
            else:
                out.extend(_entry(pad + INDENT + "-", item, depth + 1))
        return out
    raise TypeError(f"expected a mapping or a sequence, got {type(node).__name__}")


def _entry(head: str, value: Node, depth: int) -> list[str]:
    """``head`` (``key:`` or ``-``) followed by ``value``, inline or as a nested block."""
    if isinstance(value, Mapping):
        return [head + " {}"] if not value else [head] + _lines(value, depth + 1)
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [head + " []"] if not value else [head] + _lines(value, depth)
    if isinstance(value, str) and "\n" in value:
        first, *rest = _block(value, depth + 1)
        return [head + " " + first] + rest
    return [head + " " + scalar(value)]


def dump(document: Mapping[str, Node], *, header: str = "") -> str:
    """A mapping as a YAML document, preceded by ``header`` as ``#`` comment lines.

    Examples
    --------
    >>> print(dump({"a": [], "b": {}, "c": [1, "x"], "d": "two\\nlines\\n"}, header="generated"), end="")
    # generated
    a: []
    b: {}
    c:
      - 1
      - x
    d: |
      two
      lines
    """
    comments = [f"# {line}".rstrip() for line in header.splitlines()] if header else []
    return "\n".join(comments + _lines(document, 0)) + "\n"
