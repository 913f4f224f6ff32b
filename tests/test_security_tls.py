"""TLS, basic auth, headers and time bounds of the HTTP server, with real TLS clients on
127.0.0.1 (Python's ssl + http.client, curl, openssl s_client) and a throwaway CA."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from contextlib import contextmanager

import bcrypt
import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, make_wsgi_app

from exporter.http import server as server_module
from exporter.config import ConfigError
from exporter.config.events import EventsConfig
from exporter.events import EventPipeline, KnownNames
from exporter.http import HttpServer, make_app
from exporter.config.web import CIPHER_SUITES, load_web_config
from exporter.http.auth import BasicAuth
from test_security_support import PASSWORD, PASSWORD_HASH, USER, Pki, basic, https

ENDPOINTS = [("GET", "/metrics"), ("GET", "/healthz"), ("GET", "/readyz"), ("POST", "/events")]
EVENT = b'{"level":30,"msg":"request served"}\n'


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@contextmanager
def serving(web_file, *, token: str | None = None):
    """The exporter's HTTP server (routing, /metrics, /events) with this web config."""
    registry = CollectorRegistry()
    Gauge("venzory_db_test_value", "A value for the test.", registry=registry).set(42)
    events = EventPipeline(EventsConfig.model_validate({"http": {"token": token}}), ["venzory"], KnownNames())
    app = make_app(make_wsgi_app(registry), lambda: True, events.wsgi_app)
    server = HttpServer("127.0.0.1", 0, app, load_web_config(web_file) if web_file else None,
                        events_authenticate=lambda: events.authenticates).start()
    try:
        yield server.port
    finally:
        server.stop()


def request(port, pki, method="GET", path="/metrics", headers=None, certificate=None):
    body = EVENT if method == "POST" else None
    return https(port, path, context=pki.client_context(certificate), method=method, body=body,
                 headers={"Content-Type": "application/x-ndjson", **(headers or {})})


# -- basic auth over TLS -----------------------------------------------------------------------


@pytest.mark.parametrize("method, path", ENDPOINTS)
def test_every_endpoint_needs_the_password(pki, method, path):
    with serving(pki.web_config(basic_auth_users={USER: PASSWORD_HASH})) as port:
        for headers in ({}, basic(USER, "wrong-password"), basic("nobody", PASSWORD), basic(USER, ""),
                        {"Authorization": "Basic !!!not-base64"}, {"Authorization": f"Bearer {PASSWORD}"}):
            status, answer_headers, _ = request(port, pki, method, path, headers)
            assert status == 401, headers
            assert answer_headers["WWW-Authenticate"].startswith("Basic realm=")
        status, _, body = request(port, pki, method, path, basic(USER, PASSWORD))
        assert status == 200
        if path == "/metrics":
            assert b"venzory_db_test_value 42.0" in body


def test_events_token_stands_in_for_basic_auth_on_events_only(pki):
    # One Authorization header cannot carry both: with events.http.token set, /events
    # takes the bearer token, and every other path still needs basic auth.
    with serving(pki.web_config(basic_auth_users={USER: PASSWORD_HASH}), token="events-token-123") as port:
        assert request(port, pki, "POST", "/events", {"Authorization": "Bearer events-token-123"})[0] == 200
        assert request(port, pki, "POST", "/events", {"Authorization": "Bearer wrong"})[0] == 401
        assert request(port, pki, "POST", "/events", basic(USER, PASSWORD))[0] == 401  # not the token
        assert request(port, pki, "GET", "/metrics", {"Authorization": "Bearer events-token-123"})[0] == 401
        assert request(port, pki, "GET", "/metrics", basic(USER, PASSWORD))[0] == 200


def test_htpasswd_style_2y_hashes_are_accepted(pki):
    hashed = PASSWORD_HASH.replace("$2b$", "$2y$", 1)  # what `htpasswd -nBC 10` writes
    with serving(pki.web_config(basic_auth_users={USER: hashed})) as port:
        assert request(port, pki, headers=basic(USER, PASSWORD))[0] == 200


def test_a_successful_check_is_remembered_so_scrapes_cost_one_bcrypt(pki, monkeypatch):
    calls = []
    real = bcrypt.checkpw
    monkeypatch.setattr(bcrypt, "checkpw", lambda password, hashed: calls.append(1) or real(password, hashed))
    with serving(pki.web_config(basic_auth_users={USER: PASSWORD_HASH})) as port:
        for _ in range(20):
            assert request(port, pki, headers=basic(USER, PASSWORD))[0] == 200
        assert len(calls) == 1
        for _ in range(3):  # wrong passwords are never remembered: each one costs a bcrypt
            assert request(port, pki, headers=basic(USER, "guess"))[0] == 401
        assert len(calls) == 4
        assert request(port, pki, headers=basic("nobody", "guess"))[0] == 401
        assert len(calls) == 5, "an unknown user costs a bcrypt too (no user enumeration by timing)"


def test_remembered_success_expires_after_its_last_use(monkeypatch):
    calls = []
    real = bcrypt.checkpw
    monkeypatch.setattr(bcrypt, "checkpw", lambda password, hashed: calls.append(1) or real(password, hashed))
    auth = BasicAuth({USER: PASSWORD_HASH}, remember=0.3)
    header = basic(USER, PASSWORD)["Authorization"]
    assert auth.check(header) and auth.check(header) and len(calls) == 1
    time.sleep(0.4)
    assert auth.check(header) and len(calls) == 2
    assert not auth.check(basic(USER, "x" * 100)["Authorization"])  # over bcrypt's 72 bytes: refused, no error


# -- TLS --------------------------------------------------------------------------------------


def test_plain_http_to_the_tls_port_fails(pki):
    with serving(pki.web_config()) as port:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            connection.request("GET", "/metrics")
            connection.getresponse()
        connection.close()
        assert request(port, pki)[0] == 200  # TLS still works after that


def test_a_client_that_does_not_trust_the_ca_refuses_the_server(pki):
    with serving(pki.web_config()) as port:
        with pytest.raises(ssl.SSLCertVerificationError):
            https(port, context=ssl.create_default_context())


def test_min_version_is_enforced(pki):
    with serving(pki.web_config(tls_server_config={"min_version": "TLS13"})) as port:
        tls12 = pki.client_context()
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):
            https(port, context=tls12)
        assert request(port, pki)[0] == 200


def _refused(port, context) -> bool:
    """The server ends the connection (TLS 1.3 reports a refused client certificate on the
    first read, after the client's side of the handshake is done)."""
    try:
        https(port, context=context)
    except (ssl.SSLError, ConnectionError, http.client.HTTPException):
        return True
    return False


def test_client_certificates_required_and_verified(pki):
    web = pki.web_config(tls_server_config={"client_auth_type": "RequireAndVerifyClientCert",
                                            "client_ca_file": str(pki.ca.cert_file)})
    with serving(web) as port:
        assert _refused(port, pki.client_context())  # no certificate
        assert _refused(port, pki.client_context(pki.rogue_client))  # signed by another CA
        assert request(port, pki, certificate=pki.client)[0] == 200


def test_client_allowed_sans(pki):
    tls = {"client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": str(pki.ca.cert_file)}
    with serving(pki.web_config("ok.yml", tls_server_config={
            **tls, "client_allowed_sans": ["prometheus.monitoring.internal"]})) as port:
        assert request(port, pki, certificate=pki.client)[0] == 200
    with serving(pki.web_config("other.yml", tls_server_config={
            **tls, "client_allowed_sans": ["grafana.monitoring.internal"]})) as port:
        assert _refused(port, pki.client_context(pki.client))


def test_configured_headers_are_on_every_response(pki):
    headers = {"X-Frame-Options": "deny", "X-Content-Type-Options": "nosniff",
               "Strict-Transport-Security": "max-age=31536000"}
    web = pki.web_config(basic_auth_users={USER: PASSWORD_HASH}, http_server_config={"headers": headers})
    with serving(web) as port:
        for auth in ({}, basic(USER, PASSWORD)):  # the 401 too
            _, answer, _ = request(port, pki, headers=auth)
            assert {k: answer[k] for k in headers} == headers


def test_rate_limit_of_the_web_config(pki):
    with serving(pki.web_config(rate_limit={"interval": "10s", "burst": 2})) as port:
        assert [request(port, pki, path="/healthz")[0] for _ in range(2)] == [200, 200]
        status, headers, _ = request(port, pki, path="/healthz")
        assert status == 429 and 1 <= int(headers["Retry-After"]) <= 10


@pytest.mark.parametrize("go_name", sorted(CIPHER_SUITES))
def test_cipher_suite_names_map_to_the_same_openssl_suite(go_name):
    openssl = shutil.which("openssl") or pytest.skip("openssl not installed")
    listed = subprocess.run([openssl, "ciphers", "-stdname", CIPHER_SUITES[go_name]],
                            capture_output=True, text=True, check=True).stdout
    assert any(line.split()[0] == go_name and line.split()[2] == CIPHER_SUITES[go_name]
               for line in listed.splitlines())


def test_cipher_suites_restrict_tls12(pki):
    web = pki.web_config(tls_server_config={"max_version": "TLS12",
                                            "cipher_suites": ["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"]})
    with serving(web) as port:
        context = pki.client_context()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.cipher()[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"
        context.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")  # a client that offers only another suite
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):
            https(port, context=context)


# -- real command-line TLS clients ------------------------------------------------------------


def test_curl(pki):
    curl = shutil.which("curl") or pytest.skip("curl not installed")
    web = pki.web_config(basic_auth_users={USER: PASSWORD_HASH},
                         tls_server_config={"client_auth_type": "VerifyClientCertIfGiven",
                                            "client_ca_file": str(pki.ca.cert_file)})
    with serving(web) as port:
        url = f"https://127.0.0.1:{port}/metrics"

        def code(*args: str) -> str:
            return subprocess.run([curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
                                   str(pki.ca.cert_file), *args, url], capture_output=True, text=True).stdout

        assert code("--user", f"{USER}:{PASSWORD}") == "200"
        assert code("--user", f"{USER}:nope") == "401"
        assert code("--user", f"{USER}:{PASSWORD}", "--cert", str(pki.client[0]), "--key", str(pki.client[1])) == "200"
        assert code("--user", f"{USER}:{PASSWORD}", "--cert", str(pki.rogue_client[0]),
                    "--key", str(pki.rogue_client[1])) == "000"  # handshake refused


def test_openssl_s_client_versions(pki):
    openssl = shutil.which("openssl") or pytest.skip("openssl not installed")
    with serving(pki.web_config(tls_server_config={"min_version": "TLS13"})) as port:
        def handshake(flag: str) -> bool:
            result = subprocess.run([openssl, "s_client", "-connect", f"127.0.0.1:{port}", flag,
                                     "-CAfile", str(pki.ca.cert_file), "-verify_return_error"],
                                    input="", capture_output=True, text=True, timeout=30)
            return result.returncode == 0 and "Verify return code: 0 (ok)" in result.stdout

        assert handshake("-tls1_3")
        assert not handshake("-tls1_2")


# -- time bounds (slow loris) ------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_a_client_that_never_finishes_its_request_is_cut_off(pki, monkeypatch, tls):
    monkeypatch.setattr(server_module, "HEADER_TIMEOUT", 1.0)
    with serving(pki.web_config() if tls else None) as port:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        connection = pki.client_context().wrap_socket(raw, server_hostname="127.0.0.1") if tls else raw
        started = time.monotonic()
        connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        closed = False
        try:
            while time.monotonic() - started < 8:  # a header byte every 0.2 s, never the blank line
                connection.sendall(b"X")
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            closed = True
        if not closed:
            closed = connection.recv(1024) == b""
        elapsed = time.monotonic() - started
        connection.close()
        assert closed and elapsed < 4, f"the server kept a trickling request open for {elapsed:.1f}s"
        # and it still serves everyone else
        if tls:
            assert request(port, pki)[0] == 200
        else:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", "/healthz")
            assert c.getresponse().status == 200


def test_a_silent_tls_client_is_cut_off_during_the_handshake(pki, monkeypatch):
    monkeypatch.setattr(server_module, "HEADER_TIMEOUT", 1.0)
    with serving(pki.web_config()) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            started = time.monotonic()
            assert raw.recv(1024) == b""  # never sent a ClientHello: closed by the server
            assert time.monotonic() - started < 4


# -- the web config file: validated at start ---------------------------------------------------


def _write(tmp_path, text: str):
    path = tmp_path / "web.yml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text, expected", [
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth: x\n",
     "web.yml:4: tls_server_config.client_auth: unknown key"),
    ("basic_auth_users:\n  alice: hunter2-plain-password\n",
     "web.yml:2: basic_auth_users.alice: expected a bcrypt hash"),
    ("tls_server_config:\n  cert_file: /nonexistent/server.crt\n  key_file: /nonexistent/server.key\n",
     "web.yml:2: tls_server_config.cert_file: cannot read /nonexistent/server.crt: No such file or directory"),
    ("tls_server_config:\n  key_file: b\n", "web.yml:1: tls_server_config: cert_file is required"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS14\n",
     "web.yml:4: tls_server_config.min_version: Input should be 'TLS10', 'TLS11', 'TLS12' or 'TLS13'"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAnyClientCert\n",
     "web.yml:4: tls_server_config.client_auth_type: RequireAnyClientCert accepts client certificates without"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
     "tls_server_config: client_auth_type RequireAndVerifyClientCert needs client_ca_file"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
     "web.yml:4: tls_server_config.cipher_suites[0]: unknown cipher suite 'TLS_RSA_WITH_RC4_128_SHA'"),
    ("http_server_config:\n  headers:\n    X-Frame-Options: allowall\n",
     "web.yml:2: http_server_config.headers: X-Frame-Options must be one of deny, sameorigin"),
    ("http_server_config:\n  headers:\n    Set-Cookie: a=b\n", "header 'Set-Cookie' cannot be set"),
    ("- not a mapping\n", "web.yml: expected a mapping at the top"),
    # a key with ':' in it once sent the search for its line into an endless loop (found by test_fuzz)
    ('basic_auth_users:\n  "bad:user": "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"\n',
     "web.yml:2: basic_auth_users.bad:user: a user name must be non-empty and contain no ':'"),
])
def test_invalid_web_configs_name_file_line_and_key(tmp_path, text, expected):
    with pytest.raises(ConfigError) as error:
        load_web_config(_write(tmp_path, text))
    assert expected in str(error.value).replace(str(tmp_path) + "/", "")
    assert "hunter2" not in str(error.value)


def test_a_key_that_does_not_match_the_certificate(pki, tmp_path):
    path = _write(tmp_path, yaml.safe_dump({"tls_server_config": {
        "cert_file": str(pki.server[0]), "key_file": str(pki.client[1])}}))
    with pytest.raises(ConfigError, match=r"web.yml:\d+: tls_server_config.key_file: .* is not an unencrypted "
                                          r"PEM private key matching"):
        load_web_config(path)


def test_relative_paths_are_relative_to_the_web_config(pki):
    folder = pki.folder / "relative"
    folder.mkdir(exist_ok=True)
    for source in pki.server:
        (folder / source.name).write_bytes(source.read_bytes())
    web = folder / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {pki.server[0].name}\n  key_file: {pki.server[1].name}\n")
    assert load_web_config(web).tls is not None


def test_inline_pem_certificate_and_key(pki, tmp_path):
    path = _write(tmp_path, yaml.safe_dump({"tls_server_config": {
        "cert": pki.server[0].read_text(), "key": pki.server[1].read_text()}}))
    with serving(path) as port:
        assert request(port, pki)[0] == 200


def test_an_empty_web_config_is_plain_http(tmp_path):
    settings = load_web_config(_write(tmp_path, ""))
    assert (settings.tls, settings.users, settings.rate_limit) == (None, (), None)


def cli(*args: str, env: dict | None = None, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_run_and_check_config_exit_2_on_an_invalid_web_config(tmp_path):
    from venzory_fixture import SHIPPED_CONFIG

    web = _write(tmp_path, "tls_server_config:\n  cert_file: /missing.crt\n  key_file: /missing.key\n")
    env = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    for args in (["run", "--web.config.file", str(web)], ["run", "--web-config", str(web)],
                 ["check-config", "--web.config.file", str(web)]):
        result = cli(args[0], "--config", str(SHIPPED_CONFIG), *args[1:], env=env)
        assert result.returncode == 2, result.stderr
        assert f"{web}:2: tls_server_config.cert_file: cannot read /missing.crt" in result.stderr
    # the config key (WEB_CONFIG_FILE in the shipped config)
    result = cli("check-config", "--config", str(SHIPPED_CONFIG), env={**env, "WEB_CONFIG_FILE": str(web)})
    assert result.returncode == 2 and "tls_server_config.cert_file" in result.stderr


def test_the_daemon_serves_tls_and_basic_auth(pki, clean_dsn, tmp_path):
    """`run --web.config.file` end to end: the real daemon process on a real database."""
    from support import wait_for
    from venzory_fixture import SHIPPED_CONFIG

    from exporter.pgcluster import free_port

    web = pki.web_config(basic_auth_users={USER: PASSWORD_HASH})
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "run", "--config", str(SHIPPED_CONFIG), "--listen", f"127.0.0.1:{port}",
         "--web.config.file", str(web)],
        env={**os.environ, "DATABASE_URL": clean_dsn}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def ready():
            try:
                return request(port, pki, path="/readyz", headers=basic(USER, PASSWORD))[0] == 200
            except OSError:
                return False

        wait_for(ready, timeout=60, interval=0.2)
        status, _, body = request(port, pki, headers=basic(USER, PASSWORD))
        assert status == 200 and b'venzory_db_up{database="venzory"} 1.0' in body
        assert request(port, pki)[0] == 401
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "TLS, basic auth" in stderr
    assert process.returncode == 0, stderr
