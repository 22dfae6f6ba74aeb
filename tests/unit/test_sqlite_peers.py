"""Who a SQLite broker sends broadcasts to (:meth:`kiwipy.sqlite._peers.Peers.current`): it
reads the peer table again only when the file changed, yet a process that has just joined
is included before its ring saying so is read."""

from __future__ import annotations

import pathlib

from kiwipy.sqlite._broker import BrokerSettings, SqliteBroker


def test_a_process_that_just_joined_is_a_current_peer(tmp_path: pathlib.Path) -> None:
    settings = BrokerSettings(str(tmp_path / "peers.db"))
    first = SqliteBroker(settings)
    first.open()
    assert first._pump is not None
    first._pump.stop()  # no ring is read: only current() itself can find a new peer
    try:
        assert first._peers.current() == []  # this thread has looked: nothing changed since
        assert first._peers.current() == []
        second = SqliteBroker(settings)
        second.open()
        try:
            assert first._peers.current() == [second.id]
        finally:
            second.shutdown()
        assert first._peers.current() == []
    finally:
        first.shutdown()
