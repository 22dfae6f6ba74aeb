"""What the hostile battery (``tests/contract_battery.py``) throws at a communicator: names,
bodies and subscriber behaviours as hypothesis strategies, and the subscribers that act the
behaviours out.

Every drawn value is wrapped in :class:`Drawn` (or is a :class:`Behaviour`) with a short,
readable ``repr``: hypothesis prints the falsifying example, and the raw values can be a
megabyte long, nested thousands deep (``repr`` would recurse) or made fresh per use (a lock).
"""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any, Callable, Optional

from hypothesis import strategies as st

import kiwipy

__all__ = (
    "BASE_ERRORS",
    "ERRORS",
    "Behaviour",
    "Drawn",
    "applicable",
    "behaviours",
    "bodies",
    "fixed",
    "is_plain_name",
    "nested",
    "identifiers",
    "queue_names",
)

#: The largest body drawn, in characters: above what a send takes in a second, under the
#: ``max_message_size`` of the contract's RabbitMQ communicators (8 MiB).
LARGE = 6_000_000


class Drawn:
    """A drawn input: ``make()`` builds a fresh value, ``label`` names it in reports.

    :ivar plain: the value is plain data every encoder round-trips unchanged (so a send must
        succeed and an echo must return it equal).
    :ivar suffix: the value is a name to put under the test's namespace (``<namespace>.<value>``).
    """

    # Not a dataclass: hypothesis prints a dataclass field by field, not with its repr.
    def __init__(
        self, label: str, make: Callable[[], Any], plain: bool = False, suffix: bool = False
    ) -> None:
        self.label = label
        self.make = make
        self.plain = plain
        self.suffix = suffix

    def __repr__(self) -> str:
        return self.label


def fixed(value: Any, plain: bool = False) -> Drawn:
    """:returns: *value* as a :class:`Drawn` (for explicit examples)."""
    return Drawn(_short_repr(value), lambda: value, plain)


# -- names: RPC identifiers, subscriber identifiers, task queue names --------------------------

#: Names that broke a transport once, or are reserved somewhere: always among the examples.
NASTY_NAMES = (
    "",
    "#",
    "*",
    "a.#",
    "*.b",
    "é" * 200,  # 200 characters, 400 UTF-8 bytes: over AMQP's 255-byte short strings
    "x" * 256,
    "\ud800",  # a lone surrogate: not encodable as UTF-8
    "\x00",
    " ",
    "[rpc]",
    "amq.battery",  # RabbitMQ reserves queue names starting with amq.
)

_ANY_CHAR = st.characters(exclude_categories=())  # surrogates included
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


def _name_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(NASTY_NAMES),
        st.text(_ANY_CHAR, max_size=300),
        st.text(st.sampled_from("abc.-_#*é"), min_size=1, max_size=300),
    )


def _non_strings() -> st.SearchStrategy[Drawn]:
    return st.one_of(
        st.none().map(fixed),
        st.booleans().map(fixed),
        st.integers().map(fixed),
        st.floats().map(fixed),
        st.binary(max_size=20).map(fixed),
        st.tuples(st.integers(), st.text(max_size=3)).map(fixed),
        st.lists(st.integers(), max_size=2).map(lambda v: Drawn(repr(v), lambda: list(v))),
        st.just(Drawn("object()", object)),
    )


def is_plain_name(name: Any) -> bool:
    """:returns: whether *name* is a name every transport must accept (dotted words of
    ASCII letters, digits, ``_`` and ``-``, at most 200 characters, not starting with
    ``amq.``, which AMQP brokers reserve: ``kiwipy.InvalidName`` refuses it on every
    transport)."""
    return (
        isinstance(name, str)
        and len(name) <= 200
        and bool(_PLAIN_NAME.fullmatch(name))
        and not name.startswith("amq.")
    )


def identifiers() -> st.SearchStrategy[Drawn]:
    """RPC and subscriber identifiers: any text of 0-300 characters, the nasty ones, and
    values that are not strings."""
    return st.one_of(_name_text().map(fixed), _non_strings())


def queue_names() -> st.SearchStrategy[Drawn]:
    """Task queue names. On RabbitMQ a queue name is global to the broker, so random ones are
    suffixes to put under the test's namespace (the nasty ones are taken as they are)."""
    under = st.text(_ANY_CHAR, max_size=300).map(
        lambda s: Drawn(f"<namespace>.{s!r}", lambda: s, suffix=True)
    )
    return st.one_of(st.sampled_from(NASTY_NAMES).map(fixed), under, _non_strings())


# -- bodies -----------------------------------------------------------------------------------

_PLAIN_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
_PLAIN = st.recursive(
    _PLAIN_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


def nested(depth: int) -> Any:
    """:returns: a list nested *depth* deep."""
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def _unencodable() -> st.SearchStrategy[Drawn]:
    return st.sampled_from(
        (
            Drawn("threading.Lock()", threading.Lock),
            Drawn("object()", object),
            Drawn("a lambda", lambda: lambda: None),
            Drawn("a generator", lambda: (n for n in range(3))),
            Drawn("{(1, 2): 'tuple key'}", lambda: {(1, 2): "tuple key"}),
            Drawn("{1, 2}", lambda: {1, 2}),
            Drawn("b'bytes'", lambda: b"bytes"),
            Drawn("'\\ud800'", lambda: "\ud800"),
            Drawn("float('nan')", lambda: float("nan")),
            Drawn("2**100", lambda: 2**100),
            Drawn("[1, Lock()]", lambda: [1, threading.Lock()]),
        )
    )


def bodies() -> st.SearchStrategy[Drawn]:
    """Message bodies: plain data, values an encoder may refuse, deep nesting, large."""
    return st.one_of(
        _PLAIN.map(lambda v: fixed(v, plain=True)),
        _unencodable(),
        st.sampled_from((20, 300, 990, 1500, 5000)).map(
            lambda n: Drawn(f"nested {n} deep", lambda: nested(n))
        ),
        st.sampled_from((10_000, 300_000, 1_000_000, LARGE)).map(
            lambda n: Drawn(f"'x' * {n}", lambda: "x" * n, plain=True)
        ),
    )


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else f"{text[:200]}... ({len(text)} characters)"


# -- subscriber behaviours ----------------------------------------------------------------------


class BatteryError(Exception):
    """A user-defined exception."""


class BatteryBaseError(BaseException):
    """A user-defined ``BaseException`` that is not an ``Exception``."""


class UnprintableError(Exception):
    """An exception whose ``str()`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("this exception cannot be printed")


#: ``Exception`` subclasses a subscriber may raise.
ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    RuntimeError,
    KeyError,
    ZeroDivisionError,
    RecursionError,
    MemoryError,
    StopIteration,
    StopAsyncIteration,
    BatteryError,
    UnprintableError,
    kiwipy.RemoteException,
    kiwipy.CancelledError,
)
#: ``BaseException`` subclasses that are not ``Exception``s.
BASE_ERRORS: tuple[type[BaseException], ...] = (
    GeneratorExit,
    KeyboardInterrupt,
    SystemExit,
    asyncio.CancelledError,
    BatteryBaseError,
)

RETURN = "return"
RAISE = "raise"
FUTURE_RESULT = "future-result"
FUTURE_FAILS = "future-fails"
FUTURE_CANCELLED = "future-cancelled"
HANG = "hang"  # never returns until released; the sender cancels meanwhile


class Behaviour:
    """What a subscriber does with a message.

    :ivar action: one of the action constants above.
    :ivar error: the exception raised (``raise``) or set on the returned future
        (``future-fails``).
    :ivar value: what is returned (``return``), or what the returned future resolves to.
    :ivar coroutine: the subscriber is a coroutine function.
    :ivar late: a returned future is completed after the subscriber returned it (else before).
    """

    def __init__(
        self,
        action: str,
        error: Optional[type[BaseException]] = None,
        value: Optional[Drawn] = None,
        coroutine: bool = False,
        late: bool = False,
    ) -> None:
        self.action = action
        self.error = error
        self.value = value
        self.coroutine = coroutine
        self.late = late

    def __repr__(self) -> str:
        parts = [self.action]
        if self.error is not None:
            parts.append(f"{self.error.__module__}.{self.error.__qualname__}")
        if self.value is not None:
            parts.append(f"value={self.value!r}")
        if self.action.startswith("future"):
            parts.append("completed late" if self.late else "completed before returning")
        parts.append("coroutine" if self.coroutine else "plain function")
        return f"Behaviour({', '.join(parts)})"


def behaviours() -> st.SearchStrategy[Behaviour]:
    """Subscriber behaviours a transport must survive (see :func:`applicable` for the ones a
    given transport and kind of subscriber can be given)."""
    errors = st.sampled_from(ERRORS + BASE_ERRORS + (kiwipy.TaskRejected,))
    values = st.one_of(_PLAIN.map(lambda v: fixed(v, plain=True)), _unencodable())
    return st.one_of(
        st.builds(Behaviour, st.just(RETURN), value=values, coroutine=st.booleans()),
        st.builds(Behaviour, st.just(RAISE), error=errors, coroutine=st.booleans()),
        st.builds(
            Behaviour,
            st.just(FUTURE_RESULT),
            value=values,
            coroutine=st.booleans(),
            late=st.booleans(),
        ),
        st.builds(
            Behaviour,
            st.just(FUTURE_FAILS),
            error=errors,
            coroutine=st.booleans(),
            late=st.booleans(),
        ),
        st.builds(
            Behaviour, st.just(FUTURE_CANCELLED), coroutine=st.booleans(), late=st.booleans()
        ),
        st.builds(Behaviour, st.just(HANG), coroutine=st.booleans()),
    )


def applicable(
    behaviour: Behaviour, *, rpc: bool, isolates: bool, awaits: bool, on_sender_loop: bool
) -> bool:
    """:returns: whether a subscriber may be given *behaviour*.

    :param rpc: it is an RPC subscriber (a task subscriber raising ``TaskRejected`` passes
        the task on, to itself again when it is the only one: not a failure).
    :param isolates: the transport isolates subscribers, so they may raise ``BaseException``.
    :param awaits: the transport awaits coroutine subscribers.
    :param on_sender_loop: subscribers run on the sender's event loop: their futures are
        asyncio's (which refuse ``StopIteration``), and only a coroutine may hang (a plain
        function would block the sender too).
    """
    error = behaviour.error
    if error is kiwipy.TaskRejected and not rpc:
        return False
    if error is not None and not issubclass(error, Exception) and not isolates:
        return False
    if behaviour.coroutine and not awaits:
        return False
    if behaviour.action == HANG and not (awaits and (behaviour.coroutine or not on_sender_loop)):
        return False
    return not (behaviour.action == FUTURE_FAILS and error is StopIteration and on_sender_loop)
