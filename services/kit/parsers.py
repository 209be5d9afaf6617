"""Request parsing that refuses what PostgreSQL or the domain cannot hold."""

from __future__ import annotations

import codecs
import json
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _check_strings(value: Any) -> None:
    # PostgreSQL text and jsonb cannot store NUL; refusing it here beats a 500 later.
    if isinstance(value, str):
        if "\x00" in value:
            raise ParseError("Strings must not contain NUL (\\u0000) characters.", code="invalid_characters")
        # An unpaired surrogate (U+D800-U+DFFF) is not text: it cannot be stored, nor even echoed back in an error.
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ParseError(
                    "Strings must not contain unpaired surrogates (\\ud800-\\udfff).", code="invalid_characters"
                ) from exc
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key)
            _check_strings(item)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)


class StrictJSONParser(JSONParser):
    """JSON parser: UTF-8 only, no NaN/Infinity, no NUL characters, clear error codes."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.getreader(encoding)(stream).read()
        except UnicodeDecodeError as exc:
            raise ParseError("Request body is not valid UTF-8.", code="malformed_json") from exc
        if not text.strip():
            raise ParseError("Request body is empty; a JSON document was expected.", code="malformed_json")
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise ParseError(f"Request body is not valid JSON: {exc}", code="malformed_json") from exc
        _check_strings(data)
        return data
