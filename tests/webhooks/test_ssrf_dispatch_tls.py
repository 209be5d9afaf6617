"""https through the pinned address: the connection goes to the address the guard checked, while TLS sees the
endpoint's name (SNI, and the certificate checked against the name, not the IP)."""

from __future__ import annotations

import datetime as dt
import ssl
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.webhooks.models import Attempt
from tests.webhooks.dispatching import FAST, dispatch_once, endpoint_new, message_make

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

NAME = "hooks.example.test"


def _certificate(subject: str, issuer: x509.Name, key: Any, signer: Any, *, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
    return builder.sign(signer, hashes.SHA256())


class TLSServer:
    """HTTPS on 127.0.0.2 with a certificate for ``NAME`` from a throwaway CA; records the SNI names it saw."""

    def __init__(self, directory: Path) -> None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Atrium test CA")])
        ca = _certificate("Atrium test CA", ca_name, ca_key, ca_key, ca=True)
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = _certificate(NAME, ca_name, key, ca_key, ca=False)
        (directory / "leaf.pem").write_bytes(
            leaf.public_bytes(serialization.Encoding.PEM)
            + key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self.client_context = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.load_cert_chain(directory / "leaf.pem")
        self.sni: list[str | None] = []
        self.paths: list[str] = []

        def sni_callback(sock: Any, name: str | None, context: Any) -> None:
            self.sni.append(name)

        server_context.sni_callback = sni_callback
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.httpd.socket = server_context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_https_goes_to_the_pinned_address_with_the_name_for_sni_and_the_certificate(tmp_path):
    server = TLSServer(tmp_path)
    try:
        good, _ = endpoint_new(f"https://{NAME}:{server.port}/ok")
        wrong, _ = endpoint_new(f"https://other.example.test:{server.port}/wrong")
        message_make([good, wrong])

        config = replace(
            FAST,
            allow=("127.0.0.2/32",),
            resolver=lambda host, port: ["127.0.0.2"],
            ssl_context=server.client_context,
            schedule=(0,),
        )
        dispatch_once(config)

        [ok] = Attempt.objects.filter(endpoint_id=good.id)
        assert (ok.status_code, ok.error) == (200, "")
        [refused] = Attempt.objects.filter(endpoint_id=wrong.id)
        assert (refused.status_code, refused.error) == (None, "tls")  # the certificate is not for that name
        assert server.paths == ["/ok"]
        assert NAME in server.sni
        assert "127.0.0.2" not in server.sni
    finally:
        server.stop()
