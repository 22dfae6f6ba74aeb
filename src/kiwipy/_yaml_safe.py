"""A YAML loader that builds plain data only, and still reads what kiwipy 0.9 peers send.

kiwipy 0.9 decodes with :class:`yaml.FullLoader`, which builds more than data: ``!!python/name``
hands out any function or class of an imported module, and every constructor registered with
``yaml.add_constructor`` (by any library in the process) runs on input from the wire. The
loader here starts from :class:`yaml.SafeLoader` (YAML's own types: null, bool, int, float,
str, ``!!binary`` bytes, timestamps, ``!!set``, ``!!omap``/``!!pairs``, lists and dicts) and adds
exactly what kiwipy 0.9 peers put on the wire besides:

* the ``!!python/...`` tags of plain values that ``yaml.dump`` writes or ``FullLoader`` reads:
  ``tuple`` (every task message is a ``(task, no_reply)`` tuple), ``list``, ``dict``,
  ``none``, ``bool``, ``str``, ``unicode``, ``bytes``, ``int``, ``long``, ``float`` and
  ``complex``, built by PyYAML's own constructors for them;
* ``!uuid`` (what plumpy writes for the :class:`uuid.UUID` process ids it sends), built as a
  :class:`uuid.UUID`.

Anything else (``!!python/object``, ``!!python/object/apply``, ``!!python/object/new``,
``!!python/name``, ``!!python/module``, any other application tag) is refused with a
:class:`yaml.constructor.ConstructorError` before anything is built from it. Its constructors
live on a private subclass, so registering more on :class:`yaml.SafeLoader` or
:class:`yaml.FullLoader` changes nothing here. libyaml parses when it is there.
"""

from __future__ import annotations

import uuid
from typing import Any

import yaml
import yaml.constructor

__all__ = ("PYTHON_TAGS", "UUID_TAG", "load")

#: The ``!!python/...`` tags of plain values accepted (``tag:yaml.org,2002:python/<name>``).
PYTHON_TAGS = (
    "none",
    "bool",
    "str",
    "unicode",
    "bytes",
    "int",
    "long",
    "float",
    "complex",
    "list",
    "tuple",
    "dict",
)
#: plumpy's tag for :class:`uuid.UUID`.
UUID_TAG = "!uuid"

_BASE: type[Any] = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader


def _construct_uuid(loader: Any, node: yaml.Node) -> uuid.UUID:
    return uuid.UUID(str(loader.construct_scalar(node)))


def _make_loader() -> type[Any]:
    loader: type[Any] = type("_KiwipySafeLoader", (_BASE,), {})
    full = yaml.constructor.FullConstructor.yaml_constructors
    for name in PYTHON_TAGS:
        tag = f"tag:yaml.org,2002:python/{name}"
        loader.add_constructor(tag, full[tag])
    loader.add_constructor(UUID_TAG, _construct_uuid)
    return loader


_LOADER = _make_loader()


def load(data: bytes) -> Any:
    """:returns: the plain data *data* holds.

    :raises yaml.YAMLError: if it is not YAML, or holds a tag this loader does not accept.
    """
    return yaml.load(data, Loader=_LOADER)
