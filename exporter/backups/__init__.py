"""Backups: dump files on the exporter's machine and WAL archiving (pg_stat_archiver)."""
