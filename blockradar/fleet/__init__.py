"""A fleet: many daemons, one beside each PBX, sharing one set of windows, alerts, silences and notification
log through one Redis (or Valkey) server (issue 16).

* ``wire``: a shared outcome on Redis (the outcome and its classification, checked on the way in).
* ``scripts``: the Lua that must be atomic across daemons (publish once per call, the lease, the log).
* ``client``: the Redis connection from ``fleet:`` (URL or Sentinel, TLS, passwords).
* ``node``: this daemon's membership: the shared stream, the notifier lease, members, silences, and the
  life alone while Redis is away.
* ``told``: the notification log and the outbox's gate: exactly one daemon tells each transition.
"""
