"""Everything HTTP: the server and its bounds (server.py, limits.py), the paths
(routes.py), basic auth and the web config's rate limit and headers (auth.py,
ratelimit.py), and POST /events (events.py). The web config itself is validated in
exporter.config.web."""

from exporter.http.routes import make_app, metrics_app
from exporter.http.server import HttpServer

__all__ = ["HttpServer", "make_app", "metrics_app"]
