"""The cluster's TLS (ray_tls): a CA on the controller and a certificate per node, whose SANs
carry the node's name and address. A certificate is issued again only where it is missing,
expires soon, names another host or address, or was signed by another CA.

    python -m raykit.tls --dir ~/.config/raykit/HEAD.tls --days 365 --renew-days 30 NAME=IP ...

prints {NAME: why it was issued, or ""}; the keys are never printed.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from raykit.private import write_private

CA_DAYS = 3650
PUBLIC = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class TLSError(Exception):
    """A problem the user can fix; shown as one line."""


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    pkcs8 = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())


def load_or_make_ca(folder: Path, cluster: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key_path, cert_path = folder / "ca.key", folder / "ca.crt"
    if key_path.exists() and cert_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key, x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"raykit CA for {cluster}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - datetime.timedelta(minutes=5))
        .not_valid_after(now() + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    write_private(key_path, key_pem(key))
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def subject_names(name: str, ip: str) -> list[x509.GeneralName]:
    """The node's name and address, and loopback: Ray's processes on a node also call each other
    there. Addresses also as DNS names, which is how Ray's own test certificates carry them."""
    return [
        x509.DNSName(name),
        x509.DNSName("localhost"),
        x509.DNSName(ip),
        x509.IPAddress(ipaddress.ip_address(ip)),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]


def reissue_reason(
    cert: x509.Certificate | None,
    key: ec.EllipticCurvePrivateKey | None,
    ca: x509.Certificate,
    name: str,
    ip: str,
    renew_days: int,
    at: datetime.datetime,
) -> str:
    """Why the node needs a new certificate ("" when the one it has, and its key, are good)."""
    if cert is None or key is None:
        return "no certificate yet"
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "signed by another CA"
    if cert.public_key().public_bytes(*PUBLIC) != key.public_key().public_bytes(*PUBLIC):
        return "its key is not the certificate's"
    if cert.not_valid_after_utc - at < datetime.timedelta(days=renew_days):
        return f"expires {cert.not_valid_after_utc:%Y-%m-%d}"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    if set(sans) != set(subject_names(name, ip)):
        return f"its names differ from {name} ({ip})"
    return ""


def issue(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, name: str, ip: str, days: int
) -> tuple[bytes, bytes]:
    """A certificate for both ends of Ray's mutual TLS (server and client), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - datetime.timedelta(minutes=5))
        .not_valid_after(now() + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(subject_names(name, ip)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH, x509.ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)


def load_key(path: Path) -> ec.EllipticCurvePrivateKey | None:
    if not path.exists():
        return None
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def ensure(
    folder: Path, nodes: dict[str, str], days: int, renew_days: int, cluster: str, held_by: Sequence[str] = ()
) -> dict[str, str]:
    """Every node's certificate in folder, issued again where it needs it: node -> why ("" if not).
    held_by: the hosts that already hold a CA's certificate, which a new CA would lock out."""
    if days <= renew_days:
        raise TLSError(f"ray_tls_days ({days}) must be more than ray_tls_renew_days ({renew_days})")
    if held_by and not ((folder / "ca.key").exists() and (folder / "ca.crt").exists()):
        raise TLSError(
            f"the controller has no cluster CA in {folder}, but {', '.join(held_by)} hold one: restore that "
            "folder from a backup and deploy again, or deploy once with ray_tls: false and then with "
            "ray_tls: true, which makes a new CA (every node restarts twice). Nothing was changed"
        )
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    ca_key, ca = load_or_make_ca(folder, cluster)
    reasons = {}
    for name, ip in sorted(nodes.items()):
        cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes()) if cert_path.exists() else None
        reasons[name] = reissue_reason(cert, load_key(key_path), ca, name, ip, renew_days, now())
        if reasons[name]:
            cert_pem, node_key = issue(ca_key, ca, name, ip, days)
            write_private(key_path, node_key)
            write_private(cert_path, cert_pem)
    return reasons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="the controller's folder of the CA and certificates")
    parser.add_argument("--cluster", required=True, help="the cluster's name (its head), for the CA's name")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--renew-days", type=int, default=30)
    parser.add_argument("--held-by", action="append", default=[], help="a host that already holds a CA certificate")
    parser.add_argument("nodes", nargs="+", help="NAME=IP of every node")
    args = parser.parse_args(argv)
    nodes = dict(node.split("=", 1) for node in args.nodes)
    try:
        reasons = ensure(args.dir.expanduser(), nodes, args.days, args.renew_days, args.cluster, args.held_by)
    except TLSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(reasons))
    return 0


if __name__ == "__main__":
    sys.exit(main())
