"""The deploy prediction (exporter/migrations/deploy/) on real databases built from the
fixture: bad input, read-only evaluation, history as Prisma sees it. Its agreement with the
real Prisma CLI is tests/test_deploy_differential.py."""

from __future__ import annotations

import shutil

import psycopg
import pytest

from exporter.config import DatabaseConfig
from exporter.migrations.deploy import Outcome, forecast, predict_deploy, session_query
from exporter.migrations.history import PrismaStatus, read_folder, read_history, read_rows
from exporter.migrations.monitor import MigrationsMonitor
from exporter.schema.catalog import introspect
from venzory_fixture import MIGRATIONS, STEPS, build_database


@pytest.fixture(scope="module")
def clean(pg_server):
    return build_database(pg_server, "deploy_pred_clean", seed="clean")


def predict(dsn, scripts):
    with psycopg.connect(dsn, autocommit=True, options="-c default_transaction_read_only=on") as conn:
        return predict_deploy(scripts, introspect(conn), session_query(conn))


CAP = 'ALTER TABLE "LocationInventory" ADD CONSTRAINT "check_cap" CHECK ("quantity" < 1000000);'


def test_unparsable_migration_fails_at_its_line_earlier_ones_are_evaluated_later_ones_named(clean):
    p = predict(clean, [("1_ok", CAP), ("2_bad", 'ALTER TABLE "Item"\n  ADD COLUM "x" TEXT;'),
                        ("3_also_bad", "SELEC 1;"), ("4_fine", CAP.replace("check_cap", "check_cap2"))])
    assert [m.outcome for m in p.migrations] == [Outcome.PASSES, Outcome.FAILS, Outcome.NOT_REACHED, Outcome.NOT_REACHED]
    failure = p.failure
    assert failure[0] == "2_bad" and failure[1].sqlstate == "42601" and failure[1].line == 2
    assert "syntax error at line 2" in failure[1].reason
    assert "unparsable migration.sql" in p.migrations[2].reason and p.migrations[3].reason == ""
    assert p.outcome == Outcome.FAILS


def test_commit_inside_a_migration_is_named_and_concurrently_fails_in_a_script(clean):
    p = predict(clean, [("1_tx", f"BEGIN;\n{CAP}\nCOMMIT;"),
                        ("2_conc", 'CREATE INDEX CONCURRENTLY "i_name" ON "Item"("name");\nSELECT 1;')])
    assert p.migrations[0].outcome == Outcome.PASSES
    assert any("BEGIN/COMMIT inside the migration" in w for w in p.migrations[0].warnings)
    assert p.migrations[1].outcome == Outcome.FAILS and p.failure[1].sqlstate == "25001"
    alone = predict(clean, [("1_conc", 'CREATE INDEX CONCURRENTLY "i_name" ON "Item"("name");')])
    assert alone.outcome == Outcome.PASSES


def test_the_walk_never_writes(clean):
    scripts = [("1", 'UPDATE "LocationInventory" SET "quantity" = "quantity" + 1;\nDELETE FROM "OrderItem";\n'
                     'DROP TABLE "OrderTemplate";\nALTER TABLE "Item" DROP COLUMN "sku";')]
    with psycopg.connect(clean, autocommit=True) as conn:
        before = conn.execute('SELECT (SELECT sum("quantity") FROM "LocationInventory"), (SELECT count(*) FROM '
                              '"OrderItem"), (SELECT count(*) FROM "OrderTemplate"), (SELECT count("sku") FROM "Item")'
                              ).fetchone()
    p = predict(clean, scripts)  # on a read-only session: a write would raise
    (m,) = p.migrations
    assert m.effects == {"rows_inserted": 0, "rows_updated": 20, "rows_deleted": before[1], "rows_lost": before[2], "values_lost": before[3]}
    with psycopg.connect(clean, autocommit=True) as conn:
        after = conn.execute('SELECT (SELECT sum("quantity") FROM "LocationInventory"), (SELECT count(*) FROM '
                             '"OrderItem"), (SELECT count(*) FROM "OrderTemplate"), (SELECT count("sku") FROM "Item")'
                             ).fetchone()
    assert after == before


def test_unmodellable_statements_never_pass(clean):
    p = predict(clean, [("1", 'INSERT INTO "GlobalSupplier" ("id", "name", "updatedAt") SELECT "id" || \'x\', "name", now() '
                              'FROM "GlobalSupplier" ON CONFLICT DO NOTHING;\n'
                              'CREATE UNIQUE INDEX "g_name" ON "GlobalSupplier"("name");\n' + CAP)])
    (m,) = p.migrations
    outcomes = [s.outcome for s in m.statements]
    # The index on the table the INSERT changed cannot be known; the CHECK on another table can.
    assert outcomes == [Outcome.CANNOT_EVALUATE, Outcome.CANNOT_EVALUATE, Outcome.PASSES]
    assert m.outcome == p.outcome == Outcome.CANNOT_EVALUATE and "INSERT" in p.reason


def test_diverged_history_and_unresolved_baseline(pg_server, tmp_path):
    dsn = build_database(pg_server, "deploy_pred_diverged", seed="clean")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE _prisma_migrations SET migration_name = 'old_' || migration_name")
    folder = tmp_path / "migrations"
    (folder / "20251130000000_init").mkdir(parents=True)
    (folder / "20251130000000_init" / "migration.sql").write_text(
        "\n".join((MIGRATIONS / n / "migration.sql").read_text() for n in STEPS))
    with psycopg.connect(dsn, autocommit=True, options="-c default_transaction_read_only=on") as conn:
        f = forecast(read_rows(conn), read_folder(folder), introspect(conn), session_query(conn))
    assert f.view.status == PrismaStatus.DIVERGED and f.view.last_common is None and f.view.baseline_unresolved
    assert f.view.not_in_folder[0] == "old_" + STEPS[0]
    assert f.deploy.failure[1].number == 1 and f.deploy.failure[1].sqlstate == "42710"  # CREATE TYPE exists
    assert f.commands == ("prisma migrate resolve --applied 20251130000000_init",)


def test_failed_migration_refuses_the_deploy_with_the_commands_that_fix_it(pg_server):
    dsn = build_database(pg_server, "deploy_pred_failed", upto=STEPS[9], seed=None)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at) "
                     f"VALUES ('f', 'x', '{STEPS[10]}', now())")
        f = forecast(read_rows(conn), read_folder(MIGRATIONS), introspect(conn), session_query(conn))
    assert f.deploy.outcome == Outcome.REFUSED and "P3009" in f.deploy.reason
    assert f"prisma migrate resolve --rolled-back {STEPS[10]}" in f.commands[0]


def test_a_folder_changing_while_read_is_reported_not_predicted(pg_server, clean, tmp_path):
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, folder)
    database = DatabaseConfig(name="venzory", dsn=clean, migrations={"dir": str(folder)})
    monitor = MigrationsMonitor(database)
    with psycopg.connect(clean, autocommit=True) as conn:
        history = read_history(conn, folder)
        (folder / "20251201000000_late").mkdir()  # a deploy copying files meanwhile
        (folder / "20251201000000_late" / "migration.sql").write_text(CAP)
        with pytest.raises(ValueError, match="changed while it was read"):
            monitor._forecast(conn, history, introspect(conn), ())


def _add_column_if_missing(column: str) -> str:
    return ("DO $$\nBEGIN\n  IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
            f" AND table_name = 'Item' AND column_name = '{column}') THEN\n"
            f'    ALTER TABLE "Item" ADD COLUMN "{column}" TEXT NOT NULL;\n  END IF;\nEND $$;\n')


def test_idempotent_do_block_decided_from_the_catalog_as_earlier_statements_left_it(clean):
    # The column exists: the branch is skipped, the DO passes; absent: its ADD COLUMN NOT NULL fails on Item's rows.
    present = predict(clean, [("1", _add_column_if_missing("sku") + 'CREATE INDEX "i_sku" ON "Item"("sku");')])
    assert present.outcome == Outcome.PASSES, present.summary()
    absent = predict(clean, [("1", 'ALTER TABLE "Item" DROP COLUMN "sku";\n' + _add_column_if_missing("sku"))])
    failure = absent.failure[1]
    assert (failure.number, failure.line, failure.sqlstate, failure.table) == (2, 2, "23502", "Item")
    assert failure.text.startswith("DO $$") and failure.offending_rows > 0


def test_do_block_of_plain_statements_is_walked_with_its_rows_counted(clean):
    p = predict(clean, [("1", 'DO $$ BEGIN UPDATE "Item" SET "sku" = \'SKU-\' || "id" WHERE "sku" IS NULL; END $$;\n'
                              'ALTER TABLE "Item" ALTER COLUMN "sku" SET NOT NULL;')])
    with psycopg.connect(clean) as conn:
        nulls = conn.execute('SELECT count(*) FROM "Item" WHERE "sku" IS NULL').fetchone()[0]
    assert nulls > 0 and p.outcome == Outcome.PASSES, p.summary()
    do = p.migrations[0].statements[0]
    assert (do.rows_updated, do.lock, do.table) == (nulls, "ROW EXCLUSIVE", "Item")


def test_do_block_elsif_else_and_catalog_views(clean):
    script = ("DO $$ BEGIN\n IF EXISTS (SELECT 1 FROM pg_type WHERE typname = 'NoSuchType') THEN\n"
              '  ALTER TABLE "Nope" ADD COLUMN "x" TEXT;\n'
              " ELSIF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'LocationInventory_pkey') THEN\n"
              '  ALTER TABLE "Nope" ADD COLUMN "y" TEXT;\n'
              " ELSE\n  ALTER TABLE \"Item\" ADD COLUMN \"z\" TEXT;\n END IF;\nEND $$;\n"
              'ALTER TABLE "Item" ALTER COLUMN "z" SET DEFAULT \'a\';')
    assert predict(clean, [("1", script)]).outcome == Outcome.PASSES
    text_type = script.replace("'NoSuchType'", "'text'")  # a built-in type: found live, in pg_catalog
    failure = predict(clean, [("1", text_type)]).failure[1]
    assert failure.sqlstate == "42P01" and '"Nope"' in failure.reason


def test_do_blocks_that_are_not_modelled_stay_cannot_evaluate_and_prove_no_absence(clean):
    for body, what in [("LOOP EXIT; END LOOP;", "LOOP"), ("EXECUTE 'SELECT 1';", "EXECUTE"),
                       ("PERFORM 1;", "PERFORM"), ("RAISE NOTICE 'x';", "RAISE"),
                       ("IF (SELECT count(*) FROM \"Item\") > 0 THEN NULL; END IF;", "IF condition")]:
        p = predict(clean, [("1", f"DO $$ BEGIN {body} END $$;\n" + 'ALTER TABLE "Nope" ADD COLUMN "x" TEXT;\n' + CAP)])
        outcomes = [s.outcome for s in p.migrations[0].statements]
        assert outcomes == [Outcome.CANNOT_EVALUATE] * 3, (body, outcomes)
        assert what in p.migrations[0].statements[0].reason


GLOBAL = 'INSERT INTO "GlobalSupplier" ("id", "name", "updatedAt") VALUES '


def test_insert_values_rows_count_in_later_checks(clean):
    p = predict(clean, [("1", GLOBAL + "('g_new1', 'Fresh One', now()), ('g_new2', 'Fresh Two', CURRENT_TIMESTAMP);\n"
                              'INSERT INTO "GlobalSupplier" VALUES (\'g_new3\', \'Fresh Three\', NULL, NULL, NULL, NULL, '
                              'DEFAULT, now()::timestamp(3));\n'
                              'ALTER TABLE "GlobalSupplier" ADD CONSTRAINT "short" CHECK (length("name") < 11);')])
    first, second, check = p.migrations[0].statements
    assert (first.rows_inserted, second.rows_inserted, p.migrations[0].effects["rows_inserted"]) == (2, 1, 3)
    assert first.outcome == second.outcome == Outcome.PASSES and first.lock == "ROW EXCLUSIVE"
    assert check.outcome == Outcome.FAILS and check.sqlstate == "23514" and check.offending_rows >= 1  # 'Fresh Three'


def test_insert_conflicts_fail_with_the_sqlstate_postgresql_raises(clean):
    with psycopg.connect(clean) as conn:
        taken = conn.execute('SELECT "name" FROM "GlobalSupplier" LIMIT 1').fetchone()[0]
    cases = {
        "23502": 'INSERT INTO "GlobalSupplier" ("id", "name") VALUES (\'g1\', \'x\');',  # updatedAt: no default
        "23505": GLOBAL + f"('g1', {taken!r}, now());",  # GlobalSupplier_name_key
        "23503": 'INSERT INTO "PracticeSupplier" ("id", "practiceId", "globalSupplierId", "updatedAt") '
                 "SELECT 'p' || \"id\", \"id\", 'no such supplier', now() FROM \"Practice\";",
        "22007": GLOBAL + "('g1', 'x', 'not a time');",
        "42601": GLOBAL + "('g1', 'x');",
        "42804": 'INSERT INTO "PracticeSupplier" ("id", "practiceId", "globalSupplierId", "isPreferred", "updatedAt") '
                 "SELECT 'p' || \"id\", \"id\", \"id\", 1, now() FROM \"Practice\";",  # integer into boolean
    }
    for sqlstate, sql in cases.items():
        p = predict(clean, [("1", sql)])
        assert p.outcome == Outcome.FAILS and p.failure[1].sqlstate == sqlstate, (sql, p.summary())
    # A CHECK, NOT VALID ones included, is checked on the new rows only.
    with_check = ('ALTER TABLE "GlobalSupplier" ADD CONSTRAINT "no_x" CHECK ("name" <> \'x\') NOT VALID;\n'
                  + GLOBAL + "('g1', 'x', now());")
    failure = predict(clean, [("1", with_check)]).failure[1]
    assert (failure.number, failure.sqlstate, failure.offending_rows) == (2, "23514", 1)


def test_insert_of_rows_referencing_each_other_passes_its_own_foreign_key(clean):
    # Location.parentId references Location: the second new row's parent is the first.
    p = predict(clean, [("1", 'INSERT INTO "Location" ("id", "practiceId", "name", "parentId", "updatedAt") VALUES '
                              "('loc_a', 'prac_north', 'A', NULL, now()), ('loc_b', 'prac_north', 'B', 'loc_a', now());")])
    assert p.outcome == Outcome.PASSES, p.summary()
    p = predict(clean, [("1", 'INSERT INTO "Location" ("id", "practiceId", "name", "parentId", "updatedAt") VALUES '
                              "('loc_b', 'prac_north', 'B', 'loc_nowhere', now());")])
    assert p.failure[1].sqlstate == "23503"


def test_insert_select_from_the_same_table_reads_it_before_the_insert(clean):
    with psycopg.connect(clean) as conn:
        n = conn.execute('SELECT count(*) FROM "GlobalSupplier"').fetchone()[0]
    p = predict(clean, [("1", 'INSERT INTO "GlobalSupplier" ("id", "name", "updatedAt") SELECT g."id" || \'-copy\', '
                              'g."name" || \' copy\', now() FROM "GlobalSupplier" g WHERE g."id" IS NOT NULL;\n'
                              'DELETE FROM "GlobalSupplier" WHERE "id" LIKE \'%-copy\';')])
    insert, delete = p.migrations[0].statements
    assert p.outcome == Outcome.PASSES and insert.rows_inserted == n and delete.rows_deleted == n


def test_delete_cascades_and_sets_null_down_the_chain(clean):
    with psycopg.connect(clean) as conn:
        items = conn.execute('SELECT count(*) FROM "OrderItem" i JOIN "Order" o ON o."id" = i."orderId" '
                             'WHERE o."practiceId" = \'prac_north\'').fetchone()[0]
        orders = conn.execute('SELECT count(*) FROM "Order" WHERE "createdById" = \'user_ben\'').fetchone()[0]
    assert items and orders
    # Practice -> Order (CASCADE) -> OrderItem (CASCADE): no item of the north practice is left to break the CHECK.
    cascade = ('DELETE FROM "Order" WHERE "practiceId" = \'prac_north\';\n'
               'ALTER TABLE "OrderItem" ADD CONSTRAINT "no_north" CHECK ("orderId" NOT LIKE \'%_n_%\' OR "quantity" > 0);\n'
               'ALTER TABLE "OrderItem" ADD CONSTRAINT "gone" CHECK ("orderId" NOT IN (\'ord_n_4\'));')
    p = predict(clean, [("1", cascade)])
    assert p.outcome == Outcome.PASSES, p.summary()
    # SET NULL into a column made NOT NULL first fails the DELETE with 23502.
    p = predict(clean, [("1", 'UPDATE "Order" SET "createdById" = \'user_anna\' WHERE "createdById" IS NULL;\n'
                              'ALTER TABLE "Order" ALTER COLUMN "createdById" SET NOT NULL;\n'
                              'DELETE FROM "User" WHERE "id" = \'user_ben\';')])
    failure = p.failure[1]
    assert (failure.number, failure.sqlstate, failure.offending_rows) == (3, "23502", orders), failure
    # Without it the orders keep existing with no creator.
    p = predict(clean, [("1", 'DELETE FROM "User" WHERE "id" = \'user_ben\';\n'
                              'ALTER TABLE "Order" ALTER COLUMN "createdById" SET NOT NULL;')])
    assert p.failure[1].number == 2 and p.failure[1].offending_rows >= orders
