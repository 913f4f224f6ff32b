"""Predict `prisma migrate deploy`, statement by statement, without writing anything.

Every pending `migration.sql` is parsed with PostgreSQL's own parser (parsing.py) and its
statements are walked in deploy order (walk.py) over a *virtual state* of the database
(state.py): the live catalog as the earlier statements leave it (tables, columns, indexes,
constraints, enum labels) and, per table, an SQL expression of its rows as they will be.
Questions about those rows are read-only SELECTs on the caller's session (evaluator.py);
one query per statement that needs rows, which also counts the rows its lock must scan.

Each statement kind lives with its concern:
- ddl.py: CREATE TABLE / TYPE / SEQUENCE, enum labels, RENAME, DROP - what exists;
- columns.py: ALTER TABLE's column changes - ADD COLUMN NOT NULL without a default on a
  table that will have rows, SET NOT NULL, ALTER COLUMN TYPE (a value that does not
  convert; no assignment cast without USING; Prisma's enum rewrite with a row holding a
  dropped label);
- constraints.py: ADD CONSTRAINT CHECK / UNIQUE / PRIMARY KEY / FOREIGN KEY (the parent's
  rows as they will be) and CREATE UNIQUE INDEX, counted on the rows; the checks changed
  rows must pass again;
- dml.py: `UPDATE t SET c = e WHERE p` becomes a layer over the table's rows with
  `CASE WHEN p THEN e ELSE c END AS c`; `DELETE FROM t WHERE p` a layer keeping
  `NOT coalesce(p, false)` (and, on its ON DELETE CASCADE / SET NULL children, a filter or
  a CASE on their keys); `INSERT ... VALUES` or `... SELECT` from one table a `UNION ALL`
  of the new rows (checked for NOT NULL, CHECK, foreign and unique keys). So a
  sanitize-then-constrain migration is seen to pass, its rows counted;
- do_block.py: a DO block whose body is plain statements and IF [NOT] EXISTS look-ups in
  the catalog, walked as if its statements stood there.

What cannot be modelled (INSERT ... ON CONFLICT / RETURNING / WITH, UPDATE ... FROM,
sub-queries on changed tables, ON DELETE SET DEFAULT, other DO blocks, functions,
triggers, statements not known here) makes the table it touches - for a DO block, the
whole database - `cannot_evaluate`: anything later that depends on it is
`cannot_evaluate` too, never "passes". The results (results.py) say per statement, per
migration and for the deploy what happens; forecast.py adds the history as Prisma sees it.
"""

# What callers import (verify, /metrics, the monitor, the tests and benchmarks).
from exporter.migrations.deploy.evaluator import Known, session_query
from exporter.migrations.deploy.forecast import Forecast, forecast
from exporter.migrations.deploy.parsing import split_statements
from exporter.migrations.deploy.results import (
    ACCESS_EXCLUSIVE, ROW_EXCLUSIVE, DeployPrediction, MigrationPrediction, Outcome, StatementResult,
)
from exporter.migrations.deploy.walk import predict_deploy

__all__ = [
    "ACCESS_EXCLUSIVE", "ROW_EXCLUSIVE", "DeployPrediction", "Forecast", "Known", "MigrationPrediction", "Outcome",
    "StatementResult", "forecast", "predict_deploy", "session_query", "split_statements",
]
