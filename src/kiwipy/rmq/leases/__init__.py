"""Leases for long tasks over RabbitMQ (internal: nothing here is public API).

``_leases`` (the pure part: headers, names, settings, decisions), ``_lease_tasks`` (a running
task becomes a lease; screening what a worker receives), ``_lease_service`` (one worker's
side: identity, answers, checks) and ``_lease_claims`` (taking a lease over).
"""

__all__ = ()
