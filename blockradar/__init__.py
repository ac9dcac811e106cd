"""blockradar: watches Asterisk and FreeSWITCH call outcomes and alerts when carriers block calls."""

__version__ = "0.1.0"
