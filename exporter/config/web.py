"""The web config file (`run --web.config.file FILE`): TLS, basic auth, response headers
and a request rate limit for every HTTP endpoint.

The format is that of Prometheus' exporter-toolkit (node_exporter, postgres_exporter, ...),
so one file and one habit serve all exporters. Python's ssl module cannot do everything
Go's crypto/tls does; what is supported, approximated or refused is listed in
docs/security.md. Unknown keys are errors, as in the main config.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, field_validator, model_validator

from exporter.config.loader import ConfigError, problem_at, read_yaml, validation_error
from exporter.config.types import Strict, parse_duration

ClientAuthType = Literal["NoClientCert", "RequestClientCert", "RequireAnyClientCert",
                         "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"]
# Python's ssl verifies every client certificate it asks for: Go's "ask but do not
# verify" modes have no equivalent (and exporter-toolkit calls them insecure).
CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
               "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
TLSVersionName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# Go's secure cipher suites (crypto/tls CipherSuites(), the ones exporter-toolkit accepts)
# by their Go/IANA name -> OpenSSL's name. They apply to TLS 1.2 and below.
CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
# TLS 1.3 suites are not configurable, in Go as in Python: accepted and ignored.
TLS13_SUITES = frozenset({"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"})
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1", "X25519": "X25519"}
# The headers exporter-toolkit lets a web config add, with the values it accepts.
HEADERS = {"Content-Security-Policy": None, "X-Frame-Options": ("deny", "sameorigin"),
           "X-Content-Type-Options": ("nosniff",), "X-XSS-Protection": None, "Strict-Transport-Security": None}
_BCRYPT_HASH = re.compile(r"\$2[abxy]\$\d\d\$[./A-Za-z0-9]{53}")
REALM = 'Basic realm="venzory-db-exporter", charset="UTF-8"'


def _cipher_suite(name: str) -> str:
    if name not in CIPHER_SUITES and name not in TLS13_SUITES:
        raise ValueError(f"unknown cipher suite {name!r} (use Go's names, e.g. TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256;"
                         " docs/security.md lists them)")
    return name


def _curve(name: str) -> str:
    if name not in CURVES:
        raise ValueError(f"unknown curve {name!r} (one of {', '.join(CURVES)})")
    return name


class TLSServerConfig(Strict):
    cert_file: str | None = None
    key_file: str | None = None
    cert: str | None = None  # inline PEM instead of cert_file
    key: str | None = None  # inline PEM instead of key_file
    client_auth_type: ClientAuthType = "NoClientCert"
    client_ca_file: str | None = None
    client_ca: str | None = None  # inline PEM instead of client_ca_file
    client_allowed_sans: list[str] = []
    min_version: TLSVersionName = "TLS12"
    max_version: TLSVersionName = "TLS13"
    cipher_suites: list[Annotated[str, AfterValidator(_cipher_suite)]] = []
    prefer_server_cipher_suites: bool = True
    curve_preferences: list[Annotated[str, AfterValidator(_curve)]] = []

    @field_validator("client_auth_type")
    @classmethod
    def _verifiable(cls, value: str) -> str:
        if value not in CLIENT_AUTH:
            raise ValueError(f"{value} accepts client certificates without verifying them, which Python's ssl "
                             "module cannot do: use RequireAndVerifyClientCert (or VerifyClientCertIfGiven)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TLSServerConfig:
        for what in ("cert", "key", "client_ca"):
            if getattr(self, what) and getattr(self, f"{what}_file"):
                raise ValueError(f"{what} and {what}_file are both set: use one")
        if not (self.cert or self.cert_file):
            raise ValueError("cert_file is required (or cert, inline)")
        if not (self.key or self.key_file):
            raise ValueError("key_file is required (or key, inline)")
        has_ca = bool(self.client_ca or self.client_ca_file)
        if self.client_auth_type != "NoClientCert" and not has_ca:
            raise ValueError(f"client_auth_type {self.client_auth_type} needs client_ca_file (or client_ca)")
        if has_ca and self.client_auth_type == "NoClientCert":
            raise ValueError("client_ca_file is set but client_auth_type is NoClientCert: client certificates "
                             "would not be asked for; set client_auth_type: RequireAndVerifyClientCert")
        if self.client_allowed_sans and self.client_auth_type != "RequireAndVerifyClientCert":
            raise ValueError("client_allowed_sans needs client_auth_type: RequireAndVerifyClientCert")
        if TLS_VERSIONS[self.min_version] > TLS_VERSIONS[self.max_version]:
            raise ValueError(f"min_version {self.min_version} is above max_version {self.max_version}")
        return self


class HTTPServerConfig(Strict):
    http2: bool = True  # accepted for compatibility; the server speaks HTTP/1.1 only
    headers: dict[str, str] = {}

    @field_validator("headers")
    @classmethod
    def _known_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if name not in HEADERS:
                raise ValueError(f"header {name!r} cannot be set (one of {', '.join(HEADERS)})")
            allowed = HEADERS[name]
            if allowed and value.lower() not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}")
            if "\n" in value or "\r" in value:
                raise ValueError(f"{name}: a header value cannot contain a line break")
        return headers


def _interval(value: object) -> float:
    # 0 switches the limit off (exporter-toolkit's convention).
    if value == 0 or (isinstance(value, str) and re.fullmatch(r"\s*0+(\.0*)?\s*(ms|s|m|h|d)?\s*", value)):
        return 0.0
    return parse_duration(value)


class RateLimitConfig(Strict):
    interval: Annotated[float, BeforeValidator(_interval)] = 0.0  # between two requests; 0 = no limit
    burst: Annotated[int, Field(ge=1)] = 1


def _user(name: str) -> str:
    if not name or ":" in name:
        raise ValueError("a user name must be non-empty and contain no ':' (basic auth splits on it)")
    return name


def _bcrypt_hash(value: str) -> str:
    # Never quote the value: a password pasted here by mistake must not land in an error.
    if not _BCRYPT_HASH.fullmatch(value):
        raise ValueError("expected a bcrypt hash like $2y$10$... (docs/security.md says how to make one)")
    return value


class WebConfig(Strict):
    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig = HTTPServerConfig()
    basic_auth_users: dict[Annotated[str, AfterValidator(_user)], Annotated[str, AfterValidator(_bcrypt_hash)]] = {}
    rate_limit: RateLimitConfig | None = None


# -- what the server runs with ----------------------------------------------------------------


@dataclass(frozen=True)
class WebSettings:
    """A validated web config, ready for the server: built once at start."""

    file: str
    tls: ssl.SSLContext | None = None
    allowed_sans: frozenset[str] = frozenset()
    users: tuple[tuple[str, str], ...] = ()  # basic auth: user -> bcrypt hash
    headers: tuple[tuple[str, str], ...] = ()
    rate_limit: tuple[float, int] | None = None  # (requests per second, burst)
    notes: tuple[str, ...] = field(default=())  # settings accepted but not applied, for the start log

    def client_allowed(self, peer_certificate: dict[str, Any] | None) -> bool:
        """client_allowed_sans: the verified client certificate names one of them."""
        if not self.allowed_sans:
            return True
        names = {_normal_san(kind, value) for kind, value in (peer_certificate or {}).get("subjectAltName", ())}
        return bool(names & self.allowed_sans)


def _normal_san(kind: str, value: str) -> str:
    if kind == "IP Address":
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(value.strip()))
    return value


def load_web_config(file: str | Path) -> WebSettings:
    """Read and validate the web config, load its certificates: a ConfigError naming
    file, line and key for anything that would fail later."""
    file = str(file)
    raw, lines = read_yaml(file)
    if raw is None:
        raw = {}  # an empty file: plain HTTP, no auth (as in exporter-toolkit)
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: expected a mapping at the top (tls_server_config:, basic_auth_users:, ...)")
    try:
        config = WebConfig.model_validate(raw)
    except ValidationError as e:
        raise validation_error(file, lines, raw, e) from None
    base = Path(file).resolve().parent  # relative paths are relative to the web config, as in exporter-toolkit
    notes: list[str] = []
    tls: ssl.SSLContext | None = None
    sans: frozenset[str] = frozenset()
    if config.tls_server_config is not None:
        tls = _ssl_context(config.tls_server_config, base, file, lines, notes)
        sans = frozenset(_normal_san("IP Address", s) if _is_ip(s) else s
                         for s in config.tls_server_config.client_allowed_sans)
    rate = config.rate_limit
    return WebSettings(
        file=file, tls=tls, allowed_sans=sans,
        users=tuple(config.basic_auth_users.items()),
        headers=tuple(config.http_server_config.headers.items()),
        rate_limit=(1 / rate.interval, rate.burst) if rate and rate.interval > 0 else None,
        notes=tuple(notes),
    )


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


Problem = Callable[[str, str], ConfigError]  # (key under tls_server_config, text) -> the error


def _ssl_context(tls: TLSServerConfig, base: Path, file: str, lines: dict[str, int],
                 notes: list[str]) -> ssl.SSLContext:
    def problem(key: str, text: str) -> ConfigError:
        return problem_at(file, lines, f"tls_server_config.{key}", text)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    _load_certificate(context, tls, base, problem)
    context.verify_mode = CLIENT_AUTH[tls.client_auth_type]
    _load_client_ca(context, tls, base, problem)
    _set_ciphers(context, tls, problem, notes)
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.curve_preferences:
        # Python's ssl takes one curve: the first preference is the only one offered.
        context.set_ecdh_curve(CURVES[tls.curve_preferences[0]])
        if len(tls.curve_preferences) > 1:
            notes.append(f"tls_server_config.curve_preferences: only the first, {tls.curve_preferences[0]}, "
                         "is used (Python's ssl module takes one curve)")
    context.set_alpn_protocols(["http/1.1"])
    return context


def _load_certificate(context: ssl.SSLContext, tls: TLSServerConfig, base: Path, problem: Problem) -> None:
    cert_key = "cert_file" if tls.cert_file else "cert"
    key_key = "key_file" if tls.key_file else "key"
    with _pem(tls.cert_file, tls.cert, base, lambda t: problem(cert_key, t)) as cert, \
            _pem(tls.key_file, tls.key, base, lambda t: problem(key_key, t)) as key:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
        except ssl.SSLError:
            raise problem(cert_key, f"no PEM certificate in {_shown(tls.cert_file)}") from None
        try:
            # The empty password: an encrypted key fails here instead of prompting on a terminal.
            context.load_cert_chain(cert, key, password=b"")
        except ssl.SSLError as e:
            raise problem(key_key, f"{_shown(tls.key_file)} is not an unencrypted PEM private key matching "
                                   f"{_shown(tls.cert_file)} ({e.reason or e})") from None


def _load_client_ca(context: ssl.SSLContext, tls: TLSServerConfig, base: Path, problem: Problem) -> None:
    if not (tls.client_ca_file or tls.client_ca):
        return
    ca_key = "client_ca_file" if tls.client_ca_file else "client_ca"
    try:
        if tls.client_ca_file:
            context.load_verify_locations(cafile=str(base / tls.client_ca_file))
        else:
            context.load_verify_locations(cadata=tls.client_ca)
    except FileNotFoundError as e:
        raise problem(ca_key, f"cannot read {base / str(tls.client_ca_file)}: {e.strerror}") from None
    except (ssl.SSLError, OSError, ValueError):
        raise problem(ca_key, f"no PEM CA certificate in {_shown(tls.client_ca_file)}") from None


def _set_ciphers(context: ssl.SSLContext, tls: TLSServerConfig, problem: Problem, notes: list[str]) -> None:
    wanted = [CIPHER_SUITES[name] for name in tls.cipher_suites if name in CIPHER_SUITES]
    if wanted:
        try:
            context.set_ciphers(":".join(wanted))
        except ssl.SSLError:
            raise problem("cipher_suites", "none of these cipher suites is available in this OpenSSL build") from None
        available = {c["name"] for c in context.get_ciphers()}
        missing = [name for name in tls.cipher_suites if CIPHER_SUITES.get(name, "") not in available
                   and name not in TLS13_SUITES]
        if missing:
            raise problem("cipher_suites", f"not available in this OpenSSL build: {', '.join(missing)}")
    if any(name in TLS13_SUITES for name in tls.cipher_suites):
        notes.append("tls_server_config.cipher_suites: TLS 1.3 suites are not configurable; "
                     "they are accepted and ignored")


def _shown(path: str | None) -> str:
    return path or "the inline PEM"


@contextlib.contextmanager
def _pem(path: str | None, inline: str | None, base: Path, problem: Callable[[str], ConfigError]) -> Iterator[str]:
    """A file name for a PEM given as a file (checked readable) or inline. An inline PEM
    goes to an anonymous in-memory file: a private key never touches the disk."""
    if path:
        full = base / path
        try:
            with open(full, "rb"):
                pass
        except OSError as e:
            raise problem(f"cannot read {full}: {e.strerror or type(e).__name__}") from None
        yield str(full)
        return
    fd = os.memfd_create("venzory-web-pem", os.MFD_CLOEXEC)
    try:
        os.write(fd, (inline or "").encode())
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)
