"""TLS material for the gateway: our own small CA and a server certificate it signs, or
certificates the plant already has, checked and copied.

The CA is made once and kept: re-provisioning never replaces it unless asked
(``new_ca``), because every client that trusts it would have to be given the new one.
The server certificate is issued again only when its names change or it is about to
expire. Keys are EC P-256, written 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisioning.devices import ProvisioningError

__all__ = ["TlsMaterial", "given_certificate", "own_ca"]

CA_DAYS: Final = 3650
# Private CAs may issue longer, but Apple's clients refuse server certificates valid > 825 days.
SERVER_DAYS: Final = 825
RENEW_BEFORE: Final = dt.timedelta(days=30)


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """Where the files are, and what happened to them on this run."""

    cert: Path
    key: Path
    ca_cert: Path | None  # None: certificates given by the plant
    ca_created: bool = False
    cert_issued: bool = False


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip
    path.unlink(missing_ok=True)  # a new file, so 0600 holds from the first byte
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.chmod(0o644)


def _names(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ProvisioningError(f"{path}: not the EC key this CA was made with")
    return key


def _new_ca(cert_path: Path, key_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "factory-platform"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "factory gateway CA")])  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_cert(cert_path, cert)


def _still_good(cert_path: Path, key_path: Path, ca: x509.Certificate, hosts: tuple[str, ...]) -> bool:
    """The server certificate on disk is for exactly these names, from this CA, and not near expiry."""
    if not (cert_path.is_file() and key_path.is_file()):
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    fresh = cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > RENEW_BEFORE
    return fresh and cert.issuer == ca.subject and set(names) == set(_names(hosts))


def _issue(cert_path: Path, key_path: Path, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
           hosts: tuple[str, ...]) -> None:  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=SERVER_DAYS), ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_names(hosts)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_cert(cert_path, cert)


def own_ca(ca_folder: Path, folder: Path, hosts: tuple[str, ...], *, new_ca: bool = False) -> TlsMaterial:
    """``ca_folder``/ca.crt and ca.key (kept if present, unless ``new_ca``), and ``folder``/server.crt
    and server.key for ``hosts`` (DNS names or IP addresses) signed by that CA. The two folders
    differ so that nginx is given the server's key and never the CA's."""
    if not hosts:
        raise ProvisioningError("the server certificate needs at least one --host name or address")
    ca_folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = ca_folder / "ca.crt", ca_folder / "ca.key"
    cert, key = folder / "server.crt", folder / "server.key"
    created = new_ca or not (ca_cert.is_file() and ca_key.is_file())
    if created:
        _new_ca(ca_cert, ca_key)
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    issue = created or not _still_good(cert, key, ca, hosts)
    if issue:
        _issue(cert, key, ca, _load_key(ca_key), hosts)
    return TlsMaterial(cert, key, ca_cert, ca_created=created, cert_issued=issue)


def given_certificate(folder: Path, cert_file: Path, key_file: Path) -> TlsMaterial:
    """Copy the plant's certificate (chain, PEM) and key into ``folder`` after checking that
    they belong together."""
    try:
        chain = x509.load_pem_x509_certificates(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        raise ProvisioningError(f"--cert {cert_file} / --key {key_file}: {exc}") from exc
    if chain[0].public_key() != key.public_key():
        raise ProvisioningError(f"--key {key_file} is not the key of the certificate in --cert {cert_file}")
    folder.mkdir(parents=True, exist_ok=True)
    cert, key_path = folder / "server.crt", folder / "server.key"
    cert.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    cert.chmod(0o644)
    key_path.unlink(missing_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_file.read_bytes())
    return TlsMaterial(cert, key_path, None, cert_issued=True)
