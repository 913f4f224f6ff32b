"""PostgreSQL connection strings: validated at the edge, and every way they can leak a
password known in advance.

libpq echoes pieces of a connection string in its errors - a malformed percent-escape, an
unclosed `[`, the whole URI - and when a URL's password holds an unencoded `/` or `@`,
libpq reads part of it as the host, port or database name and prints it as such. So:

- a DSN that libpq cannot parse is a config error, and the error never quotes libpq's
  message (it would quote the DSN);
- a URL whose password libpq would read differently from how it is written (an
  unencoded `/`, `@`, ...) is a config error too: what a person meant as the password
  must never reach libpq as a host name;
- `dsn_secrets` gives everything to redact: the password as written and as parsed, in
  its encoded forms, and the whole DSN.
"""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus, unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

# scheme://userinfo@...: userinfo is everything up to the LAST @, as a person writes it.
_URL_USERINFO = re.compile(r"^\s*postgres(?:ql)?://(.*)@", re.S)
_KEYWORD_PASSWORD = re.compile(r"""(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'?|\S*)""")
_URL_QUERY_PASSWORD = re.compile(r"[?&]password=([^&#]*)")


def check_dsn(dsn: str) -> str:
    """The DSN when libpq parses it as written; else ValueError that quotes none of it."""
    try:
        parsed = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as e:
        # libpq's message quotes the DSN: keep only what kind of problem it is.
        kind = re.sub(r'"([^"]*)"?', lambda m: m.group(0) if len(m.group(1)) <= 1 else "(...)",
                      str(e).strip().splitlines()[0])
        hint = " (a % in the password is written %25)" if "percent" in kind else ""
        raise ValueError(f"not a connection string libpq can read: {kind}{hint}") from None
    written = _url_password(dsn)
    if written is not None and unquote(written) != parsed.get("password"):
        raise ValueError("the password in this URL holds a character that must be percent-encoded "
                         "(/ is %2F, @ is %40, ? is %3F, # is %23): as written, libpq reads part of it "
                         "as the host, port or database")
    return dsn


def _url_password(dsn: str) -> str | None:
    match = _URL_USERINFO.match(dsn)
    if match is None:
        return None
    user, colon, password = match.group(1).partition(":")
    return password if colon else None


def dsn_password(dsn: str) -> str | None:
    try:
        password = conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        return None
    return str(password) if password else None


def dsn_secrets(dsn: str | None) -> list[str]:
    """What to redact for this DSN wherever text is shown: its password however libpq or a
    person reads it (decoded, percent-encoded, and raw as written), and the DSN itself
    when it holds a password. Works on DSNs that do not parse, too."""
    if not dsn:
        return []
    candidates = {dsn_password(dsn), _url_password(dsn)}
    candidates.update(m.group(1) for m in _URL_QUERY_PASSWORD.finditer(dsn))
    candidates.update(m.group(1).strip("'") for m in _KEYWORD_PASSWORD.finditer(dsn))
    secrets: set[str] = set()
    for password in filter(None, candidates):
        for form in (password, unquote(password)):
            secrets.update((form, quote(form, safe=""), quote_plus(form)))
    if secrets:
        secrets.add(dsn.strip())
    return sorted(secrets, key=len, reverse=True)  # the DSN before its password, when redacting


def redact_dsn(dsn: str) -> str:
    """The DSN as it may be shown anywhere: password replaced, URL or key=value alike."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    if "password" in params:
        params["password"] = "***"
    return make_conninfo("", **params)
