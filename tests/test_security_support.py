"""Helpers shared by the security tests (no tests here): a throwaway CA with server and
client certificates, web config files, and real HTTPS requests on 127.0.0.1."""

from __future__ import annotations

import base64
import datetime
import http.client
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

USER, PASSWORD = "prometheus", "s3cret-Scrape-Pw"
# Cost 4 (the minimum) keeps the suite fast; the server treats every cost alike.
PASSWORD_HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@dataclass
class CA:
    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    cert_file: Path

    @classmethod
    def create(cls, folder: Path, name: str) -> CA:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        cert_file = folder / f"{name}.crt"
        _write_cert(cert, cert_file)
        return cls(name, key, cert, cert_file)

    def issue(self, folder: Path, name: str, sans: list[x509.GeneralName], server: bool) -> tuple[Path, Path]:
        """A leaf certificate signed by this CA -> (cert file, key file)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = x509.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.ExtendedKeyUsageOID.CLIENT_AUTH
        cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(self.cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(self.key, hashes.SHA256()))
        cert_file, key_file = folder / f"{name}.crt", folder / f"{name}.key"
        _write_cert(cert, cert_file)
        _write_key(key, key_file)
        return cert_file, key_file


@dataclass
class Pki:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate of the CA,
    and a client certificate of another CA (which must be refused)."""

    folder: Path
    ca: CA
    server: tuple[Path, Path]
    client: tuple[Path, Path]
    rogue_client: tuple[Path, Path]

    @classmethod
    def create(cls, folder: Path) -> Pki:
        ca, rogue = CA.create(folder, "test-ca"), CA.create(folder, "rogue-ca")
        server = ca.issue(folder, "server", [x509.DNSName("localhost"),
                                             x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], server=True)
        client = ca.issue(folder, "client", [x509.DNSName("prometheus.monitoring.internal")], server=False)
        rogue_client = rogue.issue(folder, "rogue-client", [x509.DNSName("prometheus.monitoring.internal")],
                                   server=False)
        return cls(folder, ca, server, client, rogue_client)

    def web_config(self, name: str = "web.yml", **sections) -> Path:
        """A web config whose TLS section points at the server certificate; `sections`
        are merged in (tls_server_config keys are added to its defaults)."""
        tls = {"cert_file": str(self.server[0]), "key_file": str(self.server[1])}
        tls.update(sections.pop("tls_server_config", {}))
        path = self.folder / name
        path.write_text(yaml.safe_dump({"tls_server_config": tls, **sections}), encoding="utf-8")
        return path

    def client_context(self, certificate: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca.cert_file))
        if certificate:
            context.load_cert_chain(str(certificate[0]), str(certificate[1]))
        return context


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def https(port: int, path: str = "/metrics", *, context: ssl.SSLContext, method: str = "GET",
          body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict[str, str], bytes]:
    """One real HTTPS request to 127.0.0.1 -> (status, headers, body)."""
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=15)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()
