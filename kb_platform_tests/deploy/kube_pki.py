"""The throwaway control plane's PKI (kube_cluster.py): a CA, the API server's serving and
front-proxy certificates, an admin client certificate, the service-account signing keys, and
the admin kubeconfig."""

from __future__ import annotations

import datetime
import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK = "127.0.0.1"
SERVICE_CIDR = "198.51.100.0/24"  # RFC 5737 TEST-NET-2: never bound, never routed
FRONT_PROXY_CLIENT = "front-proxy-client"


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    usages: Sequence[x509.ObjectIdentifier] = (),
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=not ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    if dns or ips:
        names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    service_account_key: Path
    service_account_pub: Path
    front_proxy_ca_cert: Path
    proxy_client_cert: Path
    proxy_client_key: Path


def make_pki(folder: Path) -> Pki:
    """A cluster CA; the API server's serving certificate (127.0.0.1, the kubernetes Service's
    names and address); an admin client certificate (group system:masters); the key pair that
    signs service-account tokens (the API server signs and verifies them, the
    controller-manager mints the legacy token Secrets); a front-proxy CA and the API server's
    client certificate under it (the request-header authentication that the
    controller-manager's and scheduler's delegated authentication, and API aggregation, read)."""
    folder.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate(_name("kb-platform-test-ca"), ca_key, None, ca=True)
    kubernetes_ip = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))
    serving_key = ec.generate_private_key(ec.SECP256R1())
    serving_cert = _certificate(
        _name("kube-apiserver"),
        serving_key,
        (ca_cert, ca_key),
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        dns=[
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
        ips=[LOOPBACK, kubernetes_ip],
    )
    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin_cert = _certificate(
        _name("kb-admin", "system:masters"),
        admin_key,
        (ca_cert, ca_key),
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    sa_key = ec.generate_private_key(ec.SECP256R1())
    front_proxy_ca_key = ec.generate_private_key(ec.SECP256R1())
    front_proxy_ca = _certificate(
        _name("kb-platform-test-front-proxy-ca"), front_proxy_ca_key, None, ca=True
    )
    proxy_client_key = ec.generate_private_key(ec.SECP256R1())
    proxy_client_cert = _certificate(
        _name(FRONT_PROXY_CLIENT),
        proxy_client_key,
        (front_proxy_ca, front_proxy_ca_key),
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    pki = Pki(
        ca_cert=folder / "ca.crt",
        ca_key=folder / "ca.key",
        serving_cert=folder / "apiserver.crt",
        serving_key=folder / "apiserver.key",
        admin_cert=folder / "admin.crt",
        admin_key=folder / "admin.key",
        service_account_key=folder / "sa.key",
        service_account_pub=folder / "sa.pub",
        front_proxy_ca_cert=folder / "front-proxy-ca.crt",
        proxy_client_cert=folder / "front-proxy-client.crt",
        proxy_client_key=folder / "front-proxy-client.key",
    )
    pki.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    _write_key(ca_key, pki.ca_key)
    pki.serving_cert.write_bytes(serving_cert.public_bytes(pem))
    _write_key(serving_key, pki.serving_key)
    pki.admin_cert.write_bytes(admin_cert.public_bytes(pem))
    _write_key(admin_key, pki.admin_key)
    _write_key(sa_key, pki.service_account_key)
    pki.service_account_pub.write_bytes(
        sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    pki.front_proxy_ca_cert.write_bytes(front_proxy_ca.public_bytes(pem))
    pki.proxy_client_cert.write_bytes(proxy_client_cert.public_bytes(pem))
    _write_key(proxy_client_key, pki.proxy_client_key)
    return pki


def write_kubeconfig(path: Path, server: str, pki: Pki) -> None:
    """An admin kubeconfig (JSON, which is YAML) with the certificates' paths."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kb-test",
                "cluster": {"server": server, "certificate-authority": str(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": "kb-admin",
                "user": {
                    "client-certificate": str(pki.admin_cert),
                    "client-key": str(pki.admin_key),
                },
            }
        ],
        "contexts": [{"name": "kb-test", "context": {"cluster": "kb-test", "user": "kb-admin"}}],
        "current-context": "kb-test",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
