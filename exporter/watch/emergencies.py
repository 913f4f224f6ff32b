"""The runbook's emergencies ("If you accidentally run a dangerous command"), seen between
two polls from what the poll already has and one statistics view - no table is read:

- the migration history rewritten (`prisma migrate reset`: the schema dropped and every
  migration applied again): the `_prisma_migrations` table dropped or recreated (its relid
  in pg_stat_user_tables), or an applied migration's row gone or finished at another time
  than one poll ago (from the history the migrations monitor reads anyway);
- a table emptied or mass-deleted (`migrate reset`, `db push --accept-data-loss`, a DELETE
  without WHERE): its live-row estimate in pg_stat_user_tables fell by more than
  `mass_delete_fraction` of it, and by at least `mass_delete_min_rows`, between two polls
  (an autoanalyze that sampled before the DELETE and reported after it can write the old
  count back: the loss is then seen at the poll after the next vacuum, as `truncated`;
  n_tup_del alone would also count a DELETE that was rolled back);
- schema drift that appeared since the last poll (hand-written DDL): an unacknowledged
  drift item that was not there one poll ago and is still there on the next poll (one
  poll's drift can be a deploy caught half-way), with the time it was first seen.

`EmergencyWatch.observe` is pure over its inputs and the watch's own memory of the
previous poll; only `read_tables` touches the database.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from collections.abc import Iterable

import psycopg

from exporter.config.watch import EmergenciesConfig
from exporter.migrations.history import MigrationHistory
from exporter.schema.diff import DriftItem

log = logging.getLogger(__name__)

HISTORY_TABLE = "_prisma_migrations"

_TABLES = """
SELECT relname, relid::bigint, n_live_tup, n_tup_del, n_tup_ins
FROM pg_stat_user_tables WHERE schemaname = %s
"""


@dataclass(frozen=True)
class TableStats:
    relid: int
    live: int  # n_live_tup: the live-row estimate the statistics collector keeps
    deleted: int  # n_tup_del: rows deleted since the statistics were reset
    inserted: int = 0  # n_tup_ins: only ever grows, until the statistics are reset

    def reset_since(self, before: TableStats) -> bool:
        """pg_stat_reset() (or a crash) zeroed this table's statistics, n_live_tup with
        them: rows that look gone are not."""
        return self.relid == before.relid and (self.inserted < before.inserted or self.deleted < before.deleted)


def read_tables(conn: psycopg.Connection, schema: str) -> dict[str, TableStats]:
    return {name: TableStats(*stats) for name, *stats in conn.execute(_TABLES, (schema,))}


def _history_table_replaced(before: dict[str, TableStats] | None, after: dict[str, TableStats]) -> bool:
    if before is None or HISTORY_TABLE not in before:
        return False
    return HISTORY_TABLE not in after or after[HISTORY_TABLE].relid != before[HISTORY_TABLE].relid


class Loss(StrEnum):
    """How a table lost its rows (in logs and verify)."""

    DELETED = "deleted"  # the delete counter grew by (at least half of) the rows gone
    TRUNCATED = "truncated"  # same table, rows gone without deletes: TRUNCATE
    RECREATED = "recreated"  # a new table of the same name (DROP and CREATE: migrate reset, db push)
    DROPPED = "dropped"  # the table is gone


@dataclass(frozen=True)
class MassDelete:
    table: str
    rows_lost: int
    rows_before: int
    rows_after: int
    how: Loss
    at: float  # unix time of the poll that saw it


@dataclass(frozen=True)
class AppearedDrift:
    item: DriftItem
    appeared_at: float  # unix time of the poll that first saw it


@dataclass(frozen=True)
class EmergenciesResult:
    tables: tuple[str, ...]  # every table watched so far (their counters exist from 0)
    mass_deletes: tuple[MassDelete, ...]  # seen by this poll
    mass_deletes_total: dict[str, int]  # per table, since the exporter started
    rows_lost_total: dict[str, int]  # per table: rows gone in mass deletes, since the start
    history_rewrites_total: int
    history_rewritten_at: float | None  # the last poll that found it rewritten
    rewritten: tuple[str, ...]  # migrations this poll found replaced or gone
    drift_watched: bool  # drift is computed (an expected schema or schema.prisma)
    drift_appeared_total: int
    drift_appeared: tuple[AppearedDrift, ...]  # items still present that appeared while watched


class EmergencyWatch:
    """One per database, kept across polls (and config reloads): the previous poll's
    table statistics, applied migrations and drift, and the counters since the start."""

    def __init__(self, config: EmergenciesConfig):
        self.config = config
        self._tables: dict[str, TableStats] | None = None
        self._applied: dict[str, datetime] | None = None
        self._drift: set[tuple[str, str, str]] | None = None
        self._candidates: dict[tuple[str, str, str], float] = {}
        self._appeared: dict[tuple[str, str, str], float] = {}
        self.mass_deletes_total: dict[str, int] = {}
        self.rows_lost_total: dict[str, int] = {}
        self.history_rewrites_total = 0
        self.history_rewritten_at: float | None = None
        self.drift_appeared_total = 0

    def observe(self, now: float, tables: dict[str, TableStats], history: MigrationHistory | None,
                drift: Iterable[DriftItem] | None) -> EmergenciesResult:
        history_table = _history_table_replaced(self._tables, tables)
        deletes = self._mass_deletes(now, tables)
        rewritten = self._rewritten(now, history, history_table)
        appeared = self._drift_appeared(now, drift)
        return EmergenciesResult(
            tuple(sorted(self.mass_deletes_total)), tuple(deletes), dict(self.mass_deletes_total),
            dict(self.rows_lost_total), self.history_rewrites_total,
            self.history_rewritten_at, tuple(rewritten), drift is not None, self.drift_appeared_total, appeared,
        )

    def _mass_deletes(self, now: float, tables: dict[str, TableStats]) -> list[MassDelete]:
        previous, self._tables = self._tables, dict(tables)
        for name in tables:
            self.mass_deletes_total.setdefault(name, 0)
            self.rows_lost_total.setdefault(name, 0)
        if previous is None:
            return []
        found = []
        for name, before in previous.items():
            after = tables.get(name)
            if after is not None and after.reset_since(before):
                continue
            lost = before.live - (after.live if after else 0)
            if lost < self.config.mass_delete_min_rows or lost <= self.config.mass_delete_fraction * before.live:
                continue
            if after is None:
                how = Loss.DROPPED
            elif after.relid != before.relid:
                how = Loss.RECREATED
            else:
                how = Loss.DELETED if after.deleted - before.deleted >= lost / 2 else Loss.TRUNCATED
            event = MassDelete(name, lost, before.live, after.live if after else 0, how, now)
            self.mass_deletes_total[name] = self.mass_deletes_total.get(name, 0) + 1
            self.rows_lost_total[name] = self.rows_lost_total.get(name, 0) + lost
            log.warning("table %s lost %d of its %d rows since the last poll (%s)", name, lost, before.live, how)
            found.append(event)
        return found

    def _rewritten(self, now: float, history: MigrationHistory | None, table_replaced: bool) -> list[str]:
        rewritten = []
        if table_replaced:
            # _prisma_migrations itself was dropped or recreated (the schema with it): seen
            # in the statistics even when the role lost its grants along with the schema.
            rewritten, self._applied = [HISTORY_TABLE], None  # the rows start afresh
        if history is not None and history.managed:  # off, unreadable or gone: compare next time
            applied = {i.name: i.finished_at for i in history.items if i.finished_at is not None}
            previous, self._applied = self._applied, applied
            if previous is not None and not rewritten:
                rewritten = [name for name, finished in previous.items() if applied.get(name) != finished]
        if rewritten:
            self.history_rewrites_total += 1
            self.history_rewritten_at = now
            log.warning("the migration history was rewritten since the last poll: %d applied migrations "
                        "were replaced or removed (%s)", len(rewritten), ", ".join(rewritten[:5]))
        return rewritten

    def _drift_appeared(self, now: float, drift: Iterable[DriftItem] | None) -> tuple[AppearedDrift, ...]:
        if drift is None:
            return ()
        items: dict[tuple[str, str, str], DriftItem] = {
            (d.source, d.kind, d.object): d for d in drift if not d.acknowledged}
        keys = set(items)
        previous, self._drift = self._drift, keys
        if previous is not None:
            for key in keys - previous:
                self._candidates[key] = now
            # Still there one poll after it appeared: a change, not a deploy caught half-way.
            confirmed = {key: seen for key, seen in self._candidates.items() if key in keys and key in previous}
            for key, seen in confirmed.items():
                self._appeared[key] = seen
                self.drift_appeared_total += 1
                log.warning("schema drift appeared at %s without a migration: %s %s %s",
                            datetime.fromtimestamp(seen).isoformat(timespec="seconds"), *key)
            self._candidates = {k: t for k, t in self._candidates.items() if k in keys and k not in confirmed}
        self._appeared = {k: t for k, t in self._appeared.items() if k in keys}
        return tuple(AppearedDrift(items[k], t) for k, t in sorted(self._appeared.items()))
