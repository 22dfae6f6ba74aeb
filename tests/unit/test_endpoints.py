"""Several endpoints in one connection URL, or a list of URLs (docs/cluster.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from yarl import URL

import kiwipy
from kiwipy.rmq._options import endpoint_urls
from kiwipy.rmq.connection import _connecting
from kiwipy.rmq.connection._endpoints import Endpoints, EndpointsUnreachable

PW = "s3cret"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("amqp://h1/", ["amqp://h1/"]),
        (
            f"amqp://u:{PW}@host1:5672,host2:5673,host3:5674/vhost",
            [
                f"amqp://u:{PW}@host1:5672/vhost",
                f"amqp://u:{PW}@host2:5673/vhost",
                f"amqp://u:{PW}@host3:5674/vhost",
            ],
        ),
        (  # the query is shared by every endpoint
            "amqps://h1,h2:5000/?heartbeat=30&cafile=/ca.pem",
            [
                "amqps://h1/?heartbeat=30&cafile=/ca.pem",
                "amqps://h2:5000/?heartbeat=30&cafile=/ca.pem",
            ],
        ),
        (
            "amqp://u:p@[::1]:5701, 127.0.0.1:5702",
            ["amqp://u:p@[::1]:5701", "amqp://u:p@127.0.0.1:5702"],
        ),
        (["amqp://h1:1/", "amqp://h2:2/"], ["amqp://h1:1/", "amqp://h2:2/"]),
        (["amqp://h1:1", "amqp://h2:2,h3:3"], ["amqp://h1:1", "amqp://h2:2", "amqp://h3:3"]),
        ({"url": "amqp://a,b/"}, ["amqp://a/", "amqp://b/"]),
        ({"url": ["amqp://a/", "amqp://b/"]}, ["amqp://a/", "amqp://b/"]),
        ({"host": "h"}, []),
        (None, []),
    ],
)
def test_endpoint_urls(params: Any, expected: list[str]) -> None:
    assert endpoint_urls(params) == expected


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (f"amqp://u:{PW}@h1:x,h2/", "port can't be converted to integer"),
        ("amqp://h1,,h2/", "names no host"),
        ("amqp://h1:70000,h2/", "out of range"),
        ([], "empty list"),
        ([f"amqp://u:{PW}@h1/", "amqp://u:other@h2/"], "differ in more than host and port"),
        (["amqp://h1/a", "amqp://h2/b"], "virtual host"),
        (["amqp://h1/?heartbeat=5", "amqp://h2/"], "URL parameters"),
        (["amqp://h1/", "amqps://h2/"], "scheme"),
        (["amqp://h1/", 5], "must be a string"),
    ],
)
def test_bad_endpoints(params: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        endpoint_urls(params)
    assert PW not in str(info.value)


def test_connect_refuses_bad_endpoints_before_connecting() -> None:
    with pytest.raises(ValueError, match="port can't be converted"):
        kiwipy.connect("amqp://guest:guest@127.0.0.1:1,127.0.0.1:x/")
    with pytest.raises(ValueError, match="amqp://"):
        kiwipy.connect(["memory://x"])


def _opener(up: set[int], tried: list[int]) -> Any:
    async def create(target: URL) -> URL:
        assert target.port is not None
        tried.append(target.port)
        if target.port not in up:
            raise ConnectionRefusedError(111, "refused")
        return target

    return create


URLS = ["amqp://u:p@h:1/v", "amqp://u:p@h:2/v", "amqp://u:p@h:3/v"]


def test_each_attempt_starts_after_the_last_endpoint_used() -> None:
    async def main() -> None:
        endpoints = Endpoints(URLS, shuffle=False, attempt_timeout=3)
        base = URL("amqp://u:p@h:1/v?heartbeat=5")
        tried: list[int] = []
        got = await endpoints.open(base, _opener({1, 2, 3}, tried))
        assert (got.port, got.user, got.path, got.query_string) == (1, "u", "/v", "heartbeat=5")
        # node 1 lost: the next attempt goes to node 2 first, then 3
        tried.clear()
        assert (await endpoints.open(base, _opener({3}, tried))).port == 3
        assert tried == [2, 3]
        assert endpoints.current.port == 3
        tried.clear()
        with pytest.raises(EndpointsUnreachable) as info:
            await endpoints.open(base, _opener(set(), tried))
        assert tried == [1, 2, 3]
        assert [url.port for url, _ in info.value.failures] == [1, 2, 3]

    asyncio.run(main())


def test_shuffled_order_spreads_clients() -> None:
    firsts = {Endpoints(URLS, shuffle=True, attempt_timeout=3).current.port for _ in range(60)}
    assert firsts == {1, 2, 3}
    assert {Endpoints(URLS, shuffle=False, attempt_timeout=3).current.port for _ in range(5)} == {1}


def test_an_endpoint_that_hangs_gets_its_share_of_the_attempt() -> None:
    async def main() -> None:
        endpoints = Endpoints(URLS[:2], shuffle=False, attempt_timeout=0.2)

        async def create(target: URL) -> URL:
            if target.port == 1:
                await asyncio.sleep(10)
            return target

        loop = asyncio.get_running_loop()
        began = loop.time()
        assert (await endpoints.open(URL(URLS[0]), create)).port == 2
        assert loop.time() - began < 1

    asyncio.run(main())


def test_the_connect_error_names_every_endpoint_and_no_password() -> None:
    failures = [
        (URL(f"amqp://u:{PW}@h:1/"), ConnectionRefusedError(111, "refused")),
        (URL(f"amqp://u:{PW}@h:2/"), asyncio.TimeoutError()),
    ]
    error = _connecting.connect_error(
        EndpointsUnreachable(failures), URL(f"amqp://u:{PW}@h:1/"), shown=f"amqp://u:{PW}@h:1,h:2/"
    )
    text = str(error)
    assert PW not in text
    assert "h:1: " in text and "h:2: no answer from h:2 in time" in text


def test_the_command_line_takes_several_hosts() -> None:
    from kiwipy.cli._common import CliError, check_url

    check_url("amqp://guest:guest@h1:5701,h2:5702,h3/")
    with pytest.raises(CliError, match="port can't be converted"):
        check_url(f"amqp://guest:{PW}@h1:5701,h2:x/")
