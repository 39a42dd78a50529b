"""`ipvsctl import` on the real kernel: for each keepalived configuration below, keepalived
(its checker process only, no VRRP, started by the test) programs IPVS and `ipvsadm -Sn` is
saved; keepalived is stopped and the table cleared; `ipvsctl import` + `ipvsctl apply` of the
manifests it wrote must give the same `ipvsadm -Sn`, line for line. Then the same for
`ipvsctl import --from ipvsadm` of all the saved tables at once.

Addresses are documentation ranges only (198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) and
nothing is sent to them: the guest has no route there, so keepalived's TCP and HTTP checks fail
at once. keepalived starts its real servers up (no `alpha`) and takes one down only after
`retry` more failed checks `delay_before_retry` apart, so every checked configuration has
`retry 3` and `delay_before_retry 60`: nothing can go down in the seconds the table is read
in. MISC_CHECKs run /bin/true, which passes. The table is saved as soon as it holds every
virtual and real server the configuration makes.

keepalived 2.2.7 (Debian 12) told us, in this VM, what the importer now follows: no
`protocol` means UDP; no `lb_algo` means wlc; a DR or TUN real server's port is reset to the
virtual server's; a bare `persistence_timeout` is 360 s; a sorry server without a port takes
the virtual server's; a virtual server without real servers is not created; a quorum above the
real servers' total weight is reduced to it.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from agent_support import Ipvsadm, wait_for
from typer.testing import CliRunner

from ipvsctl import cli

CHECK_TIMERS = """retry 3
            delay_before_retry 60
            connect_timeout 3"""


@dataclass(frozen=True)
class Case:
    name: str
    conf: str
    lines: int  # `ipvsadm -Sn` lines keepalived makes of it
    includes: dict[str, str] = field(default_factory=dict)  # relative path → text
    notes: tuple[str, ...] = ()  # what `ipvsctl import` must list (FILE:LINE suffixes), exit 3 then


CASES = [
    Case(
        "http_get_nat_persistence",
        """\
! the side-by-side example of docs/migrating-from-keepalived.md
virtual_server 198.51.100.20 80 {
    delay_loop 60
    lb_algo wlc
    lb_kind NAT
    persistence_timeout 300
    protocol TCP

    real_server 203.0.113.21 8080 {
        weight 1
        inhibit_on_failure
        HTTP_GET {
            url {
                path /healthz
                status_code 200
            }
            CHECK_TIMERS
        }
    }
    real_server 203.0.113.22 8080 {
        weight 1
        inhibit_on_failure
        HTTP_GET {
            url {
                path /healthz
                status_code 200
            }
            CHECK_TIMERS
        }
    }
}
""",
        3,
    ),
    Case(
        "tcp_check_wrr_weights",
        """\
virtual_server 198.51.100.21 443 {
    delay_loop 30
    lb_algo wrr
    lb_kind NAT
    protocol TCP
    real_server 203.0.113.31 8443 {
        weight 2
        TCP_CHECK {
            connect_port 9443
            CHECK_TIMERS
        }
    }
    real_server 203.0.113.32 8443 {
        weight 5
        TCP_CHECK {
            connect_port 9443
            CHECK_TIMERS
        }
    }
    real_server 203.0.113.33 8443 {
        weight 0
        TCP_CHECK {
            connect_port 9443
            CHECK_TIMERS
        }
    }
}
""",
        4,
    ),
    Case(
        "misc_check_lc_dr",
        """\
virtual_server 198.51.100.22 80 {
    delay_loop 10
    lb_algo lc
    lb_kind DR
    protocol TCP
    # DR: keepalived resets the real servers' port to 80, as ipvsctl does
    real_server 203.0.113.41 8080 {
        MISC_CHECK {
            misc_path "/bin/true 203.0.113.41"
            misc_timeout 5
        }
    }
    real_server 203.0.113.42 8080 {
        MISC_CHECK {
            misc_path "/bin/true 203.0.113.42"
            misc_timeout 5
        }
    }
}
""",
        3,
    ),
    Case(
        "tun_sh_flags",
        """\
virtual_server 198.51.100.23 8000 {
    delay_loop 20
    lvs_sched sh
    sh-port
    sh-fallback
    lvs_method TUN
    protocol TCP
    real_server 203.0.113.51 8000 {
        weight 3
        TCP_CHECK {
            CHECK_TIMERS
        }
    }
    real_server 203.0.113.52 8000 {
        weight 1
        TCP_CHECK {
            CHECK_TIMERS
        }
    }
}
""",
        3,
    ),
    Case(
        "udp_default_protocol_misc",
        """\
! no protocol: keepalived 2.2 makes it UDP
virtual_server 198.51.100.24 53 {
    delay_loop 15
    lb_algo rr
    real_server 203.0.113.61 53 {
        MISC_CHECK {
            misc_path /bin/true
        }
    }
    real_server 203.0.113.62 53 {
        MISC_CHECK {
            misc_path /bin/true
        }
    }
    real_server 203.0.113.63 5353 {
        MISC_CHECK {
            misc_path /bin/true
        }
    }
}
""",
        4,
    ),
    Case(
        "ipv6_http_get_sed",
        """\
virtual_server 2001:db8:5::10 80 {
    delay_loop 60
    lb_algo sed
    lb_kind NAT
    persistence_timeout 600
    protocol TCP
    virtualhost www.example.org
    real_server 2001:db8:b::11 8080 {
        weight 4
        HTTP_GET {
            url {
                path /status
                status_code 200-299 301
            }
            CHECK_TIMERS
        }
    }
    real_server 2001:db8:b::12 8080 {
        weight 4
        HTTP_GET {
            url {
                path /status
                status_code 200-299 301
            }
            CHECK_TIMERS
        }
    }
}
""",
        3,
    ),
    Case(
        "sorry_server_quorum_default_scheduler",
        """\
! no lb_algo: wlc
virtual_server 198.51.100.25 80 {
    delay_loop 60
    lb_kind NAT
    protocol TCP
    quorum 2
    sorry_server 203.0.113.99 8080
    inhibit_on_failure
    real_server 203.0.113.71 8080 {
        TCP_CHECK {
            CHECK_TIMERS
        }
    }
    real_server 203.0.113.72 8080 {
        TCP_CHECK {
            CHECK_TIMERS
        }
    }
}
""",
        3,
    ),
    Case(
        "sorry_server_answers_below_quorum",
        """\
! every real server at weight 0: below the quorum from the start, the sorry server answers
virtual_server 198.51.100.26 80 {
    lb_algo rr
    lb_kind NAT
    protocol TCP
    sorry_server 203.0.113.98 8080
    real_server 203.0.113.81 8080 {
        weight 0
    }
    real_server 203.0.113.82 8080 {
        weight 0
    }
}
""",
        2,
    ),
    Case(
        "quorum_above_total_weight",
        """\
! keepalived reduces a quorum above the real servers' total weight to that total: they answer
virtual_server 198.51.100.31 80 {
    lb_algo rr
    lb_kind NAT
    protocol TCP
    quorum 5
    sorry_server 203.0.113.97 8080
    real_server 203.0.113.131 8080 {
        weight 2
    }
    real_server 203.0.113.132 8080 {
        weight 1
    }
}
""",
        3,
    ),
    Case(
        "ssl_get_nq_defaults_cascade",
        """\
virtual_server 198.51.100.27 443 {
    delay_loop 45
    connect_timeout 4
    retry 3
    delay_before_retry 60
    lb_algo nq
    lb_kind NAT
    persistence_timeout
    protocol TCP
    real_server 203.0.113.91 443 {
        SSL_GET {
            url {
                path /
            }
        }
    }
    real_server 203.0.113.92 443 {
        SSL_GET {
            url {
                path /
            }
        }
    }
}
virtual_server 198.51.100.27 80 {
    lb_algo lblcr
    lb_kind NAT
    protocol TCP
    real_server 203.0.113.91 80 {
    }
    real_server 203.0.113.92 80 {
    }
}
""",
        6,
    ),
    Case(
        "includes_ports_sctp_mh",
        """\
global_defs {
    router_id ipvsctl-import-test
}
include conf.d/*.conf
""",
        6,
        includes={
            "conf.d/10-web.conf": """\
virtual_server 198.51.100.28 80 {
    lb_algo mh
    mh-port
    lb_kind NAT
    protocol TCP
    # real servers on two ports: two EndpointSlices under one port name
    real_server 203.0.113.101 8080 {
    }
    real_server 203.0.113.102 8081 {
    }
}
""",
            "conf.d/20-sctp.conf": """\
virtual_server 198.51.100.29 3868 {
    lb_algo dh
    lb_kind NAT
    protocol SCTP
    real_server 203.0.113.111 3868 {
    }
    real_server 203.0.113.112 3868 {
    }
}
""",
        },
    ),
    Case(
        "ipv6_udp_dr_fo",
        """\
virtual_server 2001:db8:5::20 53 {
    lb_algo fo
    lb_kind DR
    protocol UDP
    real_server 2001:db8:b::21 53 {
        weight 10
    }
    real_server 2001:db8:b::22 {
        weight 5
    }
}
""",
        3,
    ),
    Case(
        "unsupported_rest_written",
        """\
virtual_server 198.51.100.30 80 {
    delay_loop 60
    lb_algo ovf
    lb_kind NAT
    protocol TCP
    hysteresis 1
    real_server 203.0.113.121 8080 {
        weight 2
        notify_up /bin/true
        HTTP_GET {
            url {
                path /
                digest 9b3a0c85a887a256d6939da88aabd8cd
            }
            CHECK_TIMERS
        }
    }
}
""",
        2,
        notes=("keepalived.conf:6", "keepalived.conf:9", "keepalived.conf:13"),
    ),
]


def rules(ipvs: Ipvsadm) -> list[str]:
    return sorted(line for line in ipvs("-Sn").stdout.splitlines() if line.strip())


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def keepalived_binary() -> str:
    path = shutil.which("keepalived") or "/usr/sbin/keepalived"
    if not Path(path).exists():
        pytest.fail("needs keepalived (scripts/bootstrap installs it, with service starts forbidden)")
    return path


def saved_by_keepalived(binary: str, ipvs: Ipvsadm, case: Case, work: Path) -> list[str]:
    """keepalived loads the case; the table once it holds all ``case.lines`` lines; keepalived stopped."""
    conf = work / "keepalived.conf"
    conf.write_text(case.conf.replace("CHECK_TIMERS", CHECK_TIMERS))
    for name, text in case.includes.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    log_path = work / "keepalived.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [binary, "--check", "--dont-fork", "--dont-respawn", "--log-console", "--no-syslog", "-f", str(conf),
             "-p", str(work / "k.pid"), "-c", str(work / "c.pid")],
            stdout=log, stderr=log,
        )  # fmt: skip
        try:
            wait_for(lambda: len(rules(ipvs)) >= case.lines or proc.poll() is not None, 120,
                     f"keepalived's {case.lines} lines for {case.name}",
                     describe=lambda: "\n".join(rules(ipvs)))  # fmt: skip
            assert proc.poll() is None, log_path.read_text(errors="replace")
            saved = rules(ipvs)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert len(saved) == case.lines, f"{case.name}: keepalived made\n" + "\n".join(saved)
    return saved


def applied(manifests: Path, state: Path, ipvs: Ipvsadm) -> list[str]:
    """`ipvsctl apply` of the manifests on a cleared table; the table it makes."""
    code, _, err = invoke("--state-dir", str(state), "apply", "-f", str(manifests), "--no-sysctls")
    assert code == 0, err
    return rules(ipvs)


def test_keepalived_configurations_import_to_the_same_table(
    ipvsadm: str, keepalived_binary: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """For every configuration: keepalived's `ipvsadm -Sn` equals that of `ipvsctl import` +
    `ipvsctl apply`; then `import --from ipvsadm` of all the saved tables gives them back too."""
    ipvs = Ipvsadm(ipvsadm)
    ipvs("-C")
    proven: list[str] = []
    all_saved: list[str] = []
    timings: list[str] = []
    for case in CASES:
        started = time.monotonic()
        work = tmp_path / case.name
        work.mkdir()
        saved = saved_by_keepalived(keepalived_binary, ipvs, case, work)
        wait_for(lambda: not rules(ipvs), 30, "keepalived to remove its virtual servers on exit")
        ipvs("-C")
        manifests = work / "manifests"
        code, _, err = invoke("import", str(work / "keepalived.conf"), "-o", str(manifests))
        listed = [line for line in err.splitlines() if re.match(r"^\S+:\d+: ", line)]
        if case.notes:
            assert code == 3, err
            assert [line.split(": ", 1)[0].rsplit("/", 1)[1] for line in listed] == list(case.notes), err
        else:
            assert code == 0, err
            assert not listed, err
        state = work / "state"
        got = applied(manifests, state, ipvs)
        assert got == saved, f"{case.name}:\nkeepalived:\n" + "\n".join(saved) + "\nipvsctl:\n" + "\n".join(got)
        code, _, err = invoke("--state-dir", str(state), "cleanup")
        assert code == 0, err
        ipvs("-C")
        proven.append(case.name)
        all_saved += saved
        timings.append(f"{case.name} {time.monotonic() - started:.1f}s")

    dump = tmp_path / "saved.ipvsadm"
    dump.write_text("\n".join(all_saved) + "\n")
    code, _, err = invoke("import", "--from", "ipvsadm", str(dump), "-o", str(tmp_path / "from-ipvsadm"))
    assert code == 0, err
    got = applied(tmp_path / "from-ipvsadm", tmp_path / "state-ipvsadm", ipvs)
    assert got == sorted(all_saved)
    code, _, err = invoke("--state-dir", str(tmp_path / "state-ipvsadm"), "cleanup")
    assert code == 0, err
    with capsys.disabled():
        print(f"\nMEASURED import round trips proven: {len(proven)} keepalived configurations "
              f"({', '.join(timings)}); --from ipvsadm: {len(all_saved)} lines", flush=True)  # fmt: skip
