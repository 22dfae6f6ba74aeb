"""Receiving over RabbitMQ (internal: nothing here is public API).

``_rpc_queues`` and ``_broadcast_queue`` (the two sides of a message subscriber),
``_handlers`` (handling RPCs and broadcasts, replying), ``_identities`` (RPC identifiers
taken elsewhere), ``_task_consumer`` and ``_task_runs`` (consuming and running tasks),
``_incoming`` (a task received and its end), ``_topology`` (a task queue's queues),
``_replies`` and ``_liveness`` (the reply queue, and the watch on an RPC's responder),
``_cancel`` (cancelling RPCs and tasks), ``_acks`` (acks written together), ``_outcome``
(subscriber outcomes as replies).
"""

__all__ = ()
