"""raykit.tls: the cluster's CA and each node's certificate, issued again only where needed."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

import pytest
from cryptography import x509

from raykit import tls

NODES = {"raylab-1": "10.77.0.11", "raylab-2": "10.77.0.12"}


def test_certificates_are_issued_once_and_again_only_where_a_node_changed(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    assert tls.ensure(folder, NODES, 365, 30, "raylab-1") == dict.fromkeys(NODES, "no certificate yet")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o600}
    first = (folder / "raylab-1.crt").read_bytes()
    assert tls.ensure(folder, NODES, 365, 30, "raylab-1") == dict.fromkeys(NODES, "")
    moved = {**NODES, "raylab-2": "10.77.0.22"}
    assert tls.ensure(folder, moved, 365, 30, "raylab-1") == {
        "raylab-1": "",
        "raylab-2": "its names differ from raylab-2 (10.77.0.22)",
    }
    assert (folder / "raylab-1.crt").read_bytes() == first
    cert = x509.load_pem_x509_certificate((folder / "raylab-2.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.77.0.22" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    assert "raylab-2" in sans.get_values_for_type(x509.DNSName)


def test_a_certificate_close_to_its_end_from_another_ca_or_without_its_key_is_issued_again(tmp_path: Path) -> None:
    key, ca = tls.load_or_make_ca(tmp_path, "c")
    cert_pem, key_pem = tls.issue(key, ca, "raylab-1", "10.77.0.11", 10)
    (tmp_path / "n.key").write_bytes(key_pem)
    cert, node_key = x509.load_pem_x509_certificate(cert_pem), tls.load_key(tmp_path / "n.key")
    assert tls.reissue_reason(cert, node_key, ca, "raylab-1", "10.77.0.11", 5, tls.now()) == ""
    assert tls.reissue_reason(cert, node_key, ca, "raylab-1", "10.77.0.11", 30, tls.now()).startswith("expires ")
    later = tls.now() + datetime.timedelta(days=20)
    assert tls.reissue_reason(cert, node_key, ca, "raylab-1", "10.77.0.11", 5, later).startswith("expires ")
    # A CA made anew under the same name is another CA.
    (tmp_path / "again").mkdir()
    _, same_name = tls.load_or_make_ca(tmp_path / "again", "c")
    assert same_name.subject == ca.subject
    assert (
        tls.reissue_reason(cert, node_key, same_name, "raylab-1", "10.77.0.11", 5, tls.now()) == "signed by another CA"
    )
    _, other_key = tls.issue(key, ca, "raylab-1", "10.77.0.11", 10)
    (tmp_path / "other.key").write_bytes(other_key)
    other = tls.load_key(tmp_path / "other.key")
    assert (
        tls.reissue_reason(cert, other, ca, "raylab-1", "10.77.0.11", 5, tls.now())
        == "its key is not the certificate's"
    )


def test_a_lost_ca_that_hosts_hold_and_a_renewal_longer_than_the_life_are_refused(tmp_path: Path) -> None:
    with pytest.raises(tls.TLSError, match=r"ray_tls_days \(20\) must be more than ray_tls_renew_days \(30\)"):
        tls.ensure(tmp_path / "a", NODES, 20, 30, "raylab-1")
    with pytest.raises(tls.TLSError, match=r"no cluster CA .* but raylab-2 hold one"):
        tls.ensure(tmp_path / "b", NODES, 365, 30, "raylab-1", held_by=["raylab-2"])
    assert not (tmp_path / "b").exists()
    tls.ensure(tmp_path / "c", NODES, 365, 30, "raylab-1")
    assert tls.ensure(tmp_path / "c", NODES, 365, 30, "raylab-1", held_by=list(NODES)) == dict.fromkeys(NODES, "")
