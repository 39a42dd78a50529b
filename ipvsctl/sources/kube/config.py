"""Where the Kubernetes API server is and how to authenticate to it: kubeconfig files or in-cluster.

``load_config`` tries, in order: the kubeconfig given on the command line, the files in
``$KUBECONFIG``, the service-account files a pod gets, and ``~/.kube/config``. What it finds becomes
a frozen ClusterConfig. Everything that can be checked early (files exist, base64 decodes, the
certificates load) is checked here, and each failure is a KubeConfigError naming the file and field.

Credentials that change while the agent runs are read when used: a token file is read again
for every request (bound service-account tokens rotate), and an exec plugin runs again when the
token it gave expires.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import os
import ssl
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ipvsctl.sources import files

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
EXEC_TIMEOUT = 60.0


class KubeConfigError(Exception):
    """The connection settings are missing or wrong. The message names the file and the field."""


@dataclass(frozen=True)
class ExecPlugin:
    """A kubeconfig ``user.exec`` entry: a command that prints an ExecCredential with a token."""

    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str = "client.authentication.k8s.io/v1"
    where: str = ""  # "file: users[name].user.exec", for error messages

    def run(self) -> tuple[str, float | None]:
        """Run the command; return the token and when it expires (epoch seconds, None: never)."""
        env = dict(os.environ)
        env.update(self.env)
        env["KUBERNETES_EXEC_INFO"] = json.dumps(
            {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
        )
        try:
            done = subprocess.run(
                [self.command, *self.args],
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=EXEC_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as err:
            raise KubeConfigError(f"{self.where}: cannot run {self.command!r}: {err}") from None
        if done.returncode != 0:
            detail = done.stderr.decode(errors="replace").strip().splitlines()
            why = f": {detail[-1]}" if detail else ""
            raise KubeConfigError(f"{self.where}: {self.command!r} exited with status {done.returncode}{why}")
        try:
            status = json.loads(done.stdout).get("status") or {}
            token = status["token"]
            if not isinstance(token, str) or not token:
                raise ValueError
        except (ValueError, KeyError, AttributeError, TypeError):
            raise KubeConfigError(
                f"{self.where}: {self.command!r} did not print an ExecCredential with status.token"
            ) from None
        return token, _expiry(status.get("expirationTimestamp"))


def _expiry(stamp: Any) -> float | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class ClusterConfig:
    """How to reach one API server. ``origin`` says where the settings came from (for logs)."""

    server: str  # http(s)://host[:port][/prefix]
    origin: str = ""
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    insecure: bool = False
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None  # read again for every request
    exec_plugin: ExecPlugin | None = None
    ca_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None

    def read_token_file(self) -> str | None:
        if self.token_file is None:
            return None
        with open(self.token_file, encoding="utf-8") as handle:
            return handle.read().strip() or None


def load_config(
    kubeconfig: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    service_account_dir: str | Path = SERVICE_ACCOUNT_DIR,
    home: str | Path | None = None,
) -> ClusterConfig:
    """The first configuration found: ``kubeconfig``, ``$KUBECONFIG``, in-cluster, ``~/.kube/config``."""
    env = os.environ if environ is None else environ
    if kubeconfig:
        if not Path(kubeconfig).is_file():
            raise KubeConfigError(f"{kubeconfig}: no such kubeconfig file")
        return _from_kubeconfig([kubeconfig])
    listed = [p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        existing = [p for p in listed if Path(p).is_file()]
        if not existing:
            raise KubeConfigError(f"KUBECONFIG names no existing file: {env['KUBECONFIG']}")
        return _from_kubeconfig(existing)
    sa_dir = Path(service_account_dir)
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    in_cluster = bool(host and port)
    if in_cluster and (sa_dir / "token").is_file():
        return _in_cluster(str(host), str(port), sa_dir)
    default = Path(home if home is not None else Path.home()) / ".kube" / "config"
    if default.is_file():
        return _from_kubeconfig([str(default)])
    if in_cluster:
        raise KubeConfigError(
            f"KUBERNETES_SERVICE_HOST is set but {sa_dir / 'token'} does not exist, and neither does {default}"
        )
    raise KubeConfigError(
        f"no Kubernetes configuration: give --kubeconfig, set KUBECONFIG, run in a pod, or create {default}"
    )


def _in_cluster(host: str, port: str, sa_dir: Path) -> ClusterConfig:
    ca = sa_dir / "ca.crt"
    if not ca.is_file():
        raise KubeConfigError(f"{ca}: the service-account CA certificate does not exist")
    if ":" in host:
        host = f"[{host}]"
    try:
        context = ssl.create_default_context(cafile=str(ca))
    except (ssl.SSLError, OSError) as err:
        raise KubeConfigError(f"{ca}: cannot load the CA certificate: {_why(err)}") from None
    return ClusterConfig(
        server=f"https://{host}:{port}",
        origin="in-cluster service account",
        ssl_context=context,
        token_file=str(sa_dir / "token"),
        ca_file=str(ca),
    )


# --- kubeconfig files ---


@dataclass(frozen=True)
class _Entry:
    """One named cluster, user or context, with the file it came from (relative paths start there)."""

    file: str
    section: str  # e.g. "users[admin].user"
    body: dict[str, Any]

    def where(self, key: str = "") -> str:
        return f"{self.file}: {self.section}.{key}" if key else f"{self.file}: {self.section}"

    def string(self, key: str) -> str | None:
        value = self.body.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise KubeConfigError(f"{self.where(key)}: must be a string")
        return value

    def path(self, key: str) -> str | None:
        value = self.string(key)
        if value is None:
            return None
        path = Path(os.path.expanduser(value))
        if not path.is_absolute():
            path = Path(self.file).parent / path
        if not path.is_file():
            raise KubeConfigError(f"{self.where(key)}: {path} does not exist")
        return str(path)

    def data(self, key: str) -> bytes | None:
        value = self.string(key)
        if value is None:
            return None
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise KubeConfigError(f"{self.where(key)}: is not valid base64") from None


def _read_kubeconfig(name: str) -> dict[str, Any]:
    try:
        data = files.read_file(name)
    except OSError as err:
        raise KubeConfigError(f"{name}: cannot read: {err.strerror or err}") from None
    try:
        doc = files.single_document(name, data)
    except ValueError as err:
        raise KubeConfigError(f"{name}: {err}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise KubeConfigError(f"{name}: a kubeconfig must be a mapping")
    return doc


def _named(files: list[tuple[str, dict[str, Any]]], section: str, inner: str) -> dict[str, _Entry]:
    """The entries of one section over all files; the first file to define a name wins."""
    out: dict[str, _Entry] = {}
    for name, doc in files:
        items = doc.get(section) or []
        if not isinstance(items, list):
            raise KubeConfigError(f"{name}: {section}: must be a list")
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise KubeConfigError(f"{name}: {section}[{i}].name: must be a string")
            body = item.get(inner) or {}
            if not isinstance(body, dict):
                raise KubeConfigError(f"{name}: {section}[{item['name']}].{inner}: must be a mapping")
            out.setdefault(item["name"], _Entry(name, f"{section}[{item['name']}].{inner}", body))
    return out


def _from_kubeconfig(names: list[str]) -> ClusterConfig:
    files = [(name, _read_kubeconfig(name)) for name in names]
    shown = ", ".join(names)
    current = next((doc.get("current-context") for _, doc in files if doc.get("current-context")), None)
    if not isinstance(current, str) or not current:
        raise KubeConfigError(f"{shown}: current-context: is not set")
    contexts = _named(files, "contexts", "context")
    if current not in contexts:
        raise KubeConfigError(f"{shown}: current-context: no context named {current!r}")
    ctx = contexts[current]
    cluster_name, user_name = ctx.string("cluster"), ctx.string("user")
    if cluster_name is None:
        raise KubeConfigError(f"{ctx.where('cluster')}: is not set")
    clusters = _named(files, "clusters", "cluster")
    if cluster_name not in clusters:
        raise KubeConfigError(f"{ctx.where('cluster')}: no cluster named {cluster_name!r}")
    cluster = clusters[cluster_name]
    users = _named(files, "users", "user")
    if user_name is not None and user_name not in users:
        raise KubeConfigError(f"{ctx.where('user')}: no user named {user_name!r}")
    user = users[user_name] if user_name is not None else _Entry(ctx.file, "users[]", {})

    server = cluster.string("server")
    if server is None:
        raise KubeConfigError(f"{cluster.where('server')}: is not set")
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise KubeConfigError(f"{cluster.where('server')}: {server!r} is not an http:// or https:// URL")

    insecure = cluster.body.get("insecure-skip-tls-verify", False)
    if not isinstance(insecure, bool):
        raise KubeConfigError(f"{cluster.where('insecure-skip-tls-verify')}: must be true or false")
    ca_file, ca_data = cluster.path("certificate-authority"), cluster.data("certificate-authority-data")
    if insecure and (ca_file or ca_data):
        raise KubeConfigError(
            f"{cluster.where('insecure-skip-tls-verify')}: cannot be combined with a certificate authority"
        )
    cert_file, cert_data = user.path("client-certificate"), user.data("client-certificate-data")
    key_file, key_data = user.path("client-key"), user.data("client-key-data")
    if bool(cert_file or cert_data) != bool(key_file or key_data):
        raise KubeConfigError(f"{user.where()}: client-certificate and client-key must be given together")
    if "auth-provider" in user.body:
        raise KubeConfigError(f"{user.where('auth-provider')}: is not supported; use an exec plugin instead")

    context: ssl.SSLContext | None = None
    if parts.scheme == "https":
        context = _ssl_context(
            cluster, user, insecure, (ca_file, ca_data), (cert_file, cert_data), (key_file, key_data)
        )
    return ClusterConfig(
        server=server.rstrip("/"),
        origin=f"{shown} (context {current})",
        ssl_context=context,
        insecure=insecure,
        token=user.string("token"),
        token_file=user.path("tokenFile"),
        exec_plugin=_exec_plugin(user),
        ca_file=ca_file,
        client_cert_file=cert_file,
        client_key_file=key_file,
    )


def _exec_plugin(user: _Entry) -> ExecPlugin | None:
    spec = user.body.get("exec")
    if spec is None:
        return None
    where = user.where("exec")
    if not isinstance(spec, dict):
        raise KubeConfigError(f"{where}: must be a mapping")
    command = spec.get("command")
    if not isinstance(command, str) or not command:
        raise KubeConfigError(f"{where}.command: must be a string")
    args = spec.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise KubeConfigError(f"{where}.args: must be a list of strings")
    env: list[tuple[str, str]] = []
    for i, item in enumerate(spec.get("env") or []):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("name"), str)
            or not isinstance(item.get("value"), str)
        ):
            raise KubeConfigError(f"{where}.env[{i}]: must have a string name and value")
        env.append((item["name"], item["value"]))
    if "/" in command and not os.path.isabs(command):  # relative to the kubeconfig, as kubectl does
        command = str(Path(user.file).parent / command)
    api_version = spec.get("apiVersion")
    return ExecPlugin(
        command,
        tuple(args),
        tuple(env),
        api_version if isinstance(api_version, str) and api_version else ExecPlugin.api_version,
        where,
    )


def _ssl_context(
    cluster: _Entry,
    user: _Entry,
    insecure: bool,
    ca: tuple[str | None, bytes | None],
    cert: tuple[str | None, bytes | None],
    key: tuple[str | None, bytes | None],
) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    ca_file, ca_data = ca
    try:
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
        elif ca_data:
            context.load_verify_locations(cadata=ca_data.decode("ascii", errors="replace"))
    except (ssl.SSLError, OSError, ValueError) as err:
        what = "certificate-authority" if ca_file else "certificate-authority-data"
        raise KubeConfigError(f"{cluster.where(what)}: cannot load the CA certificate: {_why(err)}") from None
    (cert_file, cert_data), (key_file, key_data) = cert, key
    if not (cert_file or cert_data):
        return context
    what = "client-certificate" + ("" if cert_file else "-data")
    try:
        with tempfile.TemporaryDirectory(prefix="ipvsctl-") as tmp:  # ssl loads key pairs only from files
            if cert_file is None:
                cert_file = os.path.join(tmp, "cert.pem")
                _write_private(cert_file, cert_data or b"")
            if key_file is None:
                key_file = os.path.join(tmp, "key.pem")
                _write_private(key_file, key_data or b"")
            context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as err:
        raise KubeConfigError(f"{user.where(what)}: cannot load the client certificate and key: {_why(err)}") from None
    return context


def _write_private(name: str, data: bytes) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _why(err: Exception) -> str:
    if isinstance(err, ssl.SSLError) and err.reason:
        return str(err.reason).lower().replace("_", " ")
    return getattr(err, "strerror", None) or str(err)
