"""The RabbitMQ transport's connection (internal: nothing here is public API).

``_session`` (one aio-pika connection as channels with a purpose, confirmed publishing),
``_session_view`` (what the session's parts see of it), ``_channels`` (the channel of each
purpose and its consumers), ``_recovery`` (restorers, reconnection), ``_watchdog`` (stalls),
``_events`` (connection state changes), ``_aiormq_boundary`` (every reach into aiormq's
internals), ``_amqp`` (error translation, message properties), ``_connecting`` and
``_opening`` (opening a connection, failures in words), ``_endpoints`` (cluster nodes),
``_access`` (the broker's refusals).
"""

__all__ = ()
