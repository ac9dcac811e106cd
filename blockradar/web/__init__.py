"""HTTP: what the daemon serves (``server``): ``/metrics``, ``/healthz``, the status page (``pages``,
drawn with ``charts``, read from the store by ``queries``) and its JSON API under ``/api/v1``."""

from blockradar.web.server import HttpServer, StatusSource, build_app

__all__ = ["HttpServer", "StatusSource", "build_app"]
