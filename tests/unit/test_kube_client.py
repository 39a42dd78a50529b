"""The Kubernetes API client: where its settings come from, and list/watch against the fake API server."""

from __future__ import annotations

import base64
import json
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ipvsctl.sources.kube.client import ApiError, Cancel, Client, ConnectionLost, Gone
from ipvsctl.sources.kube.config import ClusterConfig, KubeConfigError, load_config
from tests.conftest import wait_for
from tests.fakeapi import NODES, SERVICES, Certs, FakeApi, make_certs, node, service


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make test certificates")
    return make_certs(str(tmp_path_factory.mktemp("certs")))


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi() as server:
        yield server


def b64(path: str) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


def kubeconfig(
    path: Path,
    server: str = "https://203.0.113.1:6443",
    cluster: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
    current: str | None = "main",
    extra_contexts: list[dict[str, Any]] | None = None,
) -> str:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c1", "cluster": {"server": server, **(cluster or {})}}],
        "users": [{"name": "u1", "user": user if user is not None else {"token": "secret"}}],
        "contexts": [{"name": "main", "context": {"cluster": "c1", "user": "u1"}}, *(extra_contexts or [])],
    }
    if current is not None:
        doc["current-context"] = current
    path.write_text(yaml.safe_dump(doc))
    return str(path)


# --- configuration ---


def test_kubeconfig_server_token_and_current_context(tmp_path: Path) -> None:
    """current-context picks the context; its cluster's server and its user's token are used."""
    path = tmp_path / "config"
    kubeconfig(
        path,
        server="http://203.0.113.1:8080/",
        extra_contexts=[{"name": "other", "context": {"cluster": "nope", "user": "nope"}}],
    )
    config = load_config(str(path), environ={})
    assert config.server == "http://203.0.113.1:8080"
    assert config.token == "secret"
    assert config.ssl_context is None  # plain http
    assert str(path) in config.origin and "context main" in config.origin


def test_kubeconfig_relative_paths_start_at_the_file(tmp_path: Path, certs: Certs) -> None:
    """certificate-authority and tokenFile given relative to the kubeconfig's own directory."""
    sub = tmp_path / "kube"
    sub.mkdir()
    shutil.copy(certs.server_cert, sub / "ca.crt")
    (sub / "token").write_text("from-file\n")
    path = kubeconfig(sub / "config", cluster={"certificate-authority": "ca.crt"}, user={"tokenFile": "token"})
    config = load_config(path, environ={})
    assert config.ca_file == str(sub / "ca.crt")
    assert config.token_file == str(sub / "token")
    assert config.read_token_file() == "from-file"
    assert config.ssl_context is not None


def test_order_explicit_then_env_then_in_cluster_then_home(tmp_path: Path, certs: Certs) -> None:
    explicit = kubeconfig(tmp_path / "explicit", server="http://explicit:1")
    from_env = kubeconfig(tmp_path / "env", server="http://env:1")
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    kubeconfig(home / ".kube" / "config", server="http://home:1")
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("t")
    shutil.copy(certs.server_cert, sa / "ca.crt")
    pod = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    env = {"KUBECONFIG": from_env, **pod}

    def server(kubeconfig: str | None, environ: dict[str, str]) -> str:
        return load_config(kubeconfig, environ=environ, service_account_dir=sa, home=home).server

    assert server(explicit, env) == "http://explicit:1"
    assert server(None, env) == "http://env:1"
    assert server(None, pod) == "https://10.96.0.1:443"
    assert server(None, {}) == "http://home:1"


def test_kubeconfig_env_merges_files_first_wins(tmp_path: Path) -> None:
    """KUBECONFIG lists several files: current-context from the first that sets it; names from the first."""
    first = tmp_path / "a"
    first.write_text(
        yaml.safe_dump(
            {"current-context": "main", "clusters": [{"name": "c1", "cluster": {"server": "http://first:1"}}]}
        )
    )
    second = kubeconfig(tmp_path / "b", server="http://second:1", current="ignored")
    missing = str(tmp_path / "missing")  # missing files in the list are skipped, as kubectl does
    config = load_config(None, environ={"KUBECONFIG": f"{missing}:{first}:{second}"}, home=tmp_path)
    assert config.server == "http://first:1"
    assert config.token == "secret"


def test_in_cluster(tmp_path: Path, certs: Certs) -> None:
    """The service-account token file is named, not read once: it is read again per request."""
    shutil.copy(certs.server_cert, tmp_path / "ca.crt")
    (tmp_path / "token").write_text("pod-token")
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    config = load_config(None, environ=env, service_account_dir=tmp_path, home=tmp_path / "nohome")
    assert config.server == "https://[fd00::1]:6443"
    assert config.token_file == str(tmp_path / "token")
    assert config.token is None
    assert config.ssl_context is not None and config.ca_file == str(tmp_path / "ca.crt")


def test_in_cluster_without_token_falls_back_to_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    kubeconfig(home / ".kube" / "config", server="http://home:1")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert load_config(None, environ=env, service_account_dir=tmp_path / "sa", home=home).server == "http://home:1"
    with pytest.raises(KubeConfigError, match=r"KUBERNETES_SERVICE_HOST is set but .*sa/token does not exist"):
        load_config(None, environ=env, service_account_dir=tmp_path / "sa", home=tmp_path)


def test_no_configuration_at_all(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match=r"no Kubernetes configuration: .*\.kube/config"):
        load_config(None, environ={}, service_account_dir=tmp_path, home=tmp_path)
    with pytest.raises(KubeConfigError, match="KUBECONFIG names no existing file"):
        load_config(None, environ={"KUBECONFIG": str(tmp_path / "nope")}, home=tmp_path)


BAD_CONFIGS = [
    ("not-yaml", lambda p: p.write_text("clusters: [\n"), "invalid YAML (line 2, column 1)"),
    ("not-utf-8", lambda p: p.write_bytes(b"current-context: \xff\n"), "not UTF-8 (line 1, column 18): byte 0xff"),
    ("too-deep", lambda p: p.write_text("a: " + "[" * 100_000), "nests deeper than 256 levels"),
    ("two-documents", lambda p: p.write_text("a: 1\n---\nb: 2\n"), "holds 2 YAML documents, not one"),
    ("not-a-mapping", lambda p: p.write_text("- a\n"), "a kubeconfig must be a mapping"),
    ("no-current-context", lambda p: kubeconfig(p, current=None), "current-context: is not set"),
    ("unknown-context", lambda p: kubeconfig(p, current="prod"), "current-context: no context named 'prod'"),
    (
        "unknown-cluster",
        lambda p: kubeconfig(
            p, extra_contexts=[{"name": "x", "context": {"cluster": "c9", "user": "u1"}}], current="x"
        ),
        "contexts[x].context.cluster: no cluster named 'c9'",
    ),
    ("no-server", lambda p: kubeconfig(p, server=""), "clusters[c1].cluster.server: is not set"),
    (
        "server-not-url",
        lambda p: kubeconfig(p, server="10.0.0.1:6443"),
        "clusters[c1].cluster.server: '10.0.0.1:6443' is not an http:// or https:// URL",
    ),
    (
        "bad-base64",
        lambda p: kubeconfig(p, cluster={"certificate-authority-data": "not base64!"}),
        "clusters[c1].cluster.certificate-authority-data: is not valid base64",
    ),
    (
        "ca-not-a-cert",
        lambda p: kubeconfig(p, cluster={"certificate-authority-data": "aGVsbG8="}),
        "clusters[c1].cluster.certificate-authority-data: cannot load the CA certificate",
    ),
    (
        "ca-file-missing",
        lambda p: kubeconfig(p, cluster={"certificate-authority": "nope.crt"}),
        "clusters[c1].cluster.certificate-authority: ",
    ),
    (
        "insecure-and-ca",
        lambda p: kubeconfig(p, cluster={"insecure-skip-tls-verify": True, "certificate-authority-data": "aGVsbG8="}),
        "clusters[c1].cluster.insecure-skip-tls-verify: cannot be combined with a certificate authority",
    ),
    (
        "cert-without-key",
        lambda p: kubeconfig(p, user={"client-certificate-data": "aGVsbG8="}),
        "users[u1].user: client-certificate and client-key must be given together",
    ),
    (
        "bad-client-cert",
        lambda p: kubeconfig(p, user={"client-certificate-data": "aGVsbG8=", "client-key-data": "aGVsbG8="}),
        "users[u1].user.client-certificate-data: cannot load the client certificate and key",
    ),
    (
        "auth-provider",
        lambda p: kubeconfig(p, user={"auth-provider": {"name": "gcp"}}),
        "users[u1].user.auth-provider: is not supported",
    ),
    (
        "exec-no-command",
        lambda p: kubeconfig(p, user={"exec": {"args": ["x"]}}),
        "users[u1].user.exec.command: must be a string",
    ),
    ("token-not-string", lambda p: kubeconfig(p, user={"token": 42}), "users[u1].user.token: must be a string"),
]


@pytest.mark.parametrize(("write", "message"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_kubeconfig_names_file_and_field(tmp_path: Path, write: Any, message: str) -> None:
    path = tmp_path / "config"
    write(path)
    with pytest.raises(KubeConfigError) as caught:
        load_config(str(path), environ={})
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_missing_explicit_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match=r"/nope: no such kubeconfig file"):
        load_config(str(tmp_path / "nope"), environ={})


# --- credentials on the wire ---


def test_token_file_is_read_for_every_request(tmp_path: Path, api: FakeApi) -> None:
    token = tmp_path / "token"
    token.write_text("one\n")
    client = Client(ClusterConfig(api.url, token_file=str(token)))
    api.token = "one"
    client.list(SERVICES)
    token.write_text("two")  # rotated, as the kubelet does with bound service-account tokens
    api.token = "two"
    client.list(SERVICES)
    assert [r.headers["authorization"] for r in api.requests] == ["Bearer one", "Bearer two"]


def write_exec_plugin(tmp_path: Path, expires: str | None) -> Path:
    """A plugin that counts its runs and prints ExecCredential with token run-<n>."""
    script = tmp_path / "plugin.py"
    status: dict[str, Any] = {"token": "TOKEN"}
    if expires:
        status["expirationTimestamp"] = expires
    credential = json.dumps(
        {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": status}
    )
    script.write_text(
        "import os, pathlib, sys\n"
        "assert 'ExecCredential' in os.environ['KUBERNETES_EXEC_INFO']\n"
        "runs = pathlib.Path(sys.argv[1])\n"
        "n = int(runs.read_text()) + 1 if runs.exists() else 1\n"
        "runs.write_text(str(n))\n"
        f"print({credential!r}.replace('TOKEN', os.environ['PREFIX'] + str(n)))\n"
    )
    return script


@pytest.mark.parametrize(
    ("expires", "tokens"),
    [
        ("2999-01-01T00:00:00Z", ["run-1", "run-1"]),  # still valid: the plugin runs once
        ("2000-01-01T00:00:00Z", ["run-1", "run-2"]),  # expired: it runs again for the next request
    ],
)
def test_exec_plugin_token(tmp_path: Path, api: FakeApi, expires: str, tokens: list[str]) -> None:
    script = write_exec_plugin(tmp_path, expires)
    path = kubeconfig(
        tmp_path / "config",
        server=api.url,
        user={
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": sys.executable,
                "args": [str(script), str(tmp_path / "runs")],
                "env": [{"name": "PREFIX", "value": "run-"}],
            }
        },
    )
    client = Client(load_config(path, environ={}))
    client.list(SERVICES)
    client.list(SERVICES)
    assert [r.headers["authorization"] for r in api.requests] == [f"Bearer {t}" for t in tokens]


def test_exec_plugin_failure_is_a_config_error(tmp_path: Path, api: FakeApi) -> None:
    path = kubeconfig(
        tmp_path / "config",
        server=api.url,
        user={"exec": {"command": sys.executable, "args": ["-c", "import sys; sys.exit('no credentials for you')"]}},
    )
    client = Client(load_config(path, environ={}))
    with pytest.raises(KubeConfigError, match=r"users\[u1\]\.user\.exec: .* exited with status 1: no credentials"):
        client.list(SERVICES)


def test_https_with_ca_data_and_client_certificate_data(tmp_path: Path, certs: Certs) -> None:
    """certificate-authority-data verifies the server; client-certificate/key-data authenticate to it."""
    with FakeApi(tls=certs.server_context(client_auth=True)) as api:
        api.apply(SERVICES, service("web"))
        path = kubeconfig(
            tmp_path / "config",
            server=api.url,
            cluster={"certificate-authority-data": b64(certs.server_cert)},
            user={"client-certificate-data": b64(certs.client_cert), "client-key-data": b64(certs.client_key)},
        )
        items, _ = Client(load_config(path, environ={})).list(SERVICES)
        assert [i["metadata"]["name"] for i in items] == ["web"]


def test_https_insecure_skip_tls_verify(tmp_path: Path, certs: Certs) -> None:
    with FakeApi(tls=certs.server_context()) as api:
        path = kubeconfig(tmp_path / "config", server=api.url, cluster={"insecure-skip-tls-verify": True})
        assert Client(load_config(path, environ={})).list(SERVICES) == ([], str(api.rv))


def test_https_unknown_server_certificate_is_refused(tmp_path: Path, certs: Certs) -> None:
    with FakeApi(tls=certs.server_context()) as api:
        path = kubeconfig(tmp_path / "config", server=api.url)  # system CAs only
        with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
            Client(load_config(path, environ={})).list(SERVICES)


# --- list ---


@pytest.mark.parametrize("close", [False, True], ids=["keep-alive", "connection-close"])
def test_list_pages_through_continue(api: FakeApi, close: bool) -> None:
    api.close_after_list = close
    for i in range(7):
        api.apply(SERVICES, service(f"s{i}"))
    items, rv = Client(ClusterConfig(api.url), page_size=3).list(SERVICES)
    assert [i["metadata"]["name"] for i in items] == [f"s{i}" for i in range(7)]
    assert rv == str(api.rv)
    assert all("managedFields" not in i["metadata"] for i in items)  # dropped to save memory
    pages = api.requests_for(SERVICES)
    assert [r.params.get("limit") for r in pages] == ["3", "3", "3"]
    assert [bool(r.params.get("continue")) for r in pages] == [False, True, True]
    assert len({r.peer for r in pages}) == (3 if close else 1)  # pages share a connection the server keeps


def test_list_continue_expired_takes_a_full_list(api: FakeApi) -> None:
    for i in range(5):
        api.apply(SERVICES, service(f"s{i}"))
    api.fail_next(1, status=410, path=SERVICES, after=1)  # the second page: continue token too old
    items, rv = Client(ClusterConfig(api.url), page_size=2).list(SERVICES)
    assert len(items) == 5 and rv == str(api.rv)
    assert "limit" not in api.requests_for(SERVICES)[-1].params


def test_list_with_field_selector(api: FakeApi) -> None:
    api.apply(NODES, node("n1", "192.0.2.1"))
    api.apply(NODES, node("n2", "192.0.2.2"))
    items, _ = Client(ClusterConfig(api.url)).list(NODES, {"fieldSelector": "metadata.name=n2"})
    assert [i["metadata"]["name"] for i in items] == ["n2"]


@pytest.mark.parametrize(
    ("status", "path", "error", "reason"),
    [
        (500, SERVICES, ApiError, "InternalError"),
        (403, SERVICES, ApiError, "Forbidden"),
        (410, SERVICES, Gone, "Expired"),
        (None, "/api/v1/nothing", ApiError, "NotFound"),
    ],
)
def test_http_errors(api: FakeApi, status: int | None, path: str, error: type[ApiError], reason: str) -> None:
    if status:
        api.fail_next(1, status=status)
    with pytest.raises(error) as caught:
        Client(ClusterConfig(api.url)).list(path)
    assert type(caught.value) is error
    assert caught.value.status == (status or 404)
    assert caught.value.reason == reason
    assert caught.value.message


def test_unreachable_server_is_an_oserror(api: FakeApi) -> None:
    url = api.url
    api.close()
    with pytest.raises(OSError):
        Client(ClusterConfig(url)).list(SERVICES)


# --- watch ---


def test_watch_streams_events_and_bookmarks(api: FakeApi) -> None:
    client = Client(ClusterConfig(api.url))
    _, rv = client.list(SERVICES)
    with client.watch(SERVICES, rv, 30, read_timeout=2) as stream:
        api.apply(SERVICES, service("web"))
        api.apply(SERVICES, service("web", port=81))
        api.delete(SERVICES, "web")
        mark = api.bookmark(SERVICES)
        events = [next(stream) for _ in range(4)]
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]
    assert events[1]["object"]["spec"]["ports"][0]["port"] == 81
    assert events[3]["object"]["metadata"]["resourceVersion"] == str(mark)
    params = api.requests_for(SERVICES, watch=True)[0].params
    assert params == {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true", "timeoutSeconds": "30"}


def test_watch_replays_history_after_its_resource_version(api: FakeApi) -> None:
    api.apply(SERVICES, service("a"))
    since = str(api.rv)
    api.apply(SERVICES, service("b"))
    api.end_watches()
    with Client(ClusterConfig(api.url)).watch(SERVICES, since, 30, read_timeout=2) as stream:
        first = next(stream)
    assert first["object"]["metadata"]["name"] == "b"


@pytest.mark.parametrize("as_http", [False, True], ids=["error-event", "http-410"])
def test_watch_from_compacted_version_is_gone(api: FakeApi, as_http: bool) -> None:
    api.gone_as_http = as_http
    api.apply(SERVICES, service("a"))
    old = str(api.rv - 1)
    api.compact()
    client = Client(ClusterConfig(api.url))
    with pytest.raises(Gone) as caught, client.watch(SERVICES, old, 30, read_timeout=2) as stream:
        list(stream)
    assert caught.value.status == 410
    assert "too old resource version" in caught.value.message


def test_watch_ends_when_the_server_ends_it(api: FakeApi) -> None:
    client = Client(ClusterConfig(api.url))
    with client.watch(SERVICES, str(api.rv), 30, read_timeout=2) as stream:
        api.apply(SERVICES, service("a"))
        assert next(stream)["type"] == "ADDED"
        api.end_watches()
        assert list(stream) == []


def test_watch_server_timeout_seconds(api: FakeApi) -> None:
    started = time.monotonic()
    with Client(ClusterConfig(api.url)).watch(SERVICES, str(api.rv), 1, read_timeout=3) as stream:
        assert list(stream) == []
    assert 0.9 < time.monotonic() - started < 2


def test_watch_dropped_mid_stream_is_connection_lost(api: FakeApi) -> None:
    client = Client(ClusterConfig(api.url))
    with client.watch(SERVICES, str(api.rv), 30, read_timeout=2) as stream:
        api.apply(SERVICES, service("a"))
        next(stream)
        api.drop_watches()
        with pytest.raises(ConnectionLost):
            next(stream)


def test_watch_silent_stream_times_out(api: FakeApi) -> None:
    client = Client(ClusterConfig(api.url))
    with client.watch(SERVICES, str(api.rv), 30, read_timeout=0.2) as stream:
        api.stall_watches()
        api.apply(SERVICES, service("a"))
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            next(stream)
        assert time.monotonic() - started < 1


def test_watch_error_status(api: FakeApi) -> None:
    api.fail_next(1, status=500)
    with pytest.raises(ApiError, match="500 InternalError: injected failure 500"):
        Client(ClusterConfig(api.url)).watch(SERVICES, "1", 30)


def test_cancel_wakes_a_blocked_watch_and_refuses_new_requests(api: FakeApi) -> None:
    client = Client(ClusterConfig(api.url))
    cancel = Cancel()
    caught: list[BaseException] = []
    started = threading.Event()

    def watch() -> None:
        try:
            with client.watch(SERVICES, str(api.rv), 30, read_timeout=30, cancel=cancel) as stream:
                started.set()
                list(stream)
        except BaseException as err:
            caught.append(err)

    thread = threading.Thread(target=watch)
    thread.start()
    started.wait(2)
    wait_for(lambda: api.open_watches == 1, what="the watch to be open")
    begun = time.monotonic()
    cancel.cancel()
    thread.join(2)
    assert not thread.is_alive() and time.monotonic() - begun < 1
    assert caught and isinstance(caught[0], OSError)
    with pytest.raises(ConnectionLost, match="cancelled"):
        client.list(SERVICES, cancel=cancel)
