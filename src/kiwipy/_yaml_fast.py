"""libyaml for the YAML wire format, where it writes exactly what ``yaml.dump`` writes.

kiwipy 0.9's wire format is ``yaml.dump(obj, encoding='utf-8')`` with the pure-Python
:class:`yaml.Dumper` and ``yaml.load(data, Loader=yaml.FullLoader)``; both take hundreds of
microseconds for a 1 KiB message. libyaml's ``CDumper`` and ``CFullLoader`` run the same
Python representers and constructors but emit and parse in C, 20-30 times faster. Their
emitter does not always produce the same bytes (long scalars are folded at other places,
some keys become ``? `` complex keys, a top-level scalar gets no ``...`` end marker), so:

* **Dumping** uses libyaml only for a *plain tree* (:func:`is_plain`): dicts, lists and
  tuples (at most :data:`MAX_DEPTH` deep, a collection at the top) of ``None``, ``bool``,
  ``int``, ``float`` and printable-ASCII ``str`` values of the exact built-in types, where
  strings containing a space are short enough never to be folded and keys are short
  strings or scalars. On that domain both emitters were checked to agree byte for byte
  (``tests/unit/test_perf_yaml.py``); everything else, custom types included, goes through
  ``yaml.dump`` unchanged. It also requires that nobody replaced the representers of those
  types on :class:`yaml.Dumper` nor patched its emitter, serializer or ``yaml.Dumper``
  itself; the representers and resolvers are read from :class:`yaml.Dumper` at each call,
  so ones registered later (plumpy registers ``!uuid`` and more) are honoured.
  A *plain scalar* at the top (:func:`is_plain_scalar`: an RPC request is often one string,
  possibly megabytes long) goes through libyaml too: its output differs from ``yaml.dump``'s
  only by the ``...`` end marker ``yaml.Dumper`` puts after an unquoted top-level scalar,
  which is added (checked on random scalars by ``tests/unit/test_perf_yaml.py``).
* **Loading** uses ``CFullLoader`` with the constructors and resolvers of
  :class:`yaml.FullLoader` (read at each call, so ``yaml.add_constructor`` keeps working).
  Anything it raises makes the pure-Python ``FullLoader`` run instead, so errors, and any
  document libyaml would not parse, are handled exactly as before.

Without libyaml (``yaml.__with_libyaml__`` false) both fall back to pure Python.

Everything else is dumped by ``yaml.Dumper`` itself, with one check added: a value that
``yaml.Dumper`` can only write as a ``!!python/object...`` tag that ``yaml.FullLoader``
cannot construct (an arbitrary object: ``object()``, a lambda's closure, an instance of a
class nobody registered) raises instead. kiwipy 0.9 sent such a message, which no receiver
could decode: a broadcast was dropped by every listener without a word (issue 11).
"""

from __future__ import annotations

import re
import sys
from typing import Any, Optional

import yaml
import yaml.emitter
import yaml.representer
import yaml.serializer

__all__ = ("MAX_DEPTH", "available", "dump", "is_plain", "is_plain_scalar", "load")

#: Deepest nesting of collections libyaml is used for.
MAX_DEPTH = 6
#: Longest string with a space in it (and longest string key) libyaml is used for: with
#: ``MAX_DEPTH`` levels of indentation and such a key in front, such a string ends before
#: column 80, where both emitters would start folding it (each at its own place).
MAX_SPACED = 20
MAX_KEY = 40

_NO_SPACE = re.compile(r"[\x21-\x7e]*\Z").match
_PRINTABLE = re.compile(r"[\x20-\x7e]*\Z").match
_SCALARS = (type(None), bool, int, float)

_FAST_DUMPER: Optional[type[Any]] = None
_FAST_LOADER: Optional[type[Any]] = None
_PRISTINE: dict[str, dict[str, Any]] = {}
_PRISTINE_REPRESENTERS: dict[type[Any], Any] = {}
_PLAIN_TYPES = (str, int, float, bool, type(None), dict, list, tuple)
_RESOLVERS = ("yaml_implicit_resolvers", "yaml_path_resolvers")
_REGISTRIES = ("yaml_representers", "yaml_multi_representers", *_RESOLVERS)
_LOADER_REGISTRIES = ("yaml_constructors", "yaml_multi_constructors", *_RESOLVERS)


def _setup() -> None:
    global _FAST_DUMPER, _FAST_LOADER
    if not getattr(yaml, "__with_libyaml__", False):
        return
    _FAST_DUMPER = type("_KiwipyCDumper", (yaml.CDumper,), {})
    _FAST_LOADER = type("_KiwipyCFullLoader", (yaml.CFullLoader,), {})
    for cls in (yaml.emitter.Emitter, yaml.serializer.Serializer):
        _PRISTINE[cls.__qualname__] = dict(vars(cls))
    dumper = {k: v for k, v in vars(yaml.Dumper).items() if k not in _REGISTRIES}
    _PRISTINE[yaml.Dumper.__qualname__] = dumper
    _PRISTINE_REPRESENTERS.update({t: yaml.Dumper.yaml_representers.get(t) for t in _PLAIN_TYPES})


def available() -> bool:
    """:returns: whether libyaml is there to be used."""
    return _FAST_DUMPER is not None


def _untouched(cls: type[Any], extra: tuple[str, ...] = ()) -> bool:
    """:returns: whether *cls* has the attributes it had at import, ignoring *extra*
    (the registries ``add_representer`` & co. copy into the class on first use)."""
    before = _PRISTINE.get(cls.__qualname__)
    if before is None:
        return False
    now = vars(cls)
    if not extra:
        return bool(now == before)
    return {k: v for k, v in now.items() if k not in extra} == before


def _dumper_is_standard() -> bool:
    representers = yaml.Dumper.yaml_representers
    return (
        _untouched(yaml.Dumper, _REGISTRIES)
        and _untouched(yaml.emitter.Emitter)
        and _untouched(yaml.serializer.Serializer)
        and all(representers.get(t) is fn for t, fn in _PRISTINE_REPRESENTERS.items())
    )


def is_plain(obj: Any) -> bool:
    """:returns: whether *obj* is in the domain where libyaml's output equals
    ``yaml.dump``'s (see the module doc); a collection is required at the top."""
    kind = type(obj)
    if kind is dict or kind is list or kind is tuple:
        return _plain(obj, 1)
    return False


def is_plain_scalar(obj: Any) -> bool:
    """:returns: whether *obj* is a scalar of the plain-tree domain (:func:`is_plain`)."""
    kind = type(obj)
    return (kind is str or kind in _SCALARS) and _plain(obj, 1)


def _plain(obj: Any, depth: int) -> bool:
    kind = type(obj)
    if kind is str:
        return bool(_NO_SPACE(obj)) or (len(obj) <= MAX_SPACED and bool(_PRINTABLE(obj)))
    if kind in _SCALARS:
        return True
    if depth > MAX_DEPTH:
        return False
    if kind is dict:
        return all(_plain_key(key) and _plain(value, depth + 1) for key, value in obj.items())
    if kind is list or kind is tuple:
        return all(_plain(item, depth + 1) for item in obj)
    return False


def _plain_key(key: Any) -> bool:
    kind = type(key)
    if kind is str:
        # '' is written as a "? ''" complex key by yaml.Dumper only
        return 0 < len(key) <= MAX_KEY and bool(_PRINTABLE(key))
    return kind in _SCALARS


def _sync(target: type[Any], source: type[Any], names: tuple[str, ...]) -> None:
    for name in names:
        setattr(target, name, getattr(source, name))


_PYTHON_TAG = "tag:yaml.org,2002:python/"
_PYTHON_NAME_TAG = _PYTHON_TAG + "name:"


def _decodable(tag: str) -> bool:
    """Whether ``yaml.FullLoader`` (the decoder of this format) can construct *tag*."""
    loader = yaml.FullLoader
    if tag in loader.yaml_constructors:
        return True
    return any(tag.startswith(prefix) for prefix in loader.yaml_multi_constructors if prefix)


def _findable(tag: str) -> bool:
    """Whether ``yaml.FullLoader`` finds the object a ``!!python/name:`` *tag* names: its
    module must be imported and have it as an attribute (a lambda or a nested function is
    written with a name nobody can look up)."""
    name = tag[len(_PYTHON_NAME_TAG) :]
    module, _, attribute = name.rpartition(".")
    found = sys.modules.get(module or "builtins")
    return found is not None and hasattr(found, attribute)


def _represent_checked(self: Any, data: Any) -> Any:
    node = yaml.Dumper.represent_data(self, data)
    tag = node.tag
    if tag.startswith(_PYTHON_NAME_TAG) and not _findable(tag):
        raise TypeError(
            f"{data!r} would be written as {tag[len('tag:yaml.org,2002:') :]}, a name the YAML "
            "decoder cannot look up"
        )
    if tag.startswith(_PYTHON_TAG) and not _decodable(tag):
        raise TypeError(
            f"a {type(data).__qualname__} would be written as {tag[len('tag:yaml.org,2002:') :]}"
            ", which the YAML decoder cannot read (send plain data, or register a representer "
            "and a constructor for the type with yaml.add_representer/add_constructor)"
        )
    return node


#: ``yaml.Dumper`` with the check above; its registries are those of ``yaml.Dumper``, read
#: at each call (plumpy registers representers on ``yaml.Dumper`` after import).
_CHECKED_DUMPER = type(
    "_KiwipyCheckedDumper", (yaml.Dumper,), {"represent_data": _represent_checked}
)


def _dump_checked(obj: Any) -> bytes:
    _sync(_CHECKED_DUMPER, yaml.Dumper, _REGISTRIES)
    return _as_bytes(yaml.dump(obj, encoding="utf-8", Dumper=_CHECKED_DUMPER))


def dump(obj: Any) -> bytes:
    """:returns: ``yaml.dump(obj, encoding='utf-8')``, computed by libyaml when that gives
    the same bytes."""
    dumper = _FAST_DUMPER
    if dumper is None:
        return _dump_checked(obj)
    if is_plain(obj) and _dumper_is_standard():
        _sync(dumper, yaml.Dumper, _REGISTRIES)
        return _as_bytes(yaml.dump(obj, encoding="utf-8", Dumper=dumper))
    if is_plain_scalar(obj) and _dumper_is_standard():
        _sync(dumper, yaml.Dumper, _REGISTRIES)
        data = _as_bytes(yaml.dump(obj, encoding="utf-8", Dumper=dumper))
        # yaml.Dumper ends a document that is one unquoted scalar with "...", libyaml not
        return data if data[:1] in (b"'", b'"') else data + b"...\n"
    return _dump_checked(obj)


def load(data: bytes) -> Any:
    """:returns: ``yaml.load(data, Loader=yaml.FullLoader)``, parsed by libyaml when it can."""
    loader = _FAST_LOADER
    if loader is not None:
        _sync(loader, yaml.FullLoader, _LOADER_REGISTRIES)
        try:
            return yaml.load(data, Loader=loader)
        except Exception:  # whatever libyaml thinks, the pure-Python loader decides
            pass
    return yaml.load(data, Loader=yaml.FullLoader)


def _as_bytes(data: Any) -> bytes:
    return data if isinstance(data, bytes) else bytes(data)


_setup()
