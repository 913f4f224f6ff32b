"""One deploy, walked: each pending migration's statements in order, each sent to the code
of its kind, over one Evaluator (the virtual state carries from migration to migration).

The first failing statement stops the walk, as deploy stops there (the migration is
recorded failed and every later deploy is refused with P3009): later migrations are
`not_reached`. What cannot be evaluated is `cannot_evaluate`, and the deploy with it, but
the walk goes on: a later failure that does not depend on it is still found."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import psycopg
from pglast import ast
from pglast.parser import ParseError

from exporter.migrations.deploy import columns, constraints, ddl, dml, do_block
from exporter.migrations.deploy.evaluator import Evaluator, Fails, Known, Query, Unknown, error_text, no_known
from exporter.migrations.deploy.parsing import (
    Statement, is_concurrent_index, migration_warnings, split_statements, table_of,
)
from exporter.migrations.deploy.results import DeployPrediction, MigrationPrediction, Outcome, StatementResult
from exporter.migrations.deploy.state import initial_state
from exporter.schema.model import Schema


# A statement kind: what the statement (its node, as pglast parsed it) does to the
# evaluator's state, and its result; raises Fails or Unknown.
Handler = Callable[[Evaluator, Any, StatementResult], StatementResult]


def _passes(ev: Evaluator, node: ast.Node, base: StatementResult) -> StatementResult:
    """COMMENT, SET, BEGIN/COMMIT (named by the migration's warnings): nothing to fail on."""
    return base


def _not_modelled(what: str) -> Handler:
    def handler(ev: Evaluator, node: Any, base: StatementResult) -> StatementResult:
        raise Unknown(f"{what} is not modelled")
    return handler


# Each statement kind the prediction knows, by its node type; any other is `cannot_evaluate`.
_HANDLERS: dict[type[ast.Node], Handler] = {
    ast.CommentStmt: _passes,
    ast.VariableSetStmt: _passes,
    ast.TransactionStmt: _passes,
    ast.CreateStmt: ddl.create_table,
    ast.CreateSeqStmt: ddl.create_sequence,
    ast.CreateEnumStmt: ddl.create_enum,
    ast.AlterEnumStmt: ddl.alter_enum,
    ast.RenameStmt: ddl.rename,
    ast.DropStmt: ddl.drop,
    ast.AlterTableStmt: columns.alter_table,
    ast.IndexStmt: constraints.create_index,
    ast.UpdateStmt: dml.update,
    ast.DeleteStmt: dml.delete,
    ast.InsertStmt: dml.insert,
    ast.DoStmt: lambda ev, node, base: do_block.evaluate(ev, node, base, run),
    ast.CreateTrigStmt: ddl.create_trigger,
    ast.CreateFunctionStmt: _not_modelled("CREATE FUNCTION"),
    ast.CreateExtensionStmt: _not_modelled("CREATE EXTENSION"),
}


def run(ev: Evaluator, stmt: Statement) -> StatementResult:
    """One statement: what it does to the virtual state, and whether it fails."""
    base = StatementResult(stmt.number, stmt.line, stmt.text, Outcome.PASSES)
    node = stmt.node
    handler = _HANDLERS.get(type(node))
    try:
        if handler is None:
            raise Unknown(f"{type(node).__name__} is not modelled")
        if not isinstance(node, ast.AlterEnumStmt):
            ddl.unsafe_label(ev, node)
        return handler(ev, node, base)
    except Fails as f:
        return replace(base, outcome=Outcome.FAILS, reason=f.reason, sqlstate=f.sqlstate,
                       offending_rows=f.rows, inspect_sql=f.inspect_sql, table=base.table or table_of(node))
    except Unknown as u:
        return replace(base, outcome=Outcome.CANNOT_EVALUATE, reason=str(u), table=table_of(node))
    except psycopg.Error as e:
        return replace(base, outcome=Outcome.CANNOT_EVALUATE, table=table_of(node),
                       reason=f"query failed: {error_text(e)}")


def predict_deploy(
    scripts: Sequence[tuple[str, str | None]],
    live: Schema,
    query: Query,
    *,
    schema: str = "public",
    refused: str = "",
    known: Known = no_known,
) -> DeployPrediction:
    """What `prisma migrate deploy` will do. `scripts`: (name, migration.sql text, or None
    when it could not be read) of the migrations it will apply, in order; `live`: the
    database's Schema; `query`: runs one read-only SELECT and returns its single row;
    `refused`: why deploy will not run at all (a failed migration is recorded: P3009)."""
    if refused:
        return DeployPrediction(Outcome.REFUSED, tuple(
            MigrationPrediction(name, Outcome.NOT_REACHED) for name, _ in scripts), refused)
    ev = Evaluator(initial_state(live, schema), query, known)
    results: list[MigrationPrediction] = []
    failed = False
    first_unknown = ""
    for name, text in scripts:
        if failed:
            # Deploy never runs it; what is wrong with it is still said (bad input is named).
            results.append(MigrationPrediction(name, Outcome.NOT_REACHED, reason=_read_problem(text)))
            continue
        prediction = _predict_migration(ev, name, text)
        results.append(prediction)
        if prediction.outcome == Outcome.FAILS:
            failed = True
        elif prediction.outcome == Outcome.CANNOT_EVALUATE and not first_unknown:
            first_unknown = f"{name}: {prediction.reason}"
    if failed and not first_unknown:
        outcome = Outcome.FAILS
    elif first_unknown:
        outcome = Outcome.CANNOT_EVALUATE
    else:
        outcome = Outcome.PASSES
    return DeployPrediction(outcome, tuple(results), first_unknown)


def _read_problem(text: str | None) -> str:
    """Why a migration cannot be read or parsed ("" when it can), with its warnings."""
    if text is None:
        return "migration.sql could not be read"
    try:
        return "; ".join(migration_warnings(split_statements(text)))
    except ParseError as e:
        return f"unparsable migration.sql: {e.args[0]}"


def _predict_migration(ev: Evaluator, name: str, text: str | None) -> MigrationPrediction:
    if text is None:
        return MigrationPrediction(name, Outcome.CANNOT_EVALUATE, reason="migration.sql could not be read")
    try:
        statements = split_statements(text)
    except ParseError as e:
        location = e.args[1] if len(e.args) > 1 and isinstance(e.args[1], int) else None  # 1-based char offset
        line = text[: max(location - 1, 0)].count("\n") + 1 if location else None
        where = f" at line {line}" if line else ""
        # PostgreSQL rejects the whole script before running any of it: deploy fails here.
        fail = StatementResult(1, line or 1, "", Outcome.FAILS, reason=f"syntax error{where}: {e.args[0]}",
                               sqlstate="42601")
        return MigrationPrediction(name, Outcome.FAILS, (fail,), reason=f"unparsable migration.sql{where}: {e.args[0]}")
    warnings = migration_warnings(statements)
    done: list[StatementResult] = []
    unknown = ""
    multi = len(statements) > 1
    ev.begin_migration()
    for stmt in statements:
        if multi and is_concurrent_index(stmt):
            result = StatementResult(stmt.number, stmt.line, stmt.text, Outcome.FAILS, table=table_of(stmt.node),
                                     reason="CREATE INDEX CONCURRENTLY cannot run inside a transaction block",
                                     sqlstate="25001")
        else:
            result = run(ev, stmt)
        done.append(result)
        if result.outcome == Outcome.FAILS:
            return MigrationPrediction(name, Outcome.FAILS, tuple(done), warnings=tuple(warnings))
        if result.outcome == Outcome.CANNOT_EVALUATE and not unknown:
            unknown = f"statement {stmt.number} (line {stmt.line}): {result.reason}"
    outcome = Outcome.CANNOT_EVALUATE if unknown else Outcome.PASSES
    return MigrationPrediction(name, outcome, tuple(done), reason=unknown, warnings=tuple(warnings))
