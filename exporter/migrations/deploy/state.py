"""The virtual state of the database: the live catalog as the earlier statements leave it
(tables, columns, indexes, constraints, enum labels) and, per table, an SQL FROM item
giving its rows as they will be. Statements change it; nothing here runs a query."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from exporter.migrations.deploy.parsing import ident, literal, unquote
from exporter.schema.model import ConstraintKind, Schema

CHECK, FOREIGN_KEY = ConstraintKind.CHECK, ConstraintKind.FOREIGN_KEY
PRIMARY_KEY, UNIQUE = ConstraintKind.PRIMARY_KEY, ConstraintKind.UNIQUE


@dataclass
class Column:
    name: str
    type: str  # SQL text of the type (quoted when needed)
    type_name: str  # unquoted last component, to match enums
    nullable: bool
    default: str | None = None


@dataclass
class Table:
    name: str
    columns: dict[str, Column]
    source: str | None  # FROM item giving its rows as they will be, aliased as the table; None: empty
    changed: bool = False  # an earlier statement changed its rows or columns
    tainted: str = ""  # why its rows cannot be known


@dataclass
class Constraint:
    name: str
    table: str
    kind: ConstraintKind
    columns: tuple[str, ...] = ()
    expression: str = ""  # CHECK expression
    ref_table: str = ""
    ref_columns: tuple[str, ...] = ()
    on_delete: str = "NO ACTION"


@dataclass
class EnumType:
    labels: list[str]
    live: bool  # still the live database's own type, unchanged (else: represented as text)

    def labels_sql(self) -> str:
        """Its labels as an SQL list, for `value NOT IN (...)`."""
        return ", ".join(literal(label) for label in self.labels) or "NULL"


@dataclass
class State:
    schema: str
    tables: dict[str, Table]
    indexes: dict[str, tuple[str, bool, tuple[str, ...]]]  # name -> (table, unique, plain columns)
    constraints: dict[tuple[str, str], Constraint]
    enums: dict[str, EnumType]
    other_relations: set[str] = field(default_factory=set)  # sequences, views: names taken
    catalog_unknown: str = ""  # a DO block may have changed the catalog: absence proves nothing

    def relation_exists(self, name: str) -> bool:
        return name in self.tables or name in self.indexes or name in self.other_relations

    def fks_to(self, table: str) -> list[Constraint]:
        return [c for c in self.constraints.values() if c.kind == FOREIGN_KEY and c.ref_table == table]

    def primary_key(self, table: str) -> Constraint | None:
        return next((c for c in self.constraints.values() if c.table == table and c.kind == PRIMARY_KEY), None)


def initial_state(live: Schema, schema: str = "public") -> State:
    tables = {}
    for t in live.tables.values():
        if t.name == "_prisma_migrations":
            continue
        columns = {
            c.name: Column(c.name, c.type, unquote(c.type.removesuffix("[]")), c.nullable, c.default)
            for c in t.columns.values()
        }
        tables[t.name] = Table(t.name, columns, f"{ident(schema)}.{ident(t.name)} AS {ident(t.name)}")
    indexes = {i.name: (i.table, i.unique, i.columns) for i in live.indexes.values()}
    constraints = {}
    for (table, name), c in live.constraints.items():
        expression = ""
        if c.kind == CHECK:
            expression = re.sub(r"^\s*CHECK\s*", "", c.definition, flags=re.I)
            expression = re.sub(r"\s*(NO INHERIT|NOT VALID)\s*$", "", expression, flags=re.I)
        constraints[(table, name)] = Constraint(
            name, table, c.kind, tuple(c.columns), expression, c.ref_table or "", tuple(c.ref_columns),
            c.on_delete or "NO ACTION",
        )
    enums = {name: EnumType(list(labels), True) for name, labels in live.enums.items()}
    return State(schema, tables, indexes, constraints, enums)
