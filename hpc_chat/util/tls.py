"""TLS for channels between hpc_chat's own processes, pinned to a certificate made for one run.

The token hub (:mod:`hpc_chat.driver.token_hub`) listens on a TCP port that every user of the node
can reach, and answers cross the cluster's network. So the hub makes a fresh self-signed
certificate when it starts (an ECDSA P-256 key that never leaves its process, through the
``cryptography`` library), and every stream's description carries that certificate to the
workers inside the Parsl task (itself sent over Parsl's CurveZMQ). A worker trusts that one
certificate and nothing else: whoever else listens on the port (a user who bound 127.0.0.1 on a
compute node first) cannot finish the handshake, and is never sent a byte of the answer.
The per-stream secret a worker then sends inside TLS proves to the hub that the worker holds
the task. TLS 1.3 only; no hand-made cryptography.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile

CERT_DAYS = 30  # longer than any walltime; the certificate dies with its process anyway


def server_context() -> tuple[ssl.SSLContext, str]:
    """A server context with a new key and self-signed certificate, and that certificate as
    PEM text (what clients pin)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hpc_chat token hub")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # load_cert_chain reads files only: a private directory, removed at once.
    with tempfile.TemporaryDirectory(prefix="hpc_chat-tls-") as private:
        path = os.path.join(private, "hub.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key_pem + pem)
        ctx.load_cert_chain(path)
    return ctx, pem.decode()


def client_context(pem: str) -> ssl.SSLContext:
    """A client context that trusts the one certificate ``pem`` (any host name: the
    certificate is the identity)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=pem)
    return ctx
