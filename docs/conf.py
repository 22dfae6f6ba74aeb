"""Sphinx configuration of kiwipy's documentation (Markdown pages through myst-parser).

Build with ``scripts/docs``: warnings are errors, and every cross-reference must resolve
(``nitpicky``). The build is offline, so there is no intersphinx; references to the standard
library and to aio-pika are listed in ``nitpick_ignore_regex`` instead.
"""

from __future__ import annotations

import pydoc
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import kiwipy  # noqa: E402

project = "kiwipy"
author = "kiwipy developers"
copyright = "2026, kiwipy developers"
release = kiwipy.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# performance-table.md is included by performance.md, not a page of its own.
exclude_patterns = ["_build", "performance-table.md", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"kiwipy {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

nitpicky = True
# Offline build: names from outside kiwipy cannot be linked; everything of kiwipy's must be.
nitpick_ignore_regex = [
    (r"py:.*", r"(typing|typing_extensions|collections\.abc|concurrent\.futures|asyncio|abc)\..*"),
    (r"py:.*", r"(contextlib|re|argparse|types|logging|threading|json|yaml|pathlib|sqlite3)\..*"),
    (r"py:.*", r"(aio_pika|aiormq|pamqp|yarl|msgpack)(\..*)?"),
    (r"py:class", r"(Any|Callable|Optional|Union|Awaitable|Coroutine|Iterator|AsyncIterator)"),
    (r"py:class", r"(Future|T|TypeVar|Pattern|Exception|BaseException|TimeoutError|ValueError)"),
    (r"py:class", r"(TypeError|RuntimeError|KeyError|NoneType|ellipsis|bytes|str|int|float)"),
    (r"py:class", r"(bool|dict|list|tuple|set|type|object|memoryview|bytearray)"),
    (r"py:class", r"(AbstractAsyncContextManager|AbstractContextManager|Unpack|Self)"),
    (
        r"py:class",
        r"(EncodeFn|DecodeFn|_Matcher|_Bridge|kiwipy(\.memory|\.cli|\.sqlite|\.core)?\._.*)",
    ),
    (r"py:class", r"_[a-z_]+\..*"),  # a private module's class named in a signature
    (r"py:(exc|class)", r"(InvalidStateError|CancelledError)"),
    (r"py:class", r"_asyncio\..*"),
    # kiwipy's aliases of standard-library objects (kiwipy.TimeoutError is the builtin, ...)
    (r"py:.*", r"kiwipy(\.exceptions|\.futures)?\.(TimeoutError|Future|CancelledError)"),
    (r"py:.*", r"kiwipy(\.futures)?\.(wait|as_completed)"),
    # private helpers named in docstrings
    (r"py:(meth|func|attr)", r"_\w+"),
]

# Names of kiwipy's private modules that public signatures mention; they are not documented
# on purpose, so a reference to them is shown as plain text.
_PRIVATE = re.compile(
    r"(kiwipy(\.rmq(\.connection|\.send|\.receive|\.leases)?|\.memory|\.cli)?\._\w+(\..*)?|_\w+|RmqOptions|MemoryOptions|ConnectionParams|ConnectionFactory"
    r"|ReplyQueue|TaskResponder|TaskHost|Delivery|Outcome|protocol\.\w+|kiwipy\.rmq\.protocol\.\w+)"
)


def _documented(env: Any) -> dict[int, str]:
    """:returns: ``id(object) -> documented name`` for every Python object in the docs."""
    cache: dict[int, str] | None = getattr(env, "_kiwipy_documented", None)
    if cache is None:
        cache = {}
        for name in env.get_domain("py").objects:
            try:
                obj = pydoc.locate(name)
            except Exception:
                continue
            if obj is not None and not isinstance(obj, (str, int, float, bool)):
                cache.setdefault(id(obj), name)
        env._kiwipy_documented = cache
    return cache


def _candidates(node: Any, target: str) -> list[str]:
    """Where *target* may be documented: itself, its base classes' members for a method
    named in a class's docstring, and the other public paths of the same object."""
    names = [target]
    module, cls = node.get("py:module"), node.get("py:class")
    if module and cls and "." not in target:
        owner = pydoc.locate(f"{module}.{cls}")
        for base in getattr(owner, "__mro__", ()):
            names.append(f"{base.__module__}.{base.__qualname__}.{target}")
    for name in list(names):
        for prefix in ([module] if module else []) + ["kiwipy"]:
            names.append(f"{prefix}.{name}")
    return names


def _resolve_reexport(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve references that autodoc cannot: ``kiwipy.RemoteException`` (the path users
    import) to where it is documented (``kiwipy.exceptions.RemoteException``), a method
    named in a subclass to the interface that documents it, ``Communicator.close`` from
    another module. References to private helpers become plain text."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    domain = env.get_domain("py")
    documented = _documented(env)
    for name in _candidates(node, target):
        try:
            obj = pydoc.locate(name)
        except Exception:
            continue
        found = documented.get(id(obj)) if obj is not None else None
        if found and found != target:
            return domain.resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], found, node, contnode
            )
    matches = domain.find_obj(env, None, None, target, None, 1) if "." in target else []
    if len(matches) == 1:
        return domain.resolve_xref(
            env, node["refdoc"], app.builder, node["reftype"], matches[0][0], node, contnode
        )
    if _PRIVATE.fullmatch(target):
        return contnode
    return None


def _indent_leading_field(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Docstrings here may open with a field (``:returns: ...``) running over several lines;
    indent its continuation lines so that reST reads them as one field."""
    if not lines or not lines[0].startswith(":"):
        return
    for index in range(1, len(lines)):
        if not lines[index].strip() or lines[index].startswith(":"):
            break
        lines[index] = "   " + lines[index]


def setup(app: Any) -> None:
    app.connect("missing-reference", _resolve_reexport)
    app.connect("autodoc-process-docstring", _indent_leading_field)
