"""One rule at the edge for text that may reach the database: no character it cannot store.

PostgreSQL's text and JSONB columns refuse NUL (U+0000), and a lone UTF-16 surrogate (U+D800 to
U+DFFF, which JSON's ``\\ud800`` escapes can produce) has no UTF-8 form, so neither can be stored;
SQLite stores both, which hid the difference until a PostgreSQL deployment answered 500. Every
request's query and path parameters, form fields, stored headers and JSON body (at any depth, keys
included) are checked here before any endpoint runs, and a request carrying such a character is
answered one 422 naming every such field, as a user writes it (``query policy``, ``vms[1].name``).
A multipart upload is parsed by its endpoint under its own size limit, which calls
``refuse_unstorable`` on its fields.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Iterable, Iterator, Optional

from flask import Flask, request
from flask_smorest import abort

# request headers whose value is stored with what the request creates
STORED_HEADERS = ("Idempotency-Key",)
_PARSED = "vmemlab.strict_json"

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable(text: str) -> Optional[str]:
    """Why ``text`` cannot be stored, or None if it can."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    char = found.group()
    what = "a NUL character (\\u0000)" if char == "\x00" else f"an unpaired surrogate (\\u{ord(char):04x})"
    return f"contains {what} at position {found.start()}, which cannot be stored"


def _escaped(text: str) -> str:
    """A field name with its unstorable characters written as escapes, so the answer can hold it."""
    return text.encode("unicode_escape", "backslashreplace").decode("ascii")


def json_problems(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(field path, message) for every unstorable string in a JSON value, keys included."""
    if isinstance(value, str):
        message = unstorable(value)
        if message:
            yield path or "(body)", message
    elif isinstance(value, dict):
        for key, item in value.items():
            message = unstorable(str(key))
            field = _escaped(str(key)) if message else str(key)
            field = f"{path}.{field}" if path else field
            if message:
                yield field, f"the key {message}"
            else:
                yield from json_problems(item, field)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from json_problems(item, f"{path}[{index}]")


def field_problems(fields: Iterable[tuple[Any, Any]]) -> Iterator[tuple[str, str]]:
    """(field, message) for every flat field whose name or text value cannot be stored."""
    for name, value in fields:
        message = unstorable(str(name))
        if message:
            yield _escaped(str(name)), f"the name {message}"
        elif isinstance(value, str) and (message := unstorable(value)):
            yield str(name), message


def refuse_unstorable(found: dict[str, Iterable[tuple[str, str]]]) -> None:
    """One 422 naming every field with text that cannot be stored, ``found`` giving each location
    (query, path, headers, form, files, json) its (field, message) pairs; nothing if there is none.
    The answer's message is the API's usual "invalid <fields>" (service.api.errors)."""
    errors: dict[str, dict[str, list[str]]] = {}
    for location, problems in found.items():
        for field, message in problems:
            errors.setdefault(location, {}).setdefault(field, []).append(message)
    if errors:
        abort(422, errors=errors)


def _not_a_number(text: str) -> float:
    raise ValueError(f"{text} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is beyond the largest number this service stores")
    return value


def request_json() -> Any:
    """The request's JSON body by the rules of what this service stores (no NaN or Infinity, no
    number beyond a double), parsed once per request: the check below and the endpoint share it.
    Raises ValueError (UnicodeDecodeError included) saying why the body is not such JSON."""
    # kept with the request itself: ``g`` belongs to the app context, which an outer one (a
    # script's, a test's) can share between requests
    if _PARSED not in request.environ:
        try:
            request.environ[_PARSED] = (json.loads(request.get_data(), parse_constant=_not_a_number,
                                                   parse_float=_finite_float), None)
        except ValueError as exc:
            request.environ[_PARSED] = (None, exc)
    body, error = request.environ[_PARSED]
    if error is not None:
        raise error
    return body


def check_request_text() -> None:
    """A ``before_request`` hook: the rule above for every request."""
    found = {
        "query": field_problems((n, v) for n, values in request.args.lists() for v in values),
        "path": field_problems((request.view_args or {}).items()),
        "headers": field_problems((n, request.headers[n]) for n in STORED_HEADERS if n in request.headers),
    }
    if request.mimetype == "application/x-www-form-urlencoded":
        found["form"] = field_problems((n, v) for n, values in request.form.lists() for v in values)
    if request.is_json:
        try:
            body = request_json()
        except ValueError:
            # not the JSON this service takes: the endpoint says why (400); whatever a lenient
            # parser still reads of it is checked all the same
            body = request.get_json(silent=True)
        if body is not None:
            found["json"] = json_problems(body)
    refuse_unstorable(found)


def register_storable_check(app: Flask) -> None:
    app.before_request(check_request_text)
