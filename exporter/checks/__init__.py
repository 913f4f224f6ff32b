"""Integrity checks. Each kind (row, orphan, duplicate) is one module with one shape:

    probe(check) -> TablePass | OwnQuery    how the check is counted
    guard(check, schema) -> str | None      the live constraint that makes a scan useless
    inspect_sql(check) -> str               SQL an operator runs to see the offending rows
    counts_same_rows(check, rule) -> bool   a constraint/index rejects exactly its violations
                                            (the deploy prediction then reuses the check's count)

`run.py` plans and runs them; `constraints.py` reports expected constraints.
"""
