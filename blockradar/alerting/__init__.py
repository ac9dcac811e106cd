"""Alerting: verdicts -> notifications. The alert lifecycle (``lifecycle``), silences, the daemon's
own health alerts (``selfhealth``), the durable outbox (``outbox``) and the notifiers."""
