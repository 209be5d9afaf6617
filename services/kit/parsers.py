"""Request parsing that refuses what PostgreSQL or the domain cannot hold.

Every JSON request body of every service goes through :func:`json_document` (through
:class:`StrictJSONParser`, DRF's only parser in every project). It refuses, with a stable code:

* ``malformed_json``: not UTF-8, not JSON, ``NaN``/``Infinity``, an empty document;
* ``json_too_deep``: objects and arrays nested deeper than ``ATRIUM_MAX_JSON_DEPTH`` (32): nothing after the
  parser ever recurses over a request's nesting (a payment's ``metadata`` nested 500 levels deep once ran
  ``copy.deepcopy`` out of stack, and Django's debug page then spent minutes pretty-printing each frame);
* ``duplicate_key``: an object naming a key twice (JSON leaves it undefined; Python would keep the last
  silently), with the key and where it is;
* ``invalid_characters``: NUL and unpaired surrogates, which PostgreSQL text and jsonb cannot store.
"""

from __future__ import annotations

import codecs
import json
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class JSONRefused(ParseError):
    """A request body refused with a stable ``code``; ``members`` are added to the problem document."""

    def __init__(self, detail: str, *, code: str, **members: Any) -> None:
        super().__init__(detail, code=code)
        self.problem_members = members


class _DuplicateKey(Exception):
    pass


class _Pairs(list):
    """An object as its ``(key, value)`` pairs in document order, duplicates kept (to locate a duplicate)."""


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # The C scanner calls this for each object once its members are parsed: one dict() and a length compare.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_reject_constant)
_PAIRS_DECODER = json.JSONDecoder(object_pairs_hook=_Pairs, parse_constant=_reject_constant)
_CONTAINERS = (dict, list)
_COUNT_MAX = 4096


def max_json_depth() -> int:
    return getattr(settings, "ATRIUM_MAX_JSON_DEPTH", 32)


def _too_deep(max_depth: int) -> JSONRefused:
    return JSONRefused(
        f"The JSON document nests objects and arrays more than {max_depth} levels deep.",
        code="json_too_deep",
        max_depth=max_depth,
    )


def _check_string(value: str) -> None:
    # PostgreSQL text and jsonb cannot store NUL; refusing it here beats a 500 later.
    if "\x00" in value:
        raise JSONRefused("Strings must not contain NUL (\\u0000) characters.", code="invalid_characters")
    # An unpaired surrogate (U+D800-U+DFFF) is not text: it cannot be stored, nor even echoed back in an error.
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise JSONRefused(
                "Strings must not contain unpaired surrogates (\\ud800-\\udfff).", code="invalid_characters"
            ) from exc


def _walk(data: Any, *, max_depth: int, strings: bool) -> None:
    """Check the nesting depth (and, with ``strings``, every key and string) without recursing."""
    if strings and type(data) is str:
        _check_string(data)
    if type(data) not in _CONTAINERS:
        return
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise _too_deep(max_depth)
        if type(node) is dict:
            if strings:
                for key in node:
                    _check_string(key)
            children = node.values()
        else:
            children = node
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif strings and kind is str:
                _check_string(child)


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _duplicate_key(text: str, max_depth: int) -> JSONRefused:
    """The refusal naming the first duplicate key in document order, and where it is (a JSON pointer)."""
    try:
        tree = _PAIRS_DECODER.decode(text)
    except RecursionError:
        return _too_deep(max_depth)
    stack: list[tuple[Any, str, str, int]] = [(tree, "", "", 1)]  # node, JSON pointer, field path, depth
    while stack:
        node, pointer, path, depth = stack.pop()
        if depth > max_depth:
            return _too_deep(max_depth)
        if isinstance(node, _Pairs):
            seen: set[str] = set()
            for key, _ in node:
                if key in seen:
                    try:
                        _check_string(key)  # echoing a key PostgreSQL could not store would fail too
                    except JSONRefused as refused:
                        return refused
                    field = f"{path}.{key}" if path else key
                    where = f"in {pointer}" if pointer else "at the top level"
                    detail = f"Key {key!r} appears more than once {where}; each key may appear once."
                    error = {"field": field, "pointer": f"#{pointer}/{_escape(key)}", "code": "duplicate_key"}
                    return JSONRefused(detail, code="duplicate_key", errors=[{**error, "detail": detail}])
                seen.add(key)
            children = [(v, f"{pointer}/{_escape(k)}", f"{path}.{k}" if path else k) for k, v in node]
        elif isinstance(node, list):
            children = [(v, f"{pointer}/{i}", f"{path}[{i}]") for i, v in enumerate(node)]
        else:
            continue
        stack.extend((child, p, f, depth + 1) for child, p, f in reversed(children))
    return JSONRefused("An object names a key more than once.", code="duplicate_key")  # pragma: no cover


def json_document(text: str, *, max_depth: int | None = None, utf8: bool = True) -> Any:
    """Parse a request's JSON text, refusing what :mod:`services.kit.parsers` describes.

    ``utf8`` says ``text`` was decoded from UTF-8: then it cannot hold a raw surrogate, and NUL or a
    surrogate can only come from a ``\\u`` escape, so a text without one skips the string checks.
    """
    if max_depth is None:
        max_depth = max_json_depth()
    if not text.strip():
        raise JSONRefused("Request body is empty; a JSON document was expected.", code="malformed_json")
    try:
        data = _DECODER.decode(text)
    except _DuplicateKey:
        raise _duplicate_key(text, max_depth) from None
    except RecursionError:
        # The C scanner recurses once per level: only a document far deeper than any limit gets here.
        raise _too_deep(max_depth) from None
    except ValueError as exc:
        raise JSONRefused(f"Request body is not valid JSON: {exc}", code="malformed_json") from exc
    # Cheap bounds first: a document with no more brackets than the limit cannot nest deeper than it (a long
    # one surely has more: walked without counting).
    deep = len(text) > _COUNT_MAX or text.count("{") + text.count("[") > max_depth
    strings = not utf8 or "\\u" in text
    if deep or strings:
        _walk(data, max_depth=max_depth, strings=strings)
    return data


class StrictJSONParser(JSONParser):
    """JSON parser: UTF-8, bounded nesting, no duplicate keys, no NaN/Infinity, no NUL; clear error codes."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.getreader(encoding)(stream).read()
        except UnicodeDecodeError as exc:
            raise JSONRefused("Request body is not valid UTF-8.", code="malformed_json") from exc
        return json_document(text, utf8=codecs.lookup(encoding).name == "utf-8")
