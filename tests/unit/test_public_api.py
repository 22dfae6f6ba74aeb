"""The public surface: kiwipy 0.9's names at their upstream paths (api doc sections 2 and 6),
a literal ``__all__`` everywhere, and one exception tree."""

from __future__ import annotations

import concurrent.futures
import importlib
import inspect
import pkgutil
import subprocess
import sys
from types import ModuleType
from typing import Any, Optional

import pytest

import kiwipy

# Every name kiwipy 0.9 exports from ``kiwipy`` (api doc section 2), and the submodule it
# lives in upstream.
UPSTREAM_PATHS = {
    "RemoteException": "exceptions",
    "DeliveryFailed": "exceptions",
    "TaskRejected": "exceptions",
    "UnroutableError": "exceptions",
    "TimeoutError": "exceptions",
    "DuplicateSubscriberIdentifier": "exceptions",
    "CommunicatorClosed": "exceptions",
    "InvalidStateError": "exceptions",
    "QueueEmpty": "exceptions",
    "Future": "futures",
    "chain": "futures",
    "copy_future": "futures",
    "CancelledError": "futures",
    "capture_exceptions": "futures",
    "wait": "futures",
    "as_completed": "futures",
    "Communicator": "communications",
    "CommunicatorHelper": "communications",
    "EventHelper": "utils",
    "LocalCommunicator": "local",
    "BroadcastFilter": "filters",
    "connect": None,
}

SAME_AS_STDLIB = {
    "TimeoutError": concurrent.futures.TimeoutError,
    "Future": concurrent.futures.Future,
    "CancelledError": concurrent.futures.CancelledError,
    "wait": concurrent.futures.wait,
    "as_completed": concurrent.futures.as_completed,
}


@pytest.mark.parametrize(("name", "module"), UPSTREAM_PATHS.items())
def test_upstream_name(name: str, module: Optional[str]) -> None:
    assert name in kiwipy.__all__
    if module is not None:
        submodule = importlib.import_module(f"kiwipy.{module}")
        assert getattr(submodule, name) is getattr(kiwipy, name)
        assert name in submodule.__all__


@pytest.mark.parametrize(("name", "obj"), SAME_AS_STDLIB.items())
def test_stdlib_objects(name: str, obj: Any) -> None:
    assert getattr(kiwipy, name) is obj


def test_broadcast_filter_surface() -> None:
    """Api doc section 6."""
    filter_ = kiwipy.filters.BroadcastFilter(print, subject="a", sender="b")
    for method in ("add_subject_filter", "add_sender_filter", "is_filtered", "__call__"):
        assert callable(getattr(filter_, method))
    assert filter_.__name__ == "BroadcastFilter"


def test_version() -> None:
    assert isinstance(kiwipy.__version__, str)


def _public_modules() -> list[ModuleType]:
    names = ["kiwipy"] + [
        info.name
        for info in pkgutil.walk_packages(kiwipy.__path__, "kiwipy.")
        if not any(part.startswith("_") for part in info.name.split("."))
    ]
    return [importlib.import_module(name) for name in names]


# kiwipy 0.9's ``kiwipy.rmq.utils`` exports nothing (``__all__ = ()``) although clients import
# helpers from it by name; keeping that empty tuple is part of the compatibility.
EMPTY_ALL_UPSTREAM = {"kiwipy.rmq.utils"}


@pytest.mark.parametrize("module", _public_modules(), ids=lambda m: m.__name__)
def test_all_is_a_complete_tuple(module: ModuleType) -> None:
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, tuple), f"{module.__name__}.__all__ must be a tuple"
    for name in exported:
        assert hasattr(module, name), f"{module.__name__}.__all__ names missing {name}"
    if module.__name__ in EMPTY_ALL_UPSTREAM:
        assert exported == ()
        return
    defined_here = {
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__ == module.__name__
    }
    assert defined_here <= set(exported), f"not in {module.__name__}.__all__"


@pytest.mark.parametrize("name", kiwipy.exceptions.__all__)
def test_one_exception_tree(name: str) -> None:
    exc = getattr(kiwipy.exceptions, name)
    if name == "TimeoutError":
        assert exc is concurrent.futures.TimeoutError
    else:
        assert issubclass(exc, kiwipy.KiwiError)


def test_import_kiwipy_does_not_import_rabbitmq() -> None:
    code = "import kiwipy, sys; print('kiwipy.rmq' in sys.modules, 'aio_pika' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "False"], result.stderr


class LoopCommunicator(kiwipy.Communicator):
    """Shaped like plumpy's: forwards the section 4 interface to another communicator and has
    its own ``loop()``; it must instantiate although ``Communicator`` is an ABC."""

    def __init__(self, communicator: kiwipy.Communicator) -> None:
        self._communicator = communicator

    def loop(self) -> None:
        return None

    def is_closed(self) -> bool:
        return self._communicator.is_closed()

    def close(self) -> None:
        self._communicator.close()

    def add_rpc_subscriber(self, subscriber: Any, identifier: Any = None) -> Any:
        return self._communicator.add_rpc_subscriber(subscriber, identifier)

    def remove_rpc_subscriber(self, identifier: Any) -> None:
        self._communicator.remove_rpc_subscriber(identifier)

    def add_task_subscriber(self, subscriber: Any, identifier: Any = None) -> Any:
        return self._communicator.add_task_subscriber(subscriber, identifier)

    def remove_task_subscriber(self, identifier: Any) -> None:
        self._communicator.remove_task_subscriber(identifier)

    def add_broadcast_subscriber(self, subscriber: Any, identifier: Any = None) -> Any:
        return self._communicator.add_broadcast_subscriber(subscriber, identifier)

    def remove_broadcast_subscriber(self, identifier: Any) -> None:
        self._communicator.remove_broadcast_subscriber(identifier)

    def task_send(self, task: Any, no_reply: bool = False) -> Any:
        return self._communicator.task_send(task, no_reply)

    def rpc_send(self, recipient_id: Any, msg: Any) -> Any:
        return self._communicator.rpc_send(recipient_id, msg)

    def broadcast_send(
        self, body: Any, sender: Any = None, subject: Any = None, correlation_id: Any = None
    ) -> bool:
        return self._communicator.broadcast_send(body, sender, subject, correlation_id)


def test_loop_communicator_subclass() -> None:
    with LoopCommunicator(kiwipy.LocalCommunicator()) as comm:
        comm.add_rpc_subscriber(lambda _c, msg: msg + 1, "pid")
        assert comm.rpc_send("pid", 1).result() == 2
    assert comm.is_closed()


def test_communicator_is_abstract() -> None:
    with pytest.raises(TypeError):
        kiwipy.Communicator()  # type: ignore[abstract]
