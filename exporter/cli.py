"""Command line: parse flags, call one function per subcommand. Flags are a contract
(docs/cli.md): add, never rename."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from exporter import __version__
from exporter.config import Config, ConfigError, DatabaseConfig, load_config_offline
from exporter.logs import setup_logging
from exporter.report import EXIT_CANNOT_RUN, exit_code, render_json, render_text
from exporter.schema.model import Schema
from exporter.service import load, serve, web_settings
from exporter.wording import counted

REPO = Path(__file__).resolve().parent.parent
# The shipped config: in a checkout, or where the image puts it (Dockerfile).
SHIPPED_CONFIGS = (REPO / "config" / "venzory.yaml", Path("/etc/venzory-db-exporter/venzory.yaml"))


def default_config() -> str:
    """--config's default: the first shipped config that exists (else the checkout's path,
    so the error names the file that was looked for)."""
    return str(next((p for p in SHIPPED_CONFIGS if p.is_file()), SHIPPED_CONFIGS[0]))


def cmd_run(args: argparse.Namespace) -> int:
    return serve(args.config, listen=args.listen, web_config=args.web_config)


def cmd_verify(args: argparse.Namespace) -> int:
    from exporter.poll import Poller

    config = load(args.config)
    setup_logging(config.exporter.log_format, "error")
    results = []
    for database in config.databases:
        if not args.json:
            print(f"{database.name}: {database.migrations.describe_off()}")
        with Poller(config, database) as poller:
            results.append(poller.poll(full_scan=args.full_scan))
    if args.json:
        print(render_json(results, allow_pending=args.allow_pending))
    else:
        print(render_text(results, {d.name: d.dsn for d in config.databases}, allow_pending=args.allow_pending))
    return exit_code(results, allow_pending=args.allow_pending)


def _database_with_folder(config: Config, args: argparse.Namespace,
                          command: str) -> tuple[DatabaseConfig, Path, str] | None:
    """The database `--database` names (default: the first) with its migrations folder and
    shadow server; None, with the reason on stderr, when it has no such pair."""
    if args.database:
        database = next((d for d in config.databases if d.name == args.database), None)
    else:
        database = config.databases[0]
    if database is None:
        print(f"{command}: no database named {args.database!r} in {args.config}", file=sys.stderr)
        return None
    folder, shadow_dsn = database.migrations.dir, database.migrations.shadow_dsn
    if folder is None or not shadow_dsn:
        print(f"{command}: database {database.name} needs migrations.dir and migrations.shadow_dsn "
              "(PRISMA_MIGRATIONS_DIR and SHADOW_DATABASE_URL in the shipped config)", file=sys.stderr)
        return None
    return database, folder, shadow_dsn


def cmd_snapshot(args: argparse.Namespace) -> int:
    """Replay a database's migrations folder on its shadow server and write the expected
    schema to a file, for exporters that may not create databases (docs/migrations.md)."""
    from exporter.migrations.shadow import ShadowError, expected_schema, folder_key, read_scripts, write_snapshot

    config = load(args.config)
    found = _database_with_folder(config, args, "snapshot")
    if found is None:
        return EXIT_CANNOT_RUN
    database, folder, shadow_dsn = found
    try:
        scripts = read_scripts(folder)
        schema = expected_schema(folder, shadow_dsn, shadow_database=database.migrations.shadow_database)
    except (OSError, ShadowError) as e:
        print(f"snapshot: {e}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    meta = {"folder_key": folder_key(scripts), "migrations": [name for name, _ in scripts],
            "exporter_version": __version__}
    write_snapshot(schema, Path(args.out), meta)
    print(f"snapshot: {counted(len(schema.tables), 'table')}, {counted(len(schema.constraints), 'constraint')}, "
          f"{counted(len(schema.indexes), 'index', 'indexes')} from {counted(len(scripts), 'migration')} -> {args.out}")
    return 0


def cmd_init_config(args: argparse.Namespace) -> int:
    """Write a config for a database and its migrations folder, from a template config
    (its first database, or --database): docs/expectations.md."""
    import psycopg

    from exporter import initconfig
    from exporter.migrations.shadow import ShadowError, expected_steps
    from exporter.schema.catalog import introspect

    config = load(args.config)
    found = _database_with_folder(config, args, "init-config")
    if found is None:
        return EXIT_CANNOT_RUN
    database, folder, shadow_dsn = found
    try:
        steps = expected_steps(folder, shadow_dsn, shadow_database=database.migrations.shadow_database)
        with psycopg.connect(database.dsn, connect_timeout=int(database.connect_timeout)) as conn:
            conn.read_only = True
            live = introspect(conn, database.db_schema)
    except (OSError, ShadowError, psycopg.Error) as e:
        print(f"init-config: {e}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    text = initconfig.render(Path(args.config).read_text(encoding="utf-8"), config, steps, live,
                             f"database {database.name} and {folder}")
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"init-config: wrote {args.out}", file=sys.stderr)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    # Offline: reads no database, and a required variable that is unset here (DATABASE_URL
    # on a laptop or in CI) is reported instead of failing the whole file.
    config, unset = load_config_offline(args.config)
    web = web_settings(args.web_config, config)
    print(
        f"{args.config}: ok ({counted(len(config.databases), 'database')}, {counted(len(config.checks), 'check')}, "
        f"{counted(len(config.constraints), 'expected constraint')})"
    )
    for variable in unset:
        print(f"  not checked: {variable.path} - ${{{variable.name}}} is not set here "
              f"(`run` and `verify` need it)")
    print("  not checked: the databases themselves (connection, role, schema) - `verify` reads them")
    if web is not None:
        print(f"{web.file}: ok (TLS {'on' if web.tls else 'off'}, basic auth {'on' if web.users else 'off'})")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    """Classify a log file or stdin once and print the counts (debugging, CI)."""
    import json

    from exporter.events import KnownNames, ingest

    config = load(args.config)
    known = KnownNames.from_config(config)
    # Offline, the expected schema can only come from files: schema.prisma or a snapshot.
    # Their constraint names (foreign keys, every unique) become known label values too.
    for database in config.databases:
        for path, read in ((database.migrations.schema_prisma, _schema_from_prisma),
                           (database.migrations.snapshot, _schema_from_snapshot)):
            if path is not None:
                try:
                    known = known.with_schema(read(path))
                except (OSError, ValueError, RuntimeError) as e:  # unreadable, unparseable, bad snapshot
                    print(f"ingest: {path}: not used for constraint names: {e}", file=sys.stderr)
    try:
        stream = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")
    except OSError as e:
        print(f"ingest: {args.file}: {e.strerror}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    with stream:
        summary = ingest(stream, known, max_line_bytes=config.events.max_line_bytes)
    print(json.dumps(summary.as_dict(), indent=2) if args.json else summary)
    return 0


def _schema_from_prisma(path: Path) -> Schema:
    from exporter.schema.prisma import parse_prisma_schema, to_schema

    return to_schema(parse_prisma_schema(path.read_text(encoding="utf-8")))


def _schema_from_snapshot(path: Path) -> Schema:
    from exporter.migrations.shadow import load_snapshot

    return load_snapshot(path)


def cmd_demo(args: argparse.Namespace) -> int:
    from exporter.demo import run_demo

    return run_demo(args.config, args.listen)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="venzory-db-exporter",
        description="Prometheus exporter and CI gate for the integrity of the Venzory PostgreSQL database.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="FILE", default=default_config(),
                       help="YAML config file (default: the shipped config, %(default)s)")

    run = sub.add_parser("run", help="run the exporter daemon")
    with_config(run)
    run.add_argument("--listen", metavar="HOST:PORT", help="listen address (default: exporter.listen, 0.0.0.0:19187)")
    run.add_argument("--web.config.file", "--web-config", dest="web_config", metavar="FILE",
                     help="TLS, basic auth and headers for every endpoint, in exporter-toolkit's format "
                          "(default: exporter.web_config; docs/security.md)")
    run.set_defaults(func=cmd_run)

    verify = sub.add_parser("verify", help="run every check once and exit (0 healthy, 1 problems, 2 cannot run)")
    with_config(verify)
    verify.add_argument("--json", action="store_true", help="print one JSON object (docs/verify-json.md)")
    verify.add_argument("--full-scan", action="store_true", help="read every table, even where a constraint guards it")
    verify.add_argument("--allow-pending", action="store_true", help="pending migrations are not a failure")
    verify.set_defaults(func=cmd_verify)

    check = sub.add_parser("check-config", help="validate a config file and exit (0 valid, 2 invalid)")
    with_config(check)
    check.add_argument("--web.config.file", "--web-config", dest="web_config", metavar="FILE",
                       help="validate this web config too (default: exporter.web_config)")
    check.set_defaults(func=cmd_check_config)

    snapshot = sub.add_parser("snapshot", help="write the expected schema of the migrations folder to a JSON file")
    with_config(snapshot)
    snapshot.add_argument("--out", metavar="FILE.json", required=True,
                          help="where to write the expected schema (set migrations.snapshot to it)")
    snapshot.add_argument("--database", metavar="NAME", help="which configured database (default: the first)")
    snapshot.set_defaults(func=cmd_snapshot)

    init = sub.add_parser("init-config", help="write a config for a database and its migrations folder "
                                              "(the template's runbook entries under today's names)")
    with_config(init)
    init.add_argument("--out", metavar="FILE|-", default="-", help="where to write it (default: stdout)")
    init.add_argument("--database", metavar="NAME", help="which configured database (default: the first)")
    init.set_defaults(func=cmd_init_config)

    ingest = sub.add_parser("ingest", help="classify Prisma error events of a log file (or - for stdin) once")
    with_config(ingest)
    ingest.add_argument("file", nargs="?", default="-", metavar="FILE|-",
                        help="a JSON-lines log file of the app, or - for stdin (default: -)")
    ingest.add_argument("--json", action="store_true", help="print the counts as JSON")
    ingest.set_defaults(func=cmd_ingest)

    demo = sub.add_parser("demo", help="start a throwaway PostgreSQL with sample problems and run the exporter on it")
    with_config(demo)
    demo.add_argument("--listen", metavar="HOST:PORT", default="127.0.0.1:19187",
                      help="listen address of the demo's exporter (default: %(default)s, this machine only)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except KeyboardInterrupt:
        return 130
