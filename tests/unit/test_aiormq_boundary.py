"""Every assumption :mod:`kiwipy.rmq.connection._aiormq_boundary` makes about aiormq, aio-pika and pamqp,
checked against the installed versions without a broker (issue 11 item 11).

The channels here are real aiormq channels on an aiormq connection that never connected: the
broker's frames are put in the channel's frame queue (aiormq's own reader handles them), and
the connection's real writer is run on a fake socket. A failure names the library, its
installed version and the one kiwipy was tested with: that upgrade changed something
``_aiormq_boundary`` relies on, which has to be adapted before the range in
``pyproject.toml`` may admit it.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import tokenize
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import aiormq.abc
import aiormq.connection
import pytest
import tomllib
from aiormq import exceptions as amqp_errors
from packaging.requirements import Requirement
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from yarl import URL

from kiwipy.rmq.connection import _aiormq_boundary as internals
from kiwipy.rmq.connection import _amqp
from kiwipy.rmq.receive import _acks
from kiwipy.rmq.send import _fastpublish
from kiwipy.rmq.send._fastpublish import Outgoing, start
from kiwipy.rmq.send._frames import publish_frames

#: The versions this boundary was written and tested against.
TESTED = {"aiormq": "6.9.4", "aio-pika": "9.6.2", "pamqp": "3.3.0"}
FRAME_MAX = 131072


def broke(library: str, what: str) -> str:
    """The message of a failed assumption: which upgrade broke what."""
    return (
        f"{library} {metadata.version(library)} (kiwipy is tested with {TESTED[library]}) "
        f"broke an assumption of kiwipy/rmq/connection/_aiormq_boundary.py: {what}"
    )


@pytest.fixture
async def connection() -> AsyncIterator[aiormq.Connection]:
    conn = aiormq.Connection("amqp://guest:guest@127.0.0.1:1/")
    conn.connection_tune = spec.Connection.Tune(frame_max=FRAME_MAX)
    conn.server_properties = {"capabilities": {"publisher_confirms": True}}
    yield conn
    await conn.close()


@pytest.fixture
async def channel(connection: aiormq.Connection) -> AsyncIterator[aiormq.Channel]:
    ch = aiormq.Channel(connection, 1, publisher_confirms=True)
    yield ch
    if not ch.closing.done():
        ch.closing.cancel()


async def from_broker(channel: aiormq.Channel, *frames: Any) -> None:
    """Hand *frames* to the channel as aiormq's connection reader would, and let it act."""
    for frame in frames:
        await channel.frames.put((0, frame))
    for _ in range(10):  # the channel's reader task takes them one step at a time
        await asyncio.sleep(0)


class FakeSocket:
    """The ``StreamWriter`` side aiormq's writer uses."""

    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data

    async def drain(self) -> None:
        pass

    def is_closing(self) -> bool:
        return True  # cancelling the writer then sends nothing more


async def run_writer(connection: aiormq.Connection) -> bytes:
    """Run aiormq's own connection writer over what is queued. :returns: the bytes written."""
    socket = FakeSocket()
    connection._Connection__connection_unblocked.set()  # type: ignore[attr-defined]
    writer = asyncio.ensure_future(connection._Connection__writer(socket))  # type: ignore[attr-defined]
    for _ in range(20):
        await asyncio.sleep(0)
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    return bytes(socket.written)


def test_installed_versions_are_in_the_declared_ranges() -> None:
    pyproject = Path(__file__).parents[2] / "pyproject.toml"
    extra = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]["rmq"]
    declared = {Requirement(each).name: Requirement(each) for each in extra}
    for library in TESTED:
        assert library in declared, f"{library} is not declared in the 'rmq' extra"
        installed = metadata.version(library)
        assert declared[library].specifier.contains(installed), (library, installed)
        assert declared[library].specifier.contains(TESTED[library]), (library, TESTED[library])
        next_major = f"{int(TESTED[library].split('.')[0]) + 1}.0.0"
        assert not declared[library].specifier.contains(next_major), (
            f"the 'rmq' extra admits {library} {next_major}, an untested major version"
        )


# -- consumers ---------------------------------------------------------------------------------


async def test_consumer_table_loses_a_consumer_the_broker_cancels(channel: Any) -> None:
    table = internals.consumer_table(channel)
    assert isinstance(table, dict), broke("aiormq", "channel.consumers is no longer a dict")
    removed: list[str] = []
    _amqp.watch_consumers(channel, removed.append)
    internals.consumer_table(channel)["tag-1"] = lambda message: None  # type: ignore[index]
    await from_broker(channel, spec.Basic.Cancel(consumer_tag="tag-1"))
    assert removed == ["tag-1"], broke(
        "aiormq", "a broker's basic.cancel no longer pops channel.consumers[tag]"
    )


async def test_consumer_table_loses_a_consumer_we_cancel(channel: Any) -> None:
    removed: list[str] = []
    _amqp.watch_consumers(channel, removed.append)
    internals.consumer_table(channel)["tag-2"] = lambda message: None  # type: ignore[index]
    await from_broker(channel, spec.Basic.CancelOk(consumer_tag="tag-2"))
    assert removed == ["tag-2"], broke("aiormq", "basic.cancel-ok no longer pops the consumer")


# -- confirms and direct writes ------------------------------------------------------------


async def test_direct_writes_are_allowed_only_when_nothing_else_writes(
    connection: aiormq.Connection, channel: Any
) -> None:
    assert internals.can_write_directly(channel), broke(
        "aiormq", "a channel lacks publisher_confirms/lock/write_queue/delivery_tag/confirmations"
    )
    async with channel.lock:
        assert not internals.can_write_directly(channel), broke(
            "aiormq", "basic_publish no longer holds channel.lock"
        )
    assert channel.write_queue is connection.write_queue, broke(
        "aiormq", "channel.write_queue is not the connection's writer queue"
    )
    while not connection.write_queue.full():
        connection.write_queue.put_nowait(aiormq.abc.ChannelFrame(b"", False))
    assert internals.write_queue_full(channel)
    assert not _fastpublish.can_start(channel)  # no room, and no item of its own to join
    unconfirmed = aiormq.Channel(connection, 2, publisher_confirms=False)
    assert not internals.can_write_directly(unconfirmed)
    unconfirmed.closing.cancel()


async def test_a_direct_publish_is_what_basic_publish_writes(
    connection: aiormq.Connection, channel: Any
) -> None:
    body = b"x" * (2 * FRAME_MAX)  # split into body frames
    props = _amqp.properties(correlation_id="c", reply_to="r")
    props.message_id = "m1"
    theirs = asyncio.ensure_future(
        channel.basic_publish(body, exchange="e", routing_key="k", properties=props)
    )
    await asyncio.sleep(0)
    queued = connection.write_queue.get_nowait()
    assert isinstance(queued.drain_future, asyncio.Future)
    queued.drain()
    ours_props = _amqp.properties(correlation_id="c", reply_to="r")
    ours_props.message_id = "m2"
    (ours,), _ = start(channel, [Outgoing("e", "k", body, ours_props, False)])
    mine = connection.write_queue.get_nowait()
    expected = b"".join(
        publish_frames(1, "e", "k", False, props, body, internals.max_content_size(channel))
    )
    assert queued.payload == expected, broke("aiormq", "basic_publish writes other frames")
    assert mine.payload == expected.replace(b"m1", b"m2")
    assert len(internals.pending_confirms(channel)) == 2
    await from_broker(
        channel, spec.Basic.Ack(delivery_tag=1), spec.Basic.Nack(delivery_tag=2, requeue=False)
    )
    assert isinstance(await asyncio.wait_for(theirs, 1), spec.Basic.Ack), broke(
        "aiormq", "basic_publish no longer numbers its publishes 1, 2, ... per channel"
    )
    with pytest.raises(amqp_errors.DeliveryError):
        await asyncio.wait_for(ours, 1)
    assert internals.pending_confirms(channel) == []
    assert channel.message_id_delivery_tag == {}, broke(
        "aiormq", "message_id_delivery_tag is no longer emptied on confirms"
    )


async def test_direct_publishes_join_one_write_and_keep_the_broker_s_numbering(
    connection: aiormq.Connection, channel: Any
) -> None:
    def outgoing(message_id: str) -> Outgoing:
        props = _amqp.properties(correlation_id=message_id)
        props.message_id = message_id
        return Outgoing("e", "k", message_id.encode(), props, False)

    first = _fastpublish.publish(channel, outgoing("m1"))
    second = _fastpublish.publish(channel, outgoing("m2"))
    assert connection.write_queue.qsize() == 1  # one item for both
    async with channel.lock:  # a basic_publish half-way: the next one must wait its turn
        third = asyncio.ensure_future(_fastpublish.publish(channel, outgoing("m3")))
    fourth = _fastpublish.publish(channel, outgoing("m4"))  # numbered before m3 takes the lock
    assert connection.write_queue.qsize() == 2  # m4 did not join m1's item: m3 sealed it
    written = await run_writer(connection)
    order = [written.index(m) for m in (b"m1", b"m2", b"m4", b"m3")]
    assert order == sorted(order), "frames went out in another order than they were numbered"
    await from_broker(channel, *(spec.Basic.Ack(delivery_tag=tag) for tag in (1, 2, 4)))
    await from_broker(channel, spec.Basic.Nack(delivery_tag=3, requeue=False))
    for confirm in (first, second, third):
        assert isinstance(await asyncio.wait_for(confirm, 1), spec.Basic.Ack)
    with pytest.raises(amqp_errors.DeliveryError):  # tag 3 is m4's
        await asyncio.wait_for(fourth, 1)


async def test_a_returned_direct_publish_fails_with_publish_error(channel: Any) -> None:
    confirm = internals.register_confirm(channel, "returned-id")
    returned = spec.Basic.Properties(message_id="returned-id")
    header = ContentHeader(body_size=1, properties=returned)
    await from_broker(
        channel,
        spec.Basic.Return(reply_code=312, reply_text="NO_ROUTE", exchange="e", routing_key="k"),
        header,
        ContentBody(b"x"),
        spec.Basic.Ack(delivery_tag=1),
    )
    with pytest.raises(amqp_errors.PublishError):
        await asyncio.wait_for(confirm, 1)


async def test_closing_the_channel_fails_its_pending_confirms(channel: Any) -> None:
    confirm = internals.register_confirm(channel, "pending-id")
    await from_broker(
        channel, spec.Channel.Close(reply_code=404, reply_text="NOT_FOUND - no exchange 'x'")
    )
    await asyncio.wait({confirm}, timeout=1)
    assert confirm.done(), broke("aiormq", "closing a channel leaves its confirms pending")
    assert internals.closed_by_broker(confirm.exception()), broke(
        "aiormq", "a broker's channel.close no longer fails confirms with its reply code"
    )
    assert not internals.closed_by_broker(amqp_errors.ChannelClosed(None, None))


async def test_the_writer_takes_frames_and_ack_batches(
    connection: aiormq.Connection, channel: Any
) -> None:
    drained = internals.join_frames(channel, b"frames", drain=True)
    acked = _acks.ack(channel, 7)  # joins the item still in the queue
    assert connection.write_queue.qsize() == 1
    written = await run_writer(connection)
    assert written == b"frames" + _acks.ack_frame(1, 7), broke(
        "aiormq", "the connection writer no longer writes each queued item's payload"
    )
    assert drained.done() and acked.done(), broke(
        "aiormq", "the connection writer no longer calls drain() on items that should_drain"
    )


# -- connections and sockets ---------------------------------------------------------------


async def test_aio_pika_connection_attributes() -> None:
    connection = internals.RobustConnection(URL("amqp://127.0.0.1:1/?reconnect_interval=0.3"))
    assert internals.event_loop(connection) is asyncio.get_running_loop(), broke(
        "aio-pika", "connection.loop is not the connection's event loop"
    )
    assert internals.reconnect_interval(connection) == 0.3, broke(
        "aio-pika", "RobustConnection.reconnect_interval is gone"
    )
    internals.set_reconnect_interval(connection, 0.05)
    assert internals.reconnect_interval(connection) == 0.05
    source = inspect.getsource(aio_pika.RobustConnection)
    assert re.search(r"sleep\(\s*self\.reconnect_interval", source), broke(
        "aio-pika", "reconnect_interval is no longer read before each reconnection attempt"
    )
    assert internals.reconnect_interval(object()) is None


def test_aiormq_transport_factories() -> None:
    for name in ("TCPTransportFactory", "TLSTransportFactory"):
        factory = getattr(aiormq.connection, name, None)
        assert isinstance(factory, type) and issubclass(factory, aiormq.TransportFactory), broke(
            "aiormq", f"aiormq.connection.{name} is gone"
        )
    parameters = inspect.signature(aiormq.Connection).parameters
    assert "transport_factory" in parameters, broke(
        "aiormq", "Connection() takes no transport_factory"
    )
    hook = getattr(aio_pika.RobustConnection, "_on_connection_close", None)
    assert hook is not None and inspect.iscoroutinefunction(hook), broke(
        "aio-pika", "RobustConnection._on_connection_close is gone"
    )
    assert list(inspect.signature(hook).parameters) == ["self", "closing"], broke(
        "aio-pika", "RobustConnection._on_connection_close takes other parameters"
    )


async def test_a_failed_attempt_goes_through_our_transports_and_leaks_no_socket() -> None:
    """aio-pika hands ``transport_factory`` to aiormq, which opens its socket with it; the
    broker hanging up during the handshake leaves no socket open (the sweep closes it)."""
    accepted: list[asyncio.StreamWriter] = []

    async def hang_up(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = internals.RobustConnection(URL(f"amqp://guest:guest@127.0.0.1:{port}/"))
    try:
        with pytest.raises(Exception):  # noqa: B017 - whatever aiormq raises for a hang-up
            await connection.connect(timeout=5)
        assert accepted, broke("aio-pika", "connect() no longer reaches the broker")
        assert connection.kwargs["transport_factory"]._opened == {}, broke(
            "aio-pika", "kwargs['transport_factory'] is no longer passed to aiormq.connect"
        )
    finally:
        await connection.close()
        server.close()
        await server.wait_closed()


async def test_abort_sockets_resets_the_live_socket() -> None:
    peer_gone = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()  # until our side resets
        except ConnectionError:
            pass
        finally:
            writer.close()
            peer_gone.set()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    url = URL(f"amqp://127.0.0.1:{server.sockets[0].getsockname()[1]}/")
    connection = internals.RobustConnection(url)
    try:
        _reader, writer = await connection.kwargs["transport_factory"].create(url)
        assert internals.abort_sockets(connection)
        assert writer.transport.is_closing()
        await asyncio.wait_for(peer_gone.wait(), 5)  # the broker's side sees it end
        assert not internals.abort_sockets(connection)  # nothing open any more
        assert not internals.abort_sockets(object())  # not ours: sockets unknown
    finally:
        await connection.close()
        server.close()
        await server.wait_closed()


# -- nothing else reaches in ---------------------------------------------------------------

#: What only the boundary may touch (in code, not in docstrings or comments).
_INTERNALS = re.compile(
    r"(?<!internals)(?<!_aiormq_boundary)\.(consumers|confirmations|write_queue"
    r"|message_id_delivery_tag|max_content_size|reconnect_interval|publisher_confirms"
    r"|_writer_task|_reader_task|_transport_factory|_on_connection_close|f_locals|cr_frame)\b"
    r"|\bdelivery_tag\s*\+=|\baiormq\.connection\b|\b_Connection__"
)


#: The same, reached by name.
_BY_NAME = re.compile(
    r"\b(getattr|hasattr|setattr)\([^,()]+,\s*[\"'](consumers|confirmations|write_queue"
    r"|message_id_delivery_tag|max_content_size|reconnect_interval|publisher_confirms|_(?!_)\w+)[\"']"
)


def _code_of(path: Path) -> str:
    """The source of *path* without its strings and comments."""
    with path.open("rb") as source:
        tokens = [
            token
            for token in tokenize.tokenize(source.readline)
            if token.type not in (tokenize.STRING, tokenize.COMMENT)
        ]
    return tokenize.untokenize(tokens).decode()


def test_no_module_but_the_boundary_touches_aiormq_internals() -> None:
    package = Path(internals.__file__).parents[2]
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "_aiormq_boundary.py" or path.parent.name in ("memory", "sqlite", "core"):
            continue  # the embedded transports have consumers of their own
        if path.relative_to(package).parts[0] != "rmq" and "aiormq" not in path.read_text():
            continue  # neither the RabbitMQ transport nor a user of aiormq (the CLI's SQLite view)
        offenders += [
            f"{path.relative_to(package)}: {match.group(0)}"
            for match in _INTERNALS.finditer(_code_of(path))
        ]
        offenders += [
            f"{path.relative_to(package)}: {match.group(0)}"
            for match in _BY_NAME.finditer(path.read_text())
        ]
    assert offenders == [], "use kiwipy/rmq/connection/_aiormq_boundary.py for these: " + str(
        offenders
    )
