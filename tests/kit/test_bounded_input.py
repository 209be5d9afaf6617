"""Bounded input, the same in every service: JSON depth and duplicate keys (the parser), metadata limits, the one
ISO 4217 list, and body limits per route with chunked bodies read as they stream (the middleware)."""

from __future__ import annotations

import io
import json

import pytest
from django.test import Client

from services.kit.currencies import CURRENCIES, MINOR_UNITS, SPECIAL_CODES, currency_is_valid
from services.kit.metadata import (
    MAX_KEY_LENGTH,
    MAX_KEYS,
    MAX_VALUE_LENGTH,
    InvalidMetadata,
    metadata_check,
    metadata_errors,
)
from services.kit.parsers import JSONRefused, json_document
from tests.problems import assert_problem

pytestmark = pytest.mark.urls("tests.kit.urls")

ECHO = "/api/v1/echo"


def _post(client: Client, text: str | bytes) -> object:
    return client.post(ECHO, text, content_type="application/json")


def _refusal(text: str, max_depth: int = 32) -> JSONRefused:
    with pytest.raises(JSONRefused) as caught:
        json_document(text, max_depth=max_depth)
    return caught.value


# ----------------------------------------------------------------------------------------------- nesting depth


def _arrays(depth: int) -> str:
    return "[" * depth + "]" * depth


def _objects(depth: int) -> str:
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


def _mixed(depth: int) -> str:
    # {"a": [{"a": [ ... 1 ... ]}]}: objects and arrays alternating
    levels = range(depth)
    opening = "".join('{"a": ' if level % 2 == 0 else "[" for level in levels)
    closing = "".join("}" if level % 2 == 0 else "]" for level in reversed(levels))
    return opening + "1" + closing


@pytest.mark.parametrize("build", [_arrays, _objects, _mixed], ids=["arrays", "objects", "mixed"])
def test_a_document_nested_one_level_over_the_limit_is_json_too_deep(build):
    # given a document nested 33 levels deep (the limit is 32)
    text = build(33)
    assert json_document(build(32), max_depth=32) is not None  # one level less is fine

    # then it is refused with the limit named
    refused = _refusal(text)
    assert refused.get_codes() == "json_too_deep"
    assert refused.problem_members == {"max_depth": 32}


@pytest.mark.parametrize("depth", [500, 5_000, 200_000])
@pytest.mark.parametrize("build", [_arrays, _objects, _mixed], ids=["arrays", "objects", "mixed"])
def test_absurd_nesting_is_json_too_deep_not_a_recursion_error(build, depth):
    # when the nesting is far beyond any limit (deeper than Python's recursion limit, too)
    refused = _refusal(build(depth))

    # then it is the same clear refusal
    assert refused.get_codes() == "json_too_deep"


def test_deep_nesting_inside_an_otherwise_normal_document_is_found():
    # given a wide, shallow document with one deep branch at its end (as a batch with one poisoned item)
    items = [{"reference": f"r{i}", "metadata": {"n": i}} for i in range(300)]
    text = json.dumps({"transactions": items})[:-2] + ', {"metadata": ' + _mixed(40) + "}]}"

    # then the deep branch is found
    assert _refusal(text).get_codes() == "json_too_deep"


def test_brackets_inside_strings_do_not_count_as_nesting():
    # given strings full of brackets in a flat object
    document = {"a": "[" * 100, "b": "{" * 100, "c": ["]]]", "}}}"]}

    # then it is accepted as the flat document it is
    assert json_document(json.dumps(document), max_depth=3) == document


def test_the_depth_limit_is_a_setting(client, settings):
    # given a stricter limit
    settings.ATRIUM_MAX_JSON_DEPTH = 2

    # when the echo body nests three levels
    response = _post(client, json.dumps({"name": "rent", "amount": 1, "x": [[1]]}))

    # then the view refuses it through the parser, naming the limit
    body = assert_problem(response, 400, "json_too_deep")
    assert body["max_depth"] == 2


@pytest.mark.parametrize("build", [_arrays, _objects, _mixed], ids=["arrays", "objects", "mixed"])
def test_deep_json_posted_to_a_view_is_a_400_problem_not_a_500(build):
    # given a client that returns 500 responses instead of raising them
    client = Client(raise_request_exception=False)

    # when a deeply nested body is posted, deeper than Python's recursion limit
    response = _post(client, build(3_000))

    # then it is a problem document with the stable code
    body = assert_problem(response, 400, "json_too_deep")
    assert body["max_depth"] == 32


# ----------------------------------------------------------------------------------------------- duplicate keys


def test_a_duplicate_key_at_the_top_level_is_refused_with_its_pointer(client):
    # when a body names "amount" twice
    response = _post(client, '{"name": "rent", "amount": 1, "amount": 1000000}')

    # then it is a 400 naming the key and where, not last-wins
    body = assert_problem(response, 400, "duplicate_key")
    assert body["errors"] == [
        {"field": "amount", "pointer": "#/amount", "code": "duplicate_key", "detail": body["detail"]}
    ]
    assert "'amount'" in body["detail"]


@pytest.mark.parametrize(
    ("text", "field", "pointer"),
    [
        ('{"metadata": {"k": 1, "j": 2, "k": 3}}', "metadata.k", "#/metadata/k"),
        ('{"transactions": [{"r": 1}, {"r": 2, "r": 3}]}', "transactions[1].r", "#/transactions/1/r"),
        ('[[{"x": {"y": [1, {"z": 1, "z": 1}]}}]]', "[0][0].x.y[1].z", "#/0/0/x/y/1/z"),
        ('{"a/b": {"m~n": 1, "m~n": 2}}', "a/b.m~n", "#/a~1b/m~0n"),
    ],
    ids=["in-an-object", "in-an-array-item", "deep", "pointer-escaping"],
)
def test_a_nested_duplicate_key_is_located(text, field, pointer):
    refused = _refusal(text)

    assert refused.get_codes() == "duplicate_key"
    (error,) = refused.problem_members["errors"]
    assert (error["field"], error["pointer"], error["code"]) == (field, pointer, "duplicate_key")


def test_the_first_duplicate_in_document_order_is_named():
    # given two objects with duplicates, the outer one first in the text
    refused = _refusal('{"a": 1, "inner": {"b": 1, "b": 2}, "a": 2}')

    # then the outer one is named (where a reader meets it first)
    assert refused.problem_members["errors"][0]["pointer"] == "#/a"


def test_the_same_key_in_sibling_objects_is_not_a_duplicate():
    document = {"postings": [{"account": "a", "amount": 1}, {"account": "b", "amount": 1}], "account": "c"}

    assert json_document(json.dumps(document), max_depth=32) == document


def test_a_duplicate_key_holding_a_lone_surrogate_is_invalid_characters_not_echoed():
    # the key cannot be stored nor written back in the error, so the character rule answers
    assert _refusal('{"\\udc00": 1, "\\udc00": 2}').get_codes() == "invalid_characters"


# ----------------------------------------------------------------------------------------------- strings


@pytest.mark.parametrize(
    "text",
    ['{"a": "x\\u0000"}', '[{"k\\u0000": 1}]', '"\\u0000"', '{"a": ["\\ud800"]}', '{"\\udfff": 1}'],
)
def test_nul_and_lone_surrogates_are_found_anywhere(text):
    assert _refusal(text).get_codes() == "invalid_characters"


def test_escaped_backslash_u_is_plain_text():
    # "\\u0000" is a backslash followed by u0000: six ordinary characters
    assert json_document('{"a": "\\\\u0000"}', max_depth=32) == {"a": "\\u0000"}


# ----------------------------------------------------------------------------------------------- metadata


def _codes(errors: list[dict]) -> list[str]:
    return [e["code"] for e in errors]


def test_metadata_within_every_limit_is_accepted():
    metadata = {
        **{f"k{i}": "v" * MAX_VALUE_LENGTH for i in range(MAX_KEYS - 5)},
        "k" * MAX_KEY_LENGTH: 7,
        "flag": True,
        "none": None,
        "ratio": 0.25,
        "order": {"id": 7, "lines": [1, 2]},  # nested values are allowed, within the value length
    }

    assert metadata_errors(metadata) == []
    assert metadata_check(metadata) is metadata


@pytest.mark.parametrize(
    ("metadata", "code", "pointer"),
    [
        ({f"k{i}": i for i in range(MAX_KEYS + 1)}, "metadata_too_many_keys", "#/metadata"),
        ({"k" * (MAX_KEY_LENGTH + 1): 1}, "metadata_key_too_long", f"#/metadata/{'k' * (MAX_KEY_LENGTH + 1)}"),
        ({"": "empty key"}, "metadata_key_invalid", "#/metadata/"),
        ({"note": "v" * (MAX_VALUE_LENGTH + 1)}, "metadata_value_too_long", "#/metadata/note"),
        ({"big": 10**600}, "metadata_value_too_long", "#/metadata/big"),
        ({"order": {"lines": list(range(200))}}, "metadata_value_too_long", "#/metadata/order"),
        ({"deep": [[[["x" * 495]]]]}, "metadata_value_too_long", "#/metadata/deep"),
        ({"when": object()}, "metadata_value_invalid", "#/metadata/when"),
        ({1: "int key"}, "metadata_key_invalid", "#/metadata/1"),
    ],
    ids=[
        "too-many-keys",
        "long-key",
        "empty-key",
        "long-string",
        "huge-number",
        "long-array",
        "nested-too-long",
        "not-json",
        "non-string-key",
    ],
)
def test_metadata_over_a_limit_gives_a_field_error_with_a_stable_code(metadata, code, pointer):
    # when the metadata breaks one rule
    with pytest.raises(InvalidMetadata) as caught:
        metadata_check(metadata)

    # then it is a 422 invalid_metadata whose field error names the rule and the key
    refused = caught.value
    assert (refused.status, refused.code) == (422, "invalid_metadata")
    assert _codes(refused.extra["errors"]) == [code]
    assert refused.extra["errors"][0]["pointer"] == pointer
    assert refused.extra["errors"][0]["detail"]


@pytest.mark.parametrize("value", [[], "tags", 3, None])
def test_metadata_that_is_not_an_object_is_refused(value):
    assert _codes(metadata_errors(value)) == ["metadata_not_object"]


def test_every_broken_rule_is_reported_once_and_the_list_is_bounded():
    # given metadata breaking several rules at once
    several = {"k" * 41: "v" * 501, "ok": 1, "x": "y" * 600}
    assert sorted(_codes(metadata_errors(several))) == [
        "metadata_key_too_long",
        "metadata_value_too_long",
        "metadata_value_too_long",
    ]

    # and metadata with thousands of bad keys gets a short answer
    errors = metadata_errors({"k" * (41 + i): 1 for i in range(5_000)})
    assert len(errors) <= 21
    assert errors[0]["code"] == "metadata_too_many_keys"


def test_the_field_path_of_a_nested_metadata_field_is_kept():
    errors = metadata_errors({"note": "v" * 501}, field="transactions[3].metadata")

    assert (errors[0]["field"], errors[0]["pointer"]) == (
        "transactions[3].metadata.note",
        "#/transactions/3/metadata/note",
    )


# ----------------------------------------------------------------------------------------------- currencies


@pytest.mark.parametrize("code", ["EUR", "USD", "JPY", "CHF", "XAF", "XOF", "XPF", "XCD", "XCG", "ZWG", "CLF"])
def test_active_iso_4217_codes_are_currencies(code):
    assert currency_is_valid(code)


@pytest.mark.parametrize(
    "code",
    ["XXX", "XTS", "XAU", "XAG", "XPT", "XPD", "XDR", "XSU", "XUA", "XBA", "ABC", "ZWL", "ANG", "HRK", "eur", "EU"],
)
def test_special_unknown_and_withdrawn_codes_are_not_currencies(code):
    assert not currency_is_valid(code)


@pytest.mark.parametrize("value", [None, 978, b"EUR", ["EUR"], " EUR"])
def test_values_that_are_not_codes_are_not_currencies(value):
    assert not currency_is_valid(value)


def test_the_list_holds_minor_units_and_no_special_code():
    assert (MINOR_UNITS["JPY"], MINOR_UNITS["EUR"], MINOR_UNITS["BHD"], MINOR_UNITS["CLF"]) == (0, 2, 3, 4)
    assert not CURRENCIES & SPECIAL_CODES
    assert all(len(code) == 3 and code.isalpha() and code.isupper() for code in CURRENCIES)
    assert 150 < len(CURRENCIES) < 200


# ----------------------------------------------------------------------------------------------- body limits


class _CountingStream(io.BytesIO):
    """A request body as a server hands it over, counting what the application read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.consumed = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.consumed += len(chunk)
        return chunk


class _BrokenStream(io.RawIOBase):
    def read(self, size: int | None = -1) -> bytes:
        raise ValueError("Invalid chunk size")


def _chunked(client: Client, path: str, stream: object, *, terminated: bool = True, **headers: str) -> object:
    """A body without Content-Length (Transfer-Encoding: chunked), as gunicorn passes it on."""
    environ = {"wsgi.input": stream, "HTTP_TRANSFER_ENCODING": "chunked", "CONTENT_TYPE": "application/json"}
    if terminated:
        environ["wsgi.input_terminated"] = True
    return client.generic("POST", path, **environ, **headers)


def test_a_chunked_body_is_read_and_processed_not_taken_as_empty(client):
    # given a body sent without Content-Length
    stream = _CountingStream(json.dumps({"name": "rent", "amount": 12}).encode())

    # when it is posted
    response = _chunked(client, ECHO, stream)

    # then the view saw it (an empty body would be two "required" errors)
    assert response.status_code == 201, response.content
    assert response.json() == {"name": "rent", "amount": 12}


def test_a_chunked_body_over_the_limit_is_refused_without_reading_more_than_the_limit(client, settings):
    # given a 1 KiB limit and a chunked body of 1 MiB
    settings.ATRIUM_MAX_BODY_BYTES = 1024
    stream = _CountingStream(b"[" + b" " * (1024 * 1024) + b"]")

    # when it is posted
    response = _chunked(client, ECHO, stream)

    # then it is a 413 problem, and no more than the limit and one byte was read
    body = assert_problem(response, 413, "payload_too_large")
    assert body["max_body_bytes"] == 1024
    assert stream.consumed == 1025


def test_a_chunked_body_exactly_at_the_limit_is_accepted(client, settings):
    document = json.dumps({"name": "rent", "amount": 3}).encode()
    settings.ATRIUM_MAX_BODY_BYTES = 4096
    padded = document + b" " * (4096 - len(document))

    response = _chunked(client, ECHO, _CountingStream(padded))

    assert response.status_code == 201, response.content


def test_a_chunked_body_the_server_cannot_read_is_a_bad_request(client):
    # when the server fails reading the body (a malformed chunk, a client gone)
    response = _chunked(client, ECHO, _BrokenStream())

    # then it is a 400 problem, not a 500
    assert_problem(response, 400, "bad_request")


def test_a_chunked_body_on_a_server_that_cannot_end_it_asks_for_a_length(client):
    # when the server does not say the input ends with the body (wsgi.input_terminated)
    response = _chunked(client, ECHO, _CountingStream(b'{"name": "x", "amount": 1}'), terminated=False)

    # then the client is asked for a Content-Length rather than its body silently dropped
    assert_problem(response, 411, "length_required")


def test_an_oversized_content_length_is_refused_before_the_body_is_read(client, settings):
    # given a 1 KiB limit and a request announcing a huge body
    settings.ATRIUM_MAX_BODY_BYTES = 1024
    stream = _CountingStream(b"{}")

    # when it is posted with that Content-Length
    response = client.post(ECHO, CONTENT_LENGTH=str(10**12), CONTENT_TYPE="application/json", **{"wsgi.input": stream})

    # then it is refused unread
    body = assert_problem(response, 413, "payload_too_large")
    assert str(10**12) in body["detail"]
    assert stream.consumed == 0


@pytest.mark.parametrize("length", ["-1", "1e3", "12abc"])
def test_a_malformed_content_length_is_a_bad_request(client, length):
    response = client.post(ECHO, "{}", content_type="application/json", CONTENT_LENGTH=length)

    assert_problem(response, 400, "bad_request")
