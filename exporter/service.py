"""Starting the long-running exporter, shared by `run` and `demo`: the config (its
secrets registered for redaction first), the web config, logging, Sentry, then the
daemon until SIGTERM/SIGINT (SIGHUP reloads the same file with the same environment)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING
from collections.abc import Mapping
from urllib.parse import urlsplit

from exporter.config import Config, load_config
from exporter.config.dsn import dsn_secrets
from exporter.logs import register_secrets, setup_logging, setup_sentry
from exporter.report import EXIT_CANNOT_RUN

if TYPE_CHECKING:
    from exporter.config.web import WebSettings

log = logging.getLogger("exporter")


def load(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """The config file (${VAR} from `env`, default the process environment), its secrets
    registered for redaction before anything can log them."""
    config = load_config(path, None if env is None else dict(env))
    register_secrets(secrets_of(config))
    return config


def secrets_of(config: Config) -> list[str]:
    """Every secret of a config, to be redacted from logs, Sentry events and verify's
    output: DSN passwords (as written in a URL too), the events token, the Sentry key."""
    secrets: list[str | None] = []
    for database in config.databases:
        for dsn in (database.dsn, database.migrations.shadow_dsn):
            secrets += dsn_secrets(dsn)
    secrets.append(config.events.http.token)
    if config.exporter.sentry_dsn:
        parts = urlsplit(config.exporter.sentry_dsn)
        secrets += [parts.username, parts.password]
    return [s for s in secrets if s]


def web_settings(flag: str | None, config: Config) -> WebSettings | None:
    """The web config of `--web.config.file`, else of exporter.web_config; None: plain
    HTTP without authentication."""
    from exporter.config.web import load_web_config  # TLS and bcrypt: only when serving

    path = flag or config.exporter.web_config
    return load_web_config(path) if path else None


def serve(config_path: str | Path, *, listen: str | None = None, web_config: str | None = None,
          env: Mapping[str, str] | None = None) -> int:
    """Run the exporter until a signal stops it; 0 after a clean stop."""
    from exporter.daemon import Daemon

    config = load(config_path, env)
    web = web_settings(web_config, config)  # validated before anything starts: exit 2 when invalid
    setup_logging(config.exporter.log_format, config.exporter.log_level)
    setup_sentry(config.exporter.sentry_dsn)
    if web is not None:
        _log_web(web)
    try:
        daemon = Daemon(config, listen, load=lambda: load(config_path, env), web=web)
    except OSError as e:  # the port is in use, or not ours to take
        log.error("%s", e.strerror or e)
        return EXIT_CANNOT_RUN
    daemon.run_forever()
    return 0


def _log_web(web: WebSettings) -> None:
    what = [name for name, on in (("TLS", web.tls), ("basic auth", web.users), ("rate limit", web.rate_limit)) if on]
    log.info("web config %s: %s", web.file, ", ".join(what) or "nothing to apply")
    for note in web.notes:
        log.warning("web config %s: %s", web.file, note)
    if web.users and not web.tls:
        log.warning("web config %s: basic auth without TLS sends passwords in clear text: "
                    "add tls_server_config", web.file)
