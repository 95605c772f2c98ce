"""A throw-away CA and a server certificate for the test API server, made with the openssl CLI.

The server certificate names the loopback addresses (127.0.0.1, ::1, localhost) as a real
kube-apiserver's names its service IP, so that a client verifying ca.crt with hostname
checks on connects exactly as it would in a pod. A second, unrelated CA lets tests prove
that verification is really on.
"""

import os
import subprocess

SERVER_NAMES = "IP:127.0.0.1,IP:::1,DNS:localhost,DNS:kubernetes.default.svc"


class Certs:
    """Paths of one set: the CA that signed the server, the server's pair, a stranger CA."""

    def __init__(self, directory):
        self.directory = directory
        self.ca_crt = os.path.join(directory, "ca.crt")
        self.server_crt = os.path.join(directory, "server.crt")
        self.server_key = os.path.join(directory, "server.key")
        self.other_ca_crt = os.path.join(directory, "other-ca.crt")


def openssl(*args, cwd):
    subprocess.run(
        ("openssl",) + args, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def make_ca(directory, stem, subject):
    openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        subject,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        stem + ".key",
        "-out",
        stem + ".crt",
        cwd=directory,
    )


def make_certs(directory):
    """Generate (or reuse, when already there) the CA and the server certificate in `directory`."""
    certs = Certs(directory)
    if all(
        os.path.exists(p)
        for p in (certs.ca_crt, certs.server_crt, certs.server_key, certs.other_ca_crt)
    ):
        return certs
    os.makedirs(directory, exist_ok=True)
    make_ca(directory, "ca", "/CN=kubexit-test-ca")
    make_ca(directory, "other-ca", "/CN=some-other-ca")
    with open(os.path.join(directory, "server.ext"), "w") as ext:
        ext.write(
            "subjectAltName=%s\n" % SERVER_NAMES
            + "basicConstraints=critical,CA:FALSE\n"
            + "keyUsage=critical,digitalSignature,keyEncipherment\n"
            + "extendedKeyUsage=serverAuth\n"
            + "subjectKeyIdentifier=hash\n"
            + "authorityKeyIdentifier=keyid,issuer\n"
        )
    openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=kube-apiserver",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        cwd=directory,
    )
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
        cwd=directory,
    )
    return certs
