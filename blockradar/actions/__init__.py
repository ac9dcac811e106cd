"""Actions: alert transitions -> changes in the dialer (issue 14). ``config`` (the ``actions:`` section),
``guardrails`` (what may be done now: pool share, cooldown, hourly cap, holds), ``planner`` (transitions
and time -> apply / restore / held decisions, the same in the daemon and in ``replay``)."""
