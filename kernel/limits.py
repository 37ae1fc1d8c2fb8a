"""What a sender may put on the wire: the id rule, and a total, bounded JSON reader.

Every record a sender controls is read by :func:`load_json` before anything looks inside it:
any bytes give either a Python value or :class:`~kernel.errors.InvalidMessage` with a short
``reason`` (a metric label and the dead letter's reason), never another exception. The reader
enforces the :class:`Limits` before and while it parses, so nothing a sender writes costs more
than its size. A part of a value already read (one message of a batch) is held to the limits
of depth, numbers and strings by :func:`check_shape`, the second half of :func:`load_json`:

=====================  ====================================================  ========================
reason                 rule                                                  setting (``VITALS_``)
=====================  ====================================================  ========================
``empty``              the record has no value (a tombstone) or no bytes     —
``too_large``          more than ``max_message_bytes`` bytes                 ``LIMIT_MESSAGE_BYTES``
``too_deep``           arrays/objects nested deeper than ``max_depth``       ``LIMIT_JSON_DEPTH``
``number_too_large``   an integer of more than ``max_number_digits`` digits, ``LIMIT_NUMBER_DIGITS``
                       or a float literal of more than ``max_number_digits
                       + 12`` characters
``string_too_long``    an object key or string value longer than             ``LIMIT_STRING_CHARS``
                       ``max_string_chars``
``duplicate_key``      an object with the same key twice                     —
``not_json``           not UTF-8 JSON                                        —
``invalid_id``         an id that breaks :data:`ID_PATTERN`                  —
=====================  ====================================================  ========================

Ids follow one rule everywhere, producers and consumers alike (:data:`ID_PATTERN`): a letter or
digit, then up to 63 letters, digits or ``. _ : -``. No spaces, so no "First Last" slips through;
no control characters, so no forged log lines; nothing a database or a Kafka key refuses.

Examples
--------
>>> limits = Limits()
>>> load_json(b'{"a": [1, 2.5]}', limits)
{'a': [1, 2.5]}
>>> load_json(b"[" * 100_000 + b"]" * 100_000, limits)
Traceback (most recent call last):
...
kernel.errors.InvalidMessage: too_deep: JSON nests deeper than 8 levels
>>> load_json(b'{"seq": ' + b"9" * 5_000 + b"}", limits)
Traceback (most recent call last):
...
kernel.errors.InvalidMessage: number_too_large: an integer has more than 4300 digits
>>> load_json(b'{"a": 1, "a": 2}', limits)
Traceback (most recent call last):
...
kernel.errors.InvalidMessage: duplicate_key: key 'a' appears twice in one object
>>> valid_id("pt-9c1e"), valid_id("pt 1"), valid_id("pt\\n1"), valid_id("\\ud800"), valid_id("x" * 65)
(True, False, False, False, False)
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kernel.errors import InvalidMessage
from kernel.settings import Settings

#: The one id rule (patients, devices; every producer and every consumer imports it).
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}"
#: Longest id the rule allows.
MAX_ID_CHARS = 64
_ID = re.compile(ID_PATTERN)

#: Longest text of a detail (a rejected value shown in a dead letter or a log line).
DETAIL_VALUE_CHARS = 40


def valid_id(value: object) -> bool:
    """Whether ``value`` is a string that follows :data:`ID_PATTERN`.

    >>> valid_id("dev-3f2a"), valid_id(""), valid_id(17), valid_id("pt\\x00")
    (True, False, False, False)
    """
    return type(value) is str and _ID.fullmatch(value) is not None


def check_id(value: object, field: str) -> str:
    """``value`` if it is a valid id, else :class:`~kernel.errors.InvalidMessage` (``invalid_id``).

    >>> check_id("pt-1", "patient_id")
    'pt-1'
    >>> check_id("Jane Doe", "patient_id")
    Traceback (most recent call last):
    ...
    kernel.errors.InvalidMessage: invalid_id: patient_id must match [A-Za-z0-9][A-Za-z0-9._:-]{0,63}, got 'Jane Doe'
    """
    if type(value) is str and _ID.fullmatch(value) is not None:
        return value
    if type(value) is not str:
        raise InvalidMessage("invalid_id", f"{field} must be a string, got {type(value).__name__}")
    raise InvalidMessage("invalid_id", f"{field} must match {ID_PATTERN}, got {clip(value)}")


def clip(value: object) -> str:
    """``repr(value)`` cut to :data:`DETAIL_VALUE_CHARS` characters, ASCII only: safe in a detail.

    >>> clip("x" * 100)
    "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx..."
    >>> clip("a\\ud800\\n")
    "'a\\\\ud800\\\\n'"
    """
    text = ascii(value)
    return text if len(text) <= DETAIL_VALUE_CHARS else text[:DETAIL_VALUE_CHARS - 3] + "..."


def _default(setting: str) -> int:
    """The default of one ``VITALS_LIMIT_*`` setting.

    >>> _default("limit_json_depth")
    8
    """
    value = Settings.model_fields[setting].default
    if not isinstance(value, int):
        raise TypeError(f"setting {setting} has no integer default: {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds on what one record from a sender may hold; see the module docstring.

    Parameters
    ----------
    max_message_bytes
        Bytes of one record's value.
    max_readings
        Readings in one device message.
    max_depth
        Nesting of arrays and objects (a device message needs 3).
    max_number_digits
        Digits of an integer, and characters of a float literal (an epoch-ms time has 13).
    max_string_chars
        Characters of an object key or string value (ids have their own, shorter rule).
    max_devices
        Devices whose recent sequence numbers one partition remembers (least recently seen
        are forgotten first).
    """

    # The defaults are the settings' own (``VITALS_LIMIT_*``): one place, so the two cannot drift.
    max_message_bytes: int = _default("limit_message_bytes")
    max_readings: int = _default("limit_readings")
    max_depth: int = _default("limit_json_depth")
    max_number_digits: int = _default("limit_number_digits")
    max_string_chars: int = _default("limit_string_chars")
    max_devices: int = _default("limit_devices_per_partition")

    def __post_init__(self) -> None:
        for name in ("max_message_bytes", "max_readings", "max_depth", "max_number_digits", "max_string_chars",
                     "max_devices"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits the ``VITALS_LIMIT_*`` settings ask for.

        >>> Limits.from_settings(Settings(limit_json_depth=4)).max_depth
        4
        """
        return cls(max_message_bytes=settings.limit_message_bytes, max_readings=settings.limit_readings,
                   max_depth=settings.limit_json_depth, max_number_digits=settings.limit_number_digits,
                   max_string_chars=settings.limit_string_chars, max_devices=settings.limit_devices_per_partition)


#: The limits of the settings' defaults, for decoders called without any.
DEFAULT_LIMITS = Limits()


def load_json(raw: object, limits: Limits) -> Any:
    """Parse one record's value within ``limits``; :class:`~kernel.errors.InvalidMessage` otherwise.

    Total: no other exception leaves it, whatever ``raw`` is. A nest deeper than the parser's
    own guard (about a thousand levels) stops the parser with ``RecursionError``, read here as
    ``too_deep``; a shallower one is parsed and then measured level by level, without recursion
    (depth, integers, strings). An integer of more than 4,300 digits stops ``int()`` itself.

    >>> load_json(None, Limits())
    Traceback (most recent call last):
    ...
    kernel.errors.InvalidMessage: empty: the record has no value
    >>> load_json(b'[1.' + b'5' * 40 + b']', Limits())
    Traceback (most recent call last):
    ...
    kernel.errors.InvalidMessage: number_too_large: a number literal has 42 characters

    ``NaN``, ``Infinity`` and overflowing floats (``1e999``) are read as Python reads them; the
    decoders refuse non-finite numbers field by field, so one bad reading costs only itself.
    """
    if raw is None:
        raise InvalidMessage("empty", "the record has no value")
    if not isinstance(raw, (bytes, bytearray)):
        raise InvalidMessage("not_json", f"a record value must be bytes, got {type(raw).__name__}")
    if len(raw) > limits.max_message_bytes:
        raise InvalidMessage("too_large", f"{len(raw)} bytes (limit {limits.max_message_bytes})")
    if not raw:
        raise InvalidMessage("empty", "the record value has no bytes")
    hooks = _hooks(limits)  # cached per Limits value
    try:
        body = json.loads(raw, parse_float=hooks[0])
    except InvalidMessage:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidMessage("not_json", f"not valid UTF-8 JSON ({str(exc).split(':')[0]})") from None
    except RecursionError:  # the parser's own guard, about a thousand levels down
        raise InvalidMessage("too_deep", f"JSON nests deeper than {limits.max_depth} levels") from None
    except ValueError:  # int() refuses more than 4,300 digits
        raise InvalidMessage("number_too_large", "an integer has more than 4300 digits") from None
    except (TypeError, OverflowError, MemoryError) as exc:
        raise InvalidMessage("not_json", f"not valid JSON ({type(exc).__name__})") from None
    keys = check_shape(body, limits)
    if raw.count(b":") != keys:
        # Every key in the text has its colon, so as many colons as parsed keys means no key
        # was repeated. More colons: some are inside strings, or a key is there twice; only
        # then pay for a parse that sees every key (object_pairs_hook costs ~40% of a parse).
        json.loads(raw, parse_float=hooks[0], object_pairs_hook=hooks[1])
    return body


def check_shape(value: Any, limits: Limits) -> int:
    """Depth, integer magnitude and string lengths of a parsed value: level by level, no recursion.

    What :func:`load_json` checks after parsing, for a value parsed by it under wider limits: one
    message of a batch read as a whole is held to the message's own limits this way, without
    being written back to JSON and read again. Returns the number of object keys; raises
    :class:`~kernel.errors.InvalidMessage` (``too_deep``, ``number_too_large``,
    ``string_too_long``) at the first fault. One pass over every container's items, about 8 us
    for a 15-reading device message.

    >>> check_shape([{"a": [1]}], Limits())
    1
    >>> check_shape([{"a": [1]}], Limits(max_depth=2))
    Traceback (most recent call last):
    ...
    kernel.errors.InvalidMessage: too_deep: JSON nests deeper than 2 levels
    """
    max_depth, chars = limits.max_depth, limits.max_string_chars
    bound = 10 ** limits.max_number_digits
    if type(value) is str and len(value) > chars:
        raise InvalidMessage("string_too_long", f"a string is longer than {chars} characters")
    if type(value) is int and not -bound < value < bound:
        raise InvalidMessage("number_too_large", f"an integer has more than {limits.max_number_digits} digits")
    level = [value] if type(value) is dict or type(value) is list else []
    depth = keys = 0
    while level:
        depth += 1
        if depth > max_depth:
            raise InvalidMessage("too_deep", f"JSON nests deeper than {max_depth} levels")
        below = []
        for container in level:
            if type(container) is dict:
                keys += len(container)
                for key in container:
                    if len(key) > chars:
                        raise InvalidMessage("string_too_long", f"a key is longer than {chars} characters")
                items: Iterable[Any] = container.values()
            else:
                items = container
            for item in items:
                kind = type(item)
                if kind is dict or kind is list:
                    below.append(item)
                elif kind is str:
                    if len(item) > chars:
                        raise InvalidMessage("string_too_long", f"a string is longer than {chars} characters")
                elif kind is int and not -bound < item < bound:
                    raise InvalidMessage("number_too_large",
                                         f"an integer has more than {limits.max_number_digits} digits")
        level = below
    return keys


@functools.lru_cache(maxsize=16)
def _hooks(limits: Limits) -> tuple[Callable[[str], float], Callable[[list[tuple[str, Any]]], dict[str, Any]]]:
    """parse_float and object_pairs_hook for ``limits`` (integers are checked after parsing: a
    hook per integer doubled the parse time)."""
    digits = limits.max_number_digits

    def parse_float(text: str) -> float:
        if len(text) > digits + 12:  # sign, point, exponent and a few more significant digits
            raise InvalidMessage("number_too_large", f"a number literal has {len(text)} characters")
        return float(text)

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        body = dict(items)
        if len(body) != len(items):
            seen: set[str] = set()
            for key, _ in items:
                if key in seen:
                    raise InvalidMessage("duplicate_key", f"key {clip(key)} appears twice in one object")
                seen.add(key)
        return body

    return parse_float, pairs
