"""Sending over RabbitMQ (internal: nothing here is public API).

``_outgoing`` (what each send puts on the wire), ``_publishing`` (the retry policy of a
confirmed publish), ``_fastpublish`` and ``_frames`` (publishing without a coroutine per
message), ``_batch`` (the ``*_send_many`` batches), ``_lane`` (the thread facade's quick
lane), ``_offload`` (encoding large messages off the loop).
"""

__all__ = ()
