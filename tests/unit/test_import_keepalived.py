"""`ipvsctl import keepalived.conf`: round trips through ipvsctl's own translate, includes,
the listing of what cannot be expressed (file and line), errors, and hostile input."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ipvsctl.checks.spec import CheckSpec, spec_of
from ipvsctl.importing import command, keepalived, manifests, syntax
from ipvsctl.importing.model import ConfigError
from ipvsctl.sources.files import load
from tests.unit.import_support import run_import, sn_lines, translated


def write(tmp_path: Path, text: str, name: str = "keepalived.conf") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def imported_lines(tmp_path: Path, text: str, code: int = 0) -> list[str]:
    """Import ``text``, translate the manifests it wrote, and render them as `ipvsadm -Sn`."""
    conf = write(tmp_path, text)
    got, _, err = run_import(str(conf), "-o", str(tmp_path / "out"))
    assert got == code, err
    return sn_lines(translated(tmp_path / "out"))


# What keepalived 2.2.7 made of each configuration in the test VM (tests/kernel/test_import.py
# proves the same there against the kernel); the ids say what each row is about.
ROUND_TRIPS = [
    pytest.param(
        """\
        virtual_server 198.51.100.20 80 {
            delay_loop 5
            lb_algo wlc
            lb_kind NAT
            persistence_timeout 300
            protocol TCP
            real_server 203.0.113.21 8080 {
                weight 1
            }
            real_server 203.0.113.22 8080 {
                weight 1
            }
        }
        """,
        [
            "-A -t 198.51.100.20:80 -s wlc -p 300",
            "-a -t 198.51.100.20:80 -r 203.0.113.21:8080 -m -w 1",
            "-a -t 198.51.100.20:80 -r 203.0.113.22:8080 -m -w 1",
        ],
        id="nat-persistence",
    ),
    pytest.param(
        """\
        virtual_server 198.51.100.1 80 {
            real_server 203.0.113.1 8080 {
            }
        }
        """,
        ["-A -u 198.51.100.1:80 -s wlc", "-a -u 198.51.100.1:80 -r 203.0.113.1:8080 -m -w 1"],
        id="defaults-udp-wlc-nat",
    ),
    pytest.param(
        """\
        virtual_server 198.51.100.2 80 {
            lb_algo rr
            lb_kind DR
            protocol TCP
            real_server 203.0.113.2 8080 {
            }
            real_server 203.0.113.3 {
                weight 4
            }
        }
        """,
        [
            "-A -t 198.51.100.2:80 -s rr",
            "-a -t 198.51.100.2:80 -r 203.0.113.2:80 -g -w 1",
            "-a -t 198.51.100.2:80 -r 203.0.113.3:80 -g -w 4",
        ],
        id="dr-resets-ports",
    ),
    pytest.param(
        """\
        virtual_server 2001:db8::3 443 {
            lb_algo sh
            sh-port
            lb_kind TUN
            protocol TCP
            persistence_timeout
            real_server 2001:db8::31 443 {
                weight 0
            }
        }
        """,
        ["-A -t [2001:db8::3]:443 -s sh -p 360 -b sh-port", "-a -t [2001:db8::3]:443 -r [2001:db8::31]:443 -i -w 0"],
        id="ipv6-tunnel-sh-port-bare-persistence",
    ),
    pytest.param(
        """\
        virtual_server 198.51.100.4 53 {
            lb_algo mh
            mh-fallback
            flag-2
            protocol UDP
            real_server 203.0.113.4 53 {
                weight 3
            }
        }
        """,
        ["-A -u 198.51.100.4:53 -s mh -b mh-fallback,mh-port", "-a -u 198.51.100.4:53 -r 203.0.113.4:53 -m -w 3"],
        id="mh-flags-and-flag-2",
    ),
    pytest.param(
        """\
        virtual_server 198.51.100.5 80 {
            lb_algo rr
            protocol TCP
            sorry_server 203.0.113.9 8080
            real_server 203.0.113.5 8080 {
                weight 0
            }
        }
        """,
        ["-A -t 198.51.100.5:80 -s rr", "-a -t 198.51.100.5:80 -r 203.0.113.9:8080 -m -w 1"],
        id="below-quorum-sorry-server-answers",
    ),
    pytest.param(
        """\
        virtual_server 198.51.100.6 80 {
            lb_algo wrr
            protocol TCP
            quorum 2
            sorry_server 203.0.113.9 8080
            real_server 203.0.113.61 8080 {
            }
            real_server 203.0.113.62 8081 {
                weight 2
            }
        }
        """,
        [
            "-A -t 198.51.100.6:80 -s wrr",
            "-a -t 198.51.100.6:80 -r 203.0.113.61:8080 -m -w 1",
            "-a -t 198.51.100.6:80 -r 203.0.113.62:8081 -m -w 2",
        ],
        id="quorum-met-and-ports-differ",
    ),
    pytest.param(
        """\
        virtual_server 198.51.100.8 80 {
            lb_algo rr
            protocol TCP
            quorum 5
            sorry_server 203.0.113.9 8080
            real_server 203.0.113.81 8080 {
            }
            real_server 203.0.113.82 8080 {
            }
        }
        """,
        [
            "-A -t 198.51.100.8:80 -s rr",
            "-a -t 198.51.100.8:80 -r 203.0.113.81:8080 -m -w 1",
            "-a -t 198.51.100.8:80 -r 203.0.113.82:8080 -m -w 1",
        ],
        id="quorum-above-the-total-weight-is-reduced-to-it",
    ),
    pytest.param(
        """\
        virtual_server 198.51.100.7 3868 {
            lb_algo dh
            protocol SCTP
            real_server 203.0.113.71 3868 {
            }
        }
        virtual_server 198.51.100.7 3868 {
            lb_algo dh
            protocol TCP
            real_server 203.0.113.71 3868 {
            }
        }
        """,
        [
            "-A --sctp-service 198.51.100.7:3868 -s dh",
            "-A -t 198.51.100.7:3868 -s dh",
            "-a --sctp-service 198.51.100.7:3868 -r 203.0.113.71:3868 -m -w 1",
            "-a -t 198.51.100.7:3868 -r 203.0.113.71:3868 -m -w 1",
        ],
        id="sctp-and-tcp-on-one-address",
    ),
]


@pytest.mark.parametrize(("conf", "want"), ROUND_TRIPS)
def test_round_trip_through_translate(tmp_path: Path, conf: str, want: list[str]) -> None:
    """The manifests an import writes make, through ipvsctl's translate, the table keepalived makes."""
    assert imported_lines(tmp_path, conf) == sorted(want)


def test_migration_page_example_imports_to_its_manifests(tmp_path: Path) -> None:
    """The keepalived block of docs/migrating-from-keepalived.md imports to the virtual server and
    health check the page's hand-written manifests describe."""
    import re

    page = (Path(__file__).parents[2] / "docs" / "migrating-from-keepalived.md").read_text()
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", page, re.M | re.S)
    conf = next(body for _, body in blocks if body.startswith("virtual_server "))
    manifest = next(body for tag, body in blocks if tag == "yaml" and "kind: Service" in body)
    (tmp_path / "page").mkdir()
    (tmp_path / "page" / "shop.yaml").write_text(manifest)
    assert imported_lines(tmp_path, conf) == sn_lines(translated(tmp_path / "page"))
    ours = next(s for s in load([str(tmp_path / "out")]).services)
    theirs = next(s for s in load([str(tmp_path / "page")]).services)
    want, got = spec_of(theirs), spec_of(ours)
    assert want is not None and got is not None
    # the page's manifest leaves retry, delay_before_retry and the status codes at ipvsctl's defaults
    assert (got.kind, got.interval, got.timeout, got.path, got.on_failure) == (
        want.kind, want.interval, want.timeout, want.path, want.on_failure,
    )  # fmt: skip


CHECKS = [
    pytest.param(
        """\
        HTTP_GET {
            url {
                path /healthz
                status_code 200-299 301
                virtualhost shop.example.org
            }
            connect_timeout 3
            retry 2
            delay_before_retry 4
            warmup 10
        }
        """,
        CheckSpec(
            "http",
            interval=6,
            timeout=3,
            failures=3,
            retry_delay=4,
            warmup=10,
            path="/healthz",
            status_codes=((200, 299), (301, 301)),
            host="shop.example.org",
            on_failure="drain",
        ),
        id="http-get",
    ),
    pytest.param(
        """\
        SSL_GET {
            url {
                path /
            }
        }
        """,
        CheckSpec(
            "https",
            interval=6,
            timeout=5,
            failures=2,
            retry_delay=3,
            status_codes=((200, 299),),
            insecure=True,
            on_failure="drain",
        ),
        id="ssl-get-defaults",
    ),
    pytest.param(
        """\
        TCP_CHECK {
            connect_port 9000
            nb_get_retry 4
        }
        """,
        CheckSpec("tcp", interval=6, timeout=5, failures=5, retry_delay=1, port=9000, on_failure="drain"),
        id="tcp-check-nb-get-retry",
    ),
    pytest.param(
        """\
        MISC_CHECK {
            misc_path "/usr/local/bin/check.sh ADDRESS 8080"
            misc_timeout 2
        }
        """,
        CheckSpec(
            "exec",
            interval=6,
            timeout=2,
            failures=1,
            retry_delay=1,
            command="/usr/local/bin/check.sh $IPVSCTL_CHECK_ADDRESS 8080",
            on_failure="drain",
        ),
        id="misc-check-own-address",
    ),
]


@pytest.mark.parametrize(("checker", "want"), CHECKS)
def test_checks_become_the_services_check(tmp_path: Path, checker: str, want: CheckSpec) -> None:
    """keepalived's checker, with its defaults and delay_loop/inhibit_on_failure from the virtual
    server, becomes the Service's health check as ipvsctl reads it back."""
    body = textwrap.indent(textwrap.dedent(checker), " " * 8)
    reals = "".join(
        f"    real_server 203.0.113.{n} 8080 {{\n{body.replace('ADDRESS', f'203.0.113.{n}')}    }}\n" for n in (1, 2)
    )
    conf = f"virtual_server 198.51.100.1 80 {{\n    protocol TCP\n    delay_loop 6\n    inhibit_on_failure\n{reals}}}\n"
    imported_lines(tmp_path, conf)
    (svc,) = load([str(tmp_path / "out")]).services
    assert spec_of(svc) == want


def test_without_inhibit_on_failure_a_failing_server_is_removed(tmp_path: Path) -> None:
    """keepalived deletes a failed real server unless inhibit_on_failure: on-failure remove."""
    imported_lines(tmp_path, "virtual_server 198.51.100.1 80 {\n real_server 203.0.113.1 80 {\n TCP_CHECK {\n}\n}\n}\n")
    (svc,) = load([str(tmp_path / "out")]).services
    spec = spec_of(svc)
    assert spec is not None and (spec.on_failure, spec.interval, spec.failures) == ("remove", 60, 2)


def test_an_include_naming_a_nul_character_is_an_error_naming_its_line(tmp_path: Path) -> None:
    """Found by the fuzzed-config property: ``include \\0`` reached os.path and raised ValueError."""
    write(tmp_path, "global_defs {\n}\ninclude \0\n")
    code, _, err = run_import(str(tmp_path / "keepalived.conf"), "-o", str(tmp_path / "out"))
    assert code != 0 and "Traceback" not in err
    assert f"{tmp_path}/keepalived.conf:3: an include's file name cannot hold a NUL character" in err


def test_includes_relative_to_the_including_file_and_globs(tmp_path: Path) -> None:
    """include follows globs in sorted order, each path relative to the file that names it;
    notes name the included file and its line."""
    write(tmp_path, "include conf.d/*.conf\n")
    write(tmp_path, "include ../more/b.inc\n", "conf.d/a.conf")
    write(tmp_path, "virtual_server 198.51.100.2 80 {\n  real_server 203.0.113.2 80 {\n  }\n}\n", "conf.d/b.conf")
    write(tmp_path, "virtual_server 198.51.100.1 80 {\n  hysteresis 2\n  real_server 203.0.113.1 80 {\n  }\n}\n",
          "more/b.inc")  # fmt: skip
    code, _, err = run_import(str(tmp_path / "keepalived.conf"), "-o", str(tmp_path / "out"))
    assert code == 3
    assert f"{tmp_path}/conf.d/../more/b.inc:2: hysteresis" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "udp-198-51-100-1-80.yaml",
        "udp-198-51-100-2-80.yaml",
    ]


def test_unsupported_is_listed_by_file_and_line_and_the_rest_written(tmp_path: Path) -> None:
    """Everything that cannot be expressed is one FILE:LINE line on stderr; exit 3; the rest is written."""
    conf = write(
        tmp_path,
        """\
        global_defs {
            router_id lb1
            lvs_flush
        }
        vrrp_instance VI_1 {
            state MASTER
        }
        virtual_server fwmark 1 {
            real_server 203.0.113.1 80 {
            }
        }
        virtual_server_group web {
            198.51.100.1 80
        }
        virtual_server 198.51.100.1 80 {
            protocol TCP
            persistence_granularity 255.255.255.0
            alpha
            frobnicate yes
            real_server 203.0.113.1 80 {
                uthreshold 10
                DNS_CHECK {
                    type A
                }
            }
            real_server 203.0.113.2 80 {
                TCP_CHECK {
                    bindto 203.0.113.100
                }
            }
        }
        """,
    )
    code, out, err = run_import(str(conf))
    assert code == 3
    listed = [line.removeprefix(f"{conf}:") for line in err.splitlines() if line.startswith(str(conf))]
    assert [line.split(":", 1)[0] for line in listed] == ["3", "5", "8", "12", "17", "18", "19", "21", "22", "26", "28"]
    assert "DNS_CHECK: ipvsctl has no such check" in listed[8]
    assert "frobnicate: unknown keyword in virtual_server" in listed[6]
    assert "differs from that of 203.0.113.1" in listed[9]
    assert err.splitlines()[-1] == "imported 1 of 1 virtual servers; 11 things not imported (listed above)"
    (svc, *_) = [d for d in yaml.safe_load_all(out) if d["kind"] == "Service"]
    assert svc["metadata"]["name"] == "tcp-198-51-100-1-80"


def test_stdout_is_one_yaml_stream_with_a_file_per_service_otherwise(tmp_path: Path) -> None:
    """Without -o, one multi-document stream; with -o, the same documents in one file per Service."""
    conf = write(tmp_path, "".join(
        f"virtual_server 198.51.100.{n} 80 {{\n real_server 203.0.113.{n} 80 {{\n }}\n}}\n" for n in (1, 2)
    ))  # fmt: skip
    code, out, _ = run_import(str(conf), "--namespace", "edge")
    assert code == 0
    streamed = list(yaml.safe_load_all(out))
    assert [(d["kind"], d["metadata"]["namespace"]) for d in streamed] == [
        ("Service", "edge"),
        ("EndpointSlice", "edge"),
    ] * 2
    run_import(str(conf), "--namespace", "edge", "-o", str(tmp_path / "out"))
    files = sorted((tmp_path / "out").iterdir())
    assert [d for f in files for d in yaml.safe_load_all(f.read_text())] == streamed


VS = "virtual_server 198.51.100.1 80 {\n"
ERRORS = [
    pytest.param(
        VS + "  real_server 203.0.113.1 80 {\n}\n", ":1: '{' of virtual_server is never closed", id="unclosed"
    ),
    pytest.param("}\n", ":1: '}' closes no block", id="stray-close"),
    pytest.param(VS.replace(".1 ", ".300 ") + "}\n", ":1: '198.51.100.300' is not an IP address", id="bad-address"),
    pytest.param(
        VS + " real_server 203.0.113.1 80 {\n  weight x\n }\n}\n",
        ":3: weight 'x' must be a whole number",
        id="bad-weight",
    ),
    pytest.param(VS.replace(" 80 ", " 99999 ") + "}\n", ":1: port '99999' must be a whole number", id="bad-port"),
    pytest.param(VS + '  lb_algo "rr\n}\n', ":2: unterminated quoted string", id="unterminated-quote"),
    pytest.param(VS + " protocol ICMP\n}\n", ":2: protocol 'ICMP' must be TCP, UDP or SCTP", id="bad-protocol"),
    pytest.param("include missing.conf\n", ":1: cannot read", id="missing-include"),
    pytest.param("include keepalived.conf\n", ":1: include loop", id="include-loop"),
    pytest.param("{\n}\n", ":1: '{' without a keyword", id="brace-without-keyword"),
]


@pytest.mark.parametrize(("conf", "message"), ERRORS)
def test_bad_input_is_one_error_naming_file_and_line(tmp_path: Path, conf: str, message: str) -> None:
    """Input that cannot be read is one `error: FILE:LINE: why` line, exit 3, nothing written."""
    path = write(tmp_path, conf)
    code, _, err = run_import(str(path), "-o", str(tmp_path / "out"))
    assert code == 3
    assert err.startswith(f"error: {path}"), err
    assert message in err
    assert not (tmp_path / "out").exists()


def test_unreadable_and_not_utf8_files_are_errors(tmp_path: Path) -> None:
    """A missing file and bytes that are not UTF-8 are errors naming the file (and line)."""
    code, _, err = run_import(str(tmp_path / "nope.conf"))
    assert code == 3 and f"{tmp_path}/nope.conf: cannot read" in err
    (tmp_path / "bin.conf").write_bytes(b"global_defs {\n}\n\xff\xfe\n")
    code, _, err = run_import(str(tmp_path / "bin.conf"))
    assert code == 3 and f"{tmp_path}/bin.conf:3: not UTF-8 text" in err


def test_brace_on_the_next_line_and_quoted_braces(tmp_path: Path) -> None:
    """A '{' alone on the next line opens the block of the statement before it; '#' and braces
    inside quotes are text; '!' and '#' start comments."""
    statements = syntax.parse(str(write(tmp_path, 'a 1\n{\n  b "x { # }" ! c\n} # d\n')))
    (a,) = statements
    assert a.keyword == "a" and a.block is not None
    assert [(t.text, t.where.line, t.quoted) for t in a.block[0].words] == [("b", 3, False), ("x { # }", 3, True)]


def test_disagreeing_on_failure_is_unsupported(tmp_path: Path) -> None:
    """inhibit_on_failure on one real server but not another cannot be one Service's check."""
    config = keepalived.read(syntax.parse(str(write(tmp_path, """\
        virtual_server 198.51.100.1 80 {
            real_server 203.0.113.1 80 {
                inhibit_on_failure
                TCP_CHECK {
                }
            }
            real_server 203.0.113.2 80 {
                TCP_CHECK {
                }
            }
        }
        """))))  # fmt: skip
    result = keepalived.imported(config)
    assert [(n.where.line, "differs" in n.message) for n in result.notes] == [(7, True)]
    assert dict(result.servers[0].check)["on-failure"] == "drain"


def test_namespace_must_be_a_dns_label(tmp_path: Path) -> None:
    """--namespace takes what Kubernetes takes; anything else is a usage error."""
    code, _, err = run_import(str(write(tmp_path, "")), "--namespace", "Not_A_Label")
    assert code == 2 and "--namespace" in err


# --- hostile input -------------------------------------------------------------------------

WORDS = [
    "virtual_server", "real_server", "198.51.100.1", "2001:db8::1", "80", "0", "65536", "-1", "1.5", "{", "}", "{ }",
    "include", "*.conf", "x.conf", '"', '"q u o t e d"', "#", "!", "lb_algo", "rr", "wlc", "nope", "lb_kind", "DR",
    "TUN", "NAT", "protocol", "UDP", "SCTP", "persistence_timeout", "99999999999", "sorry_server", "quorum", "weight",
    "TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK", "DNS_CHECK", "url", "path", "/x", "x", "status_code", "99",
    "200-299", "misc_path", "misc_timeout", "delay_loop", "connect_timeout", "retry", "nb_get_retry", "warmup",
    "delay_before_retry", "connect_port", "inhibit_on_failure", "virtualhost", "fwmark", "group", "sh-port",
    "flag-1", "ops", "\x00", "é", "\t", "127.0.0.1", "224.0.0.1", "fe80::1%eth0", "::", "vrrp_instance", "@x",
]  # fmt: skip
LINES = st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINES, max_size=30), included=st.lists(LINES, max_size=10))
def test_fuzzed_configs_import_or_fail_with_a_clear_error(
    tmp_path: Path, lines: list[str], included: list[str]
) -> None:
    """Random keepalived-like text: success, or a ConfigError naming a line; never another
    exception; every manifest written reads back without a problem."""
    (tmp_path / "x.conf").write_text("\n".join(included))
    conf = tmp_path / "keepalived.conf"
    conf.write_text("\n".join(lines))
    try:
        result = command.read_source(str(conf), "keepalived", bytes)
    except ConfigError as err:
        assert str(err).startswith(str(tmp_path)) and err.message
        return
    files, _ = manifests.render(result.servers)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    command.write(out, files)
    if files:
        translated(out)


ADDRESSES = st.sampled_from(["198.51.100.1", "198.51.100.2", "2001:db8::1", "203.0.113.1", "203.0.113.2",
                             "203.0.113.3", "2001:db8::2", "127.0.0.1", "0.0.0.0", "ff02::1",
                             "169.254.0.1"])  # fmt: skip
GOOD_NUMBER = st.integers(1, 600).map(str)
NUMBERS = st.one_of(GOOD_NUMBER, GOOD_NUMBER, GOOD_NUMBER, st.sampled_from(["0", "0.5", "x", "-1", "70000", "9" * 12]))
WORDS_FOR_VALUES = st.sampled_from(
    [
        "rr",
        "wrr",
        "sh",
        "mh",
        "DR",
        "TUN",
        "NAT",
        "UDP",
        "TCP",
        "SCTP",
        "/",
        "/x",
        "200-299",
        "200 301",
        "on",
        "off",
        "/bin/true",
    ]
)
VALUE = st.one_of(NUMBERS, ADDRESSES, WORDS_FOR_VALUES)
ARGS = st.one_of(
    st.lists(VALUE, min_size=1, max_size=1), st.lists(VALUE, min_size=1, max_size=1), st.lists(VALUE, max_size=2)
)
SETTINGS = st.tuples(
    st.sampled_from(["delay_loop", "connect_timeout", "retry", "delay_before_retry", "warmup", "weight", "quorum",
                     "persistence_timeout", "misc_timeout", "connect_port", "lb_algo", "lb_kind", "protocol",
                     "sorry_server", "inhibit_on_failure", "virtualhost", "path", "status_code", "misc_path",
                     "sh-port", "mh-fallback", "flag-1", "hysteresis", "uthreshold"]),
    ARGS,
).map(lambda kv: " ".join((kv[0], *kv[1])))  # fmt: skip


@st.composite
def checker(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK"]))
    lines = draw(st.lists(SETTINGS, max_size=3))
    url = "url {\n" + "\n".join(draw(st.lists(SETTINGS, max_size=3))) + "\n}\n" if draw(st.booleans()) else ""
    return f"{kind} {{\n" + "\n".join(lines) + "\n" + url + "}\n"


@st.composite
def real_server(draw: st.DrawFn) -> str:
    port = draw(st.one_of(st.just(""), GOOD_NUMBER, NUMBERS))
    body = "\n".join(draw(st.lists(st.one_of(SETTINGS, checker()), max_size=3)))
    return f"real_server {draw(ADDRESSES)} {port} {{\n{body}\n}}\n"


@st.composite
def virtual_server(draw: st.DrawFn) -> str:
    body = "\n".join(draw(st.lists(st.one_of(SETTINGS, real_server(), real_server()), max_size=5)))
    return f"virtual_server {draw(ADDRESSES)} {draw(GOOD_NUMBER)} {{\n{body}\n}}\n"


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(servers=st.lists(virtual_server(), min_size=1, max_size=3))
def test_fuzzed_virtual_servers_import_or_fail_with_a_clear_error(tmp_path: Path, servers: list[str]) -> None:
    """Structurally valid virtual_server blocks with random settings and values: a ConfigError
    naming a line, or manifests ipvsctl reads back without a problem; never another exception."""
    conf = tmp_path / "keepalived.conf"
    conf.write_text("".join(servers))
    try:
        result = command.read_source(str(conf), "keepalived", bytes)
    except ConfigError as err:
        assert str(err).startswith(f"{conf}:") and err.message
        event("input error")
        return
    files, refused = manifests.render(result.servers)
    assert len(files) + len(refused) == len(result.servers)
    event("manifests written" if files else "nothing expressible")
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    command.write(out, files)
    if files:
        translated(out)


def test_what_ipvsctl_refuses_is_listed_not_written(tmp_path: Path) -> None:
    """A virtual server ipvsctl's own checks refuse (a loopback address, a path without '/') is
    listed as cannot be expressed, with the field at fault, and gets no file; the others do."""
    conf = write(tmp_path, """\
        virtual_server 127.0.0.1 80 {
            real_server 203.0.113.1 80 {
            }
        }
        virtual_server 198.51.100.1 80 {
            real_server 203.0.113.1 80 {
                HTTP_GET {
                    url {
                        path healthz
                    }
                }
            }
        }
        virtual_server 198.51.100.2 80 {
            real_server 203.0.113.2 80 {
            }
        }
        """)  # fmt: skip
    code, _, err = run_import(str(conf), "-o", str(tmp_path / "out"))
    assert code == 3
    assert f"{conf}:1: cannot be expressed: spec.clusterIP: 127.0.0.1 is a loopback address" in err
    assert f"{conf}:5: cannot be expressed: metadata.annotations.ipvsctl.io/health-check-path:" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["udp-198-51-100-2-80.yaml"]


def test_an_output_directory_that_cannot_be_made_is_exit_2(tmp_path: Path) -> None:
    """-o naming a file (not a directory) is one error line and exit 2."""
    conf = write(tmp_path, "virtual_server 198.51.100.1 80 {\n real_server 203.0.113.1 80 {\n }\n}\n")
    (tmp_path / "taken").write_text("")
    code, _, err = run_import(str(conf), "-o", str(tmp_path / "taken"))
    assert code == 2 and err.startswith(f"error: cannot write {tmp_path / 'taken'}")
