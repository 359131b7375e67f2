"""TLS material for the Redis deployments of the tests and benchmarks: a private CA and the
certificates issued by it (and by an unrelated CA), written as PEM files with trustme."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import trustme


class TlsMaterial:
    """PEM files for TLS tests, written under ``directory`` with trustme: a private CA, a
    server certificate for 127.0.0.1 and localhost (also the nodes' client certificate towards
    each other), a client certificate, and an unrelated CA with a client certificate of its
    own, for the tests where one side trusts the wrong authority."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="rasa-omnichannel test CA")
        unrelated = trustme.CA(organization_name="unrelated CA")
        self.ca_file = self._write(ca.cert_pem, "ca.pem")
        self.wrong_ca_file = self._write(unrelated.cert_pem, "wrong-ca.pem")
        self.server_cert_file, self.server_key_file = self._issue(
            ca, "server", "127.0.0.1", "localhost"
        )
        self.client_cert_file, self.client_key_file = self._issue(ca, "client", "omni-client")
        self.stranger_cert_file, self.stranger_key_file = self._issue(
            unrelated, "stranger", "omni-client"
        )

    def _write(self, blob: trustme.Blob, name: str) -> Path:
        path = self.directory / name
        blob.write_to_path(str(path))
        return path

    def _issue(self, ca: trustme.CA, name: str, *identities: str) -> Tuple[Path, Path]:
        cert = ca.issue_cert(*identities)
        return (
            self._write(cert.cert_chain_pems[0], f"{name}.pem"),
            self._write(cert.private_key_pem, f"{name}.key"),
        )

    def server_args(self, client_certificates: str = "optional") -> List[str]:
        """redis-server options: this CA's server certificate; ``client_certificates`` is
        Redis's ``tls-auth-clients``: "optional" (a client may present a certificate, then it
        must be this CA's, or none) or "yes" (a client without one is refused)."""
        return [
            "--tls-cert-file",
            str(self.server_cert_file),
            "--tls-key-file",
            str(self.server_key_file),
            "--tls-ca-cert-file",
            str(self.ca_file),
            "--tls-auth-clients",
            client_certificates,
        ]

    def client_kwargs(self) -> Dict[str, object]:
        """redis-py options for a client that trusts this CA and shows its client certificate."""
        return {
            "ssl": True,
            "ssl_ca_certs": str(self.ca_file),
            "ssl_certfile": str(self.client_cert_file),
            "ssl_keyfile": str(self.client_key_file),
        }
