"""Limits on ``metadata``, in the style of Stripe's, for every metadata field of every service.

``metadata`` is a JSON object of the caller's own annotations (an order number, a customer reference):

* at most :data:`MAX_KEYS` (50) keys, each 1 to :data:`MAX_KEY_LENGTH` (40) characters;
* each value at most :data:`MAX_VALUE_LENGTH` (500) characters long. A string counts its characters; any
  other JSON value counts the characters of its compact JSON text, so numbers, booleans and ``null`` are
  fine and **objects and arrays may be nested** (existing clients send ``{"order": {"id": 7}}``), within
  500 characters — which also bounds their depth.

A refusal is ``422 invalid_metadata`` with one field error per problem, each with its own code
(``metadata_too_many_keys``, ``metadata_key_invalid``, ``metadata_key_too_long``, ``metadata_value_too_long``,
``metadata_value_invalid``) and a JSON pointer to the key.
"""

from __future__ import annotations

import json
from typing import Any

from services.kit.errors import DomainError

MAX_KEYS = 50
MAX_KEY_LENGTH = 40
MAX_VALUE_LENGTH = 500
_MAX_ERRORS = 20  # a 10,000-key object gets a readable answer, not 10,000 errors


class InvalidMetadata(DomainError):
    code = "invalid_metadata"
    status = 422
    title = "Invalid metadata"


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _value_length(value: Any) -> int | None:
    """The value's length as text, or None when it is not a JSON value."""
    kind = type(value)
    if kind is str:
        return len(value)
    if value is None or kind is bool:
        return 4
    if kind is int or kind is float or kind is dict or kind is list:
        try:
            return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False))
        except (TypeError, ValueError):
            return None
    return None


def metadata_errors(value: Any, *, field: str = "metadata") -> list[dict[str, Any]]:
    """The field errors of ``value`` as metadata (``[]`` when it is fine), in the kit's problem shape."""
    pointer = "#/" + field.replace("[", ".").replace("]", "").replace(".", "/")
    if type(value) is not dict:
        return [{"field": field, "pointer": pointer, "code": "metadata_not_object", "detail": "Must be an object."}]
    errors: list[dict[str, Any]] = []
    if len(value) > MAX_KEYS:
        detail = f"At most {MAX_KEYS} keys; got {len(value)}."
        errors.append({"field": field, "pointer": pointer, "code": "metadata_too_many_keys", "detail": detail})
    for key, item in value.items():
        if len(errors) >= _MAX_ERRORS:
            break
        if type(key) is not str or not key:
            shown = key if type(key) is str else str(key)
            errors.append(
                {
                    "field": f"{field}.{shown}",
                    "pointer": f"{pointer}/{_escape(shown)}",
                    "code": "metadata_key_invalid",
                    "detail": "Keys must be non-empty strings.",
                }
            )
            continue
        where = {"field": f"{field}.{key}", "pointer": f"{pointer}/{_escape(key)}"}
        if len(key) > MAX_KEY_LENGTH:
            detail = f"Keys may be at most {MAX_KEY_LENGTH} characters; this one has {len(key)}."
            errors.append({**where, "code": "metadata_key_too_long", "detail": detail})
        length = _value_length(item)
        if length is None:
            errors.append({**where, "code": "metadata_value_invalid", "detail": "Values must be JSON values."})
        elif length > MAX_VALUE_LENGTH:
            detail = f"Values may be at most {MAX_VALUE_LENGTH} characters (objects and arrays as compact JSON); "
            errors.append({**where, "code": "metadata_value_too_long", "detail": f"{detail}this one has {length}."})
    return errors


def metadata_check(
    value: Any, *, field: str = "metadata", error: type[DomainError] = InvalidMetadata
) -> dict[str, Any]:
    """``value`` if it is acceptable metadata; else raise ``error`` (422 ``invalid_metadata`` by default, or a
    service's subclass) carrying the field errors."""
    if type(value) is dict and len(value) <= MAX_KEYS and _plain(value):
        return value
    errors = metadata_errors(value, field=field)
    if not errors:
        return value
    detail = "; ".join(f"{_short(e['field'])}: {e['detail']}" for e in errors)
    raise error(detail, extra={"errors": errors})


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain(value: dict[Any, Any]) -> bool:
    # The common case in one pass and no JSON encoding: short string keys, short strings or small scalars.
    for key, item in value.items():
        if type(key) is not str or not 0 < len(key) <= MAX_KEY_LENGTH:
            return False
        kind = type(item)
        if kind is str:
            if len(item) > MAX_VALUE_LENGTH:
                return False
        elif not (item is None or kind is bool or (kind is int and -(10**15) < item < 10**15)):
            return False
    return True
