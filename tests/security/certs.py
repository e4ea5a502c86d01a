"""Throwaway certificates for the TLS tests, made with ``trustme``.

One CA signs a server certificate for 127.0.0.1 and localhost and a client
certificate; a second, unrelated CA signs a "stranger" client certificate that
an mTLS server must refuse. Everything is written as PEM files under a
directory the caller owns (usually ``tmp_path``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class Certs:
    """Paths and bytes of one CA, its server and client certificates, and a stranger's."""

    ca_file: Path
    server_cert_file: Path
    server_key_file: Path
    client_cert_file: Path
    client_key_file: Path
    stranger_cert_file: Path
    stranger_key_file: Path

    @property
    def ca(self) -> bytes:
        return self.ca_file.read_bytes()

    @property
    def client_cert(self) -> bytes:
        return self.client_cert_file.read_bytes()

    @property
    def client_key(self) -> bytes:
        return self.client_key_file.read_bytes()

    @property
    def stranger_cert(self) -> bytes:
        return self.stranger_cert_file.read_bytes()

    @property
    def stranger_key(self) -> bytes:
        return self.stranger_key_file.read_bytes()


def make_certs(directory: Path) -> Certs:
    """A CA, a server certificate (SAN 127.0.0.1, localhost), a client and a stranger."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="auditsvc test CA")
    server = ca.issue_cert("127.0.0.1", "localhost", common_name="auditsvc-server")
    client = ca.issue_cert("client.auditsvc.test", common_name="auditsvc-client")
    other_ca = trustme.CA(organization_name="someone else's CA")
    stranger = other_ca.issue_cert("stranger.example", common_name="stranger")

    certs = Certs(
        ca_file=directory / "ca.pem",
        server_cert_file=directory / "server.pem",
        server_key_file=directory / "server.key",
        client_cert_file=directory / "client.pem",
        client_key_file=directory / "client.key",
        stranger_cert_file=directory / "stranger.pem",
        stranger_key_file=directory / "stranger.key",
    )
    ca.cert_pem.write_to_path(str(certs.ca_file))
    _write_chain(server, certs.server_cert_file)
    server.private_key_pem.write_to_path(str(certs.server_key_file))
    _write_chain(client, certs.client_cert_file)
    client.private_key_pem.write_to_path(str(certs.client_key_file))
    _write_chain(stranger, certs.stranger_cert_file)
    stranger.private_key_pem.write_to_path(str(certs.stranger_key_file))
    return certs


def _write_chain(cert: trustme.LeafCert, path: Path) -> None:
    path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
