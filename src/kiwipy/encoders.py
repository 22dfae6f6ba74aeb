"""Encoders: how message bodies become bytes and back.

An :class:`Encoder` has a ``name``, a ``content_type`` and a pair ``encode``/``decode``. Any
failure is raised as :class:`~kiwipy.exceptions.EncodeError` or
:class:`~kiwipy.exceptions.DecodeError` naming the encoder, so a consumer can reject the one
bad message and carry on.

The default is :data:`YAML`, byte-for-byte the kiwipy 0.9 wire format: ``yaml.dump`` with the
default :class:`yaml.Dumper` and ``yaml.load`` with :class:`yaml.FullLoader`. It is kept as the
default for compatibility only (kiwipy 0.9 peers and clients such as plumpy register
representers on ``yaml.Dumper`` and constructors for ``FullLoader``); new deployments that do
not need to talk to kiwipy 0.9 should prefer :data:`JSON` or :data:`MSGPACK`, which cannot
construct arbitrary objects. :data:`YAML_SAFE` writes the same bytes as :data:`YAML` but
decodes plain data only (:mod:`kiwipy._yaml_safe`): a worker can use it to talk to kiwipy 0.9
peers without trusting them.

Communicators also accept kiwipy 0.9's ``encoder=``/``decoder=`` pair of plain callables;
:func:`resolve` turns either form into an :class:`Encoder`.
"""

from __future__ import annotations

import abc
import json
from typing import Any, Callable, Optional

from . import _yaml_fast, _yaml_safe
from .exceptions import DecodeError, EncodeError

__all__ = (
    "JSON",
    "MSGPACK",
    "YAML",
    "YAML_SAFE",
    "CallableEncoder",
    "Encoder",
    "JsonEncoder",
    "MsgpackEncoder",
    "SafeYamlEncoder",
    "YamlEncoder",
    "get_encoder",
    "resolve",
)

EncodeFn = Callable[[Any], bytes]
DecodeFn = Callable[[bytes], Any]


class Encoder(abc.ABC):
    """Turns message bodies into bytes and back.

    Subclasses implement :meth:`_encode` and :meth:`_decode`; the public methods wrap every
    failure into the typed errors.
    """

    #: Short name used in error messages and on the command line.
    name: str = "custom"
    #: AMQP ``content_type`` set on messages, or ``None`` to set none (the YAML default does
    #: not set one, as kiwipy 0.9 did not).
    content_type: Optional[str] = None
    #: Worst-case bytes of memory decoding one byte of body may take (measured on bodies built
    #: to cost the most, such as ``[[],[],...]``). A RabbitMQ communicator refuses, before
    #: decoding it, a body whose size times this is over its ``max_decode_memory``.
    decode_factor: int = 300

    def encode(self, obj: Any) -> bytes:
        """:returns: *obj* as bytes. :raises EncodeError: if *obj* cannot be encoded."""
        try:
            data = self._encode(obj)
        except EncodeError:
            raise
        except Exception as exc:
            raise EncodeError(
                f"cannot encode {type(obj).__name__}: {exc}", encoder=self.name
            ) from exc
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise EncodeError(
                f"encoder returned {type(data).__name__}, not bytes", encoder=self.name
            )
        return bytes(data)

    def decode(self, data: bytes) -> Any:
        """:returns: the object *data* encodes. :raises DecodeError: if it cannot be decoded."""
        try:
            return self._decode(data)
        except DecodeError:
            raise
        except Exception as exc:
            preview = bytes(data[:40])
            raise DecodeError(
                f"cannot decode {len(data)} bytes ({preview!r}...): {exc}", encoder=self.name
            ) from exc

    #: Whether every string and bytes value of a message is written whole (at least its
    #: length in bytes), which makes :meth:`min_size` a lower bound: true for the built-in
    #: encoders, false for others (one may compress).
    writes_text_whole: bool = False

    def min_size(self, obj: Any) -> int:
        """:returns: a lower bound of the size *obj* encodes to, found without encoding it, so
        a message far over a size limit is refused at once: the length of its strings and
        bytes when :attr:`writes_text_whole`, else 0."""
        return _text_size(obj) if self.writes_text_whole else 0

    @abc.abstractmethod
    def _encode(self, obj: Any) -> bytes: ...

    @abc.abstractmethod
    def _decode(self, data: bytes) -> Any: ...

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


#: Objects :func:`_text_size` looks at, at most.
_TEXT_SIZE_NODES = 10000
_TEXT = (str, bytes, bytearray)


def _text_size(obj: Any) -> int:
    """:returns: the total length of the strings and bytes in *obj* (dict keys and values,
    list, tuple and set items), looking at no more than ``_TEXT_SIZE_NODES`` objects:
    what YAML, JSON and msgpack write at least (UTF-8 and base64 only add)."""
    size, seen, stack = 0, 0, [obj]
    while stack and seen < _TEXT_SIZE_NODES:
        item = stack.pop()
        seen += 1
        if isinstance(item, _TEXT):
            size += len(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
    return size


class YamlEncoder(Encoder):
    """kiwipy 0.9's wire format: ``yaml.dump(obj, encoding='utf-8')`` (default ``yaml.Dumper``)
    and ``yaml.load(data, Loader=yaml.FullLoader)``.

    Both run in libyaml where that gives the same bytes and the same objects (see
    :mod:`kiwipy._yaml_fast`): 20-30 times faster for typical messages, byte-identical on
    the wire, and honouring representers and constructors registered on ``yaml.Dumper`` and
    ``yaml.FullLoader``.

    .. warning:: ``FullLoader`` constructs Python tuples and any type registered with
       ``yaml.add_constructor``; only accept messages from peers you trust.
    """

    name = "yaml"
    writes_text_whole = True
    #: ``[[],[],...]`` measured 262 bytes per body byte: every node is a Python object with
    #: two position marks before it is constructed.
    decode_factor = 300

    def _encode(self, obj: Any) -> bytes:
        return _yaml_fast.dump(obj)

    def _decode(self, data: bytes) -> Any:
        return _yaml_fast.load(data)


class SafeYamlEncoder(YamlEncoder):
    """kiwipy 0.9's YAML wire format, decoded into plain data only (``'yaml-safe'``).

    Encodes exactly as :class:`YamlEncoder`. Decodes with a :class:`yaml.SafeLoader` that also
    accepts the ``!!python/...`` tags of plain values (``tuple``, which every kiwipy 0.9 task
    message is, ``list``, ``dict``, ``str``, ``bytes``, ``int``, ``float``, ``complex``,
    ``bool``, ``none``, ...) and plumpy's ``!uuid`` (built as ``uuid.UUID``); any other
    tag, ``!!python/object``, ``!!python/object/apply`` and ``!!python/name`` included, is
    refused with :class:`~kiwipy.DecodeError` before anything is built. Constructors registered
    with ``yaml.add_constructor`` are not used.
    """

    name = "yaml-safe"

    def _decode(self, data: bytes) -> Any:
        return _yaml_safe.load(data)


class JsonEncoder(Encoder):
    """UTF-8 JSON. Tuples arrive as lists; only JSON types round-trip."""

    name = "json"
    writes_text_whole = True
    content_type = "application/json"
    #: ``[[],[],...]`` measured 28 bytes per body byte (an empty list per 3 bytes).
    decode_factor = 32

    def _encode(self, obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")

    def _decode(self, data: bytes) -> Any:
        return json.loads(data)


class MsgpackEncoder(Encoder):
    """msgpack (needs the ``msgpack`` extra: ``pip install kiwipy[msgpack]``). Tuples arrive
    as lists."""

    name = "msgpack"
    writes_text_whole = True
    content_type = "application/msgpack"
    #: A one-byte empty array or map becomes a Python list or dict: 73 bytes per body byte.
    decode_factor = 80

    def __init__(self) -> None:
        try:
            import msgpack
        except ImportError:  # pragma: no cover - depends on the environment
            self._msgpack: Any = None
        else:
            self._msgpack = msgpack

    def _require(self) -> Any:
        if self._msgpack is None:
            raise RuntimeError("the msgpack encoder needs msgpack: pip install 'kiwipy[msgpack]'")
        return self._msgpack

    def _encode(self, obj: Any) -> bytes:
        data: bytes = self._require().packb(obj, use_bin_type=True)
        return data

    def _decode(self, data: bytes) -> Any:
        return self._require().unpackb(data, raw=False)


class CallableEncoder(Encoder):
    """An encoder built from kiwipy 0.9's ``encoder``/``decoder`` callables.

    Its :attr:`Encoder.decode_factor` is the YAML one: nothing is known of the decoder, and kiwipy 0.9
    users (AiiDA) pass YAML-based ones.
    """

    def __init__(self, encode: EncodeFn, decode: DecodeFn, name: str | None = None) -> None:
        self._encode_fn = encode
        self._decode_fn = decode
        self.name = name or getattr(encode, "__name__", None) or "custom"

    def _encode(self, obj: Any) -> bytes:
        return self._encode_fn(obj)

    def _decode(self, data: bytes) -> Any:
        return self._decode_fn(data)


YAML = YamlEncoder()
YAML_SAFE = SafeYamlEncoder()
JSON = JsonEncoder()
MSGPACK = MsgpackEncoder()

_BY_NAME: dict[str, Encoder] = {enc.name: enc for enc in (YAML, YAML_SAFE, JSON, MSGPACK)}


def get_encoder(name: str) -> Encoder:
    """:returns: the built-in encoder called *name* (``yaml``, ``yaml-safe``, ``json`` or
    ``msgpack``).

    :raises ValueError: for any other name.
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(
            f"unknown encoder {name!r}; choose one of: {', '.join(sorted(_BY_NAME))}"
        ) from None


def resolve(
    encoder: Encoder | EncodeFn | str | None = None, decoder: DecodeFn | None = None
) -> Encoder:
    """Turn the ``encoder``/``decoder`` arguments communicators accept into one :class:`Encoder`.

    :param encoder: an :class:`Encoder`, a built-in encoder's name, a kiwipy 0.9 style
        ``encoder(obj) -> bytes`` callable, or ``None`` for the YAML default.
    :param decoder: with a callable *encoder*, its ``decoder(bytes) -> obj`` (``None`` means
        the YAML decoder); must be ``None`` otherwise.
    """
    if isinstance(encoder, Encoder):
        if decoder is not None:
            raise ValueError("pass either an Encoder or an encoder/decoder pair, not both")
        return encoder
    if isinstance(encoder, str):
        if decoder is not None:
            raise ValueError("pass either an encoder name or an encoder/decoder pair, not both")
        return get_encoder(encoder)
    if encoder is None and decoder is None:
        return YAML
    return CallableEncoder(encoder or YAML.encode, decoder or YAML.decode)
