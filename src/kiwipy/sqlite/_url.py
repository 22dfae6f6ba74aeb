"""The ``sqlite://`` URL: :func:`parse_url` gives the database's absolute path and its
options."""

from __future__ import annotations

import os
import pathlib
import urllib.parse

__all__ = ("parse_url",)

_SCHEME = "sqlite://"
_EXPECTED = (
    "expected sqlite:///relative/path.db (relative to the current directory) "
    "or sqlite:////absolute/path.db"
)


def _bad_url(url: str, reason: str) -> ValueError:
    return ValueError(f"invalid SQLite URL {url!r}: {reason}; {_EXPECTED}")


def parse_url(url: str) -> tuple[pathlib.Path, dict[str, str]]:
    """The database file and the query parameters of a ``sqlite://`` URL.

    SQLAlchemy's convention: ``sqlite:///relative/path.db`` is relative to the current
    directory (the path returned is made absolute, so it stays the same file if the
    directory changes later), ``sqlite:////absolute/path.db`` is absolute. The path is
    percent-decoded (``%20`` is a space, ``%3F`` a ``?``). Query parameters
    (``?synchronous=normal&x=y``) come back as a dict of strings.

    :raises ValueError: naming the URL and the expected forms, when the URL does not start
        with ``sqlite://``, has a host part (the file must be local), has no path, asks for
        ``:memory:`` (use ``memory://`` for a single process), names a directory, or repeats
        a query parameter.
    """
    if not url.startswith(_SCHEME):
        raise _bad_url(url, "it does not start with sqlite://")
    rest, _, query = url[len(_SCHEME) :].partition("?")
    if rest in (":memory:", "/:memory:"):
        raise _bad_url(
            url,
            "an in-memory SQLite database cannot be shared between processes; use memory:// "
            "for a single process",
        )
    if rest and not rest.startswith("/"):
        host = rest.split("/", 1)[0]
        raise _bad_url(
            url,
            f"it has a host part ({host!r}) but the file must be local: write sqlite:///path "
            "or sqlite:////abs/path",
        )
    encoded = rest[1:]
    if not encoded:
        raise _bad_url(url, "it has no file path")
    decoded = urllib.parse.unquote(encoded, errors="surrogateescape")
    if "\x00" in decoded:
        raise _bad_url(url, "its path contains a NUL character")
    if decoded.endswith("/"):
        raise _bad_url(url, "its path names a directory, not a file")
    path = pathlib.Path(os.path.abspath(decoded))
    return path, _parse_query(url, query)


def _parse_query(url: str, query: str) -> dict[str, str]:
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:
        raise _bad_url(url, f"its query is malformed ({exc})") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise _bad_url(url, f"the query parameter {name!r} is given more than once")
        params[name] = value
    return params
