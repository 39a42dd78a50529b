"""`ipvsctl import --from ipvsadm`: `ipvsadm -Sn` output round trips through ipvsctl's translate;
what ipvsctl cannot say is listed by line; bad lines are errors; hostile lines never crash."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipvsctl.importing import ipvsadm, manifests
from ipvsctl.importing.command import write
from ipvsctl.importing.model import ConfigError
from tests.unit.import_support import run_import, sn_lines, translated

# Lines as `ipvsadm -Sn` printed them in the test VM (tests/kernel/test_import.py).
SAVED = """\
-A -t 198.51.100.20:80 -s wlc -p 300
-a -t 198.51.100.20:80 -r 203.0.113.21:8080 -m -w 1
-a -t 198.51.100.20:80 -r 203.0.113.22:8080 -m -w 1
-A -t 198.51.100.21:443 -s wrr
-a -t 198.51.100.21:443 -r 203.0.113.31:8443 -m -w 2
-a -t 198.51.100.21:443 -r 203.0.113.32:8443 -m -w 5
-a -t 198.51.100.21:443 -r 203.0.113.33:8443 -m -w 0
-A -t 198.51.100.22:80 -s lc
-a -t 198.51.100.22:80 -r 203.0.113.41:80 -g -w 1
-A -t 198.51.100.23:8000 -s sh -b sh-fallback,sh-port
-a -t 198.51.100.23:8000 -r 203.0.113.51:8000 -i -w 3 --tun-type ipip
-A -u 198.51.100.24:53 -s rr
-a -u 198.51.100.24:53 -r 203.0.113.61:53 -m -w 1
-a -u 198.51.100.24:53 -r 203.0.113.63:5353 -m -w 1
-A -t [2001:db8:5::10]:80 -s sed -p 600
-a -t [2001:db8:5::10]:80 -r [2001:db8:b::11]:8080 -m -w 4
-A --sctp-service 198.51.100.29:3868 -s dh
-a --sctp-service 198.51.100.29:3868 -r 203.0.113.111:3868 -m -w 1
-A -u [2001:db8:5::20]:53 -s fo
-a -u [2001:db8:5::20]:53 -r [2001:db8:b::21]:53 -g -w 10
-A -t 198.51.100.30:80 -s mh -b mh-port
"""


def test_saved_table_round_trips(tmp_path: Path) -> None:
    """Import of `ipvsadm -Sn` output, translated by ipvsctl, is the same table (exit 0, nothing listed)."""
    (tmp_path / "saved").write_text(SAVED)
    code, _, err = run_import("--from", "ipvsadm", str(tmp_path / "saved"), "-o", str(tmp_path / "out"))
    assert code == 0, err
    assert err.strip() == f"imported 9 of 9 virtual servers into {tmp_path / 'out'}"
    want = sorted(line.replace(" --tun-type ipip", "") for line in SAVED.splitlines())
    assert sn_lines(translated(tmp_path / "out")) == want


def test_stdin_is_the_default_source() -> None:
    """Without a file, ipvsadm output is read from stdin and the manifests go to stdout."""
    code, out, _ = run_import("--from", "ipvsadm", stdin="-A -t 198.51.100.1:80 -s rr\n")
    assert code == 0
    assert "name: tcp-198-51-100-1-80" in out and "ipvsctl.io/scheduler: rr" in out


def test_ipvsadm_defaults_hold_for_hand_written_lines() -> None:
    """Long options, a -p without timeout (300), no -s (wlc), no method (-g), no -w (1), comments."""
    result = ipvsadm.parse(
        "# saved by hand\n\n--add-service --tcp-service 198.51.100.1:80 --persistent\n"
        "--add-server --tcp-service 198.51.100.1:80 --real-server 203.0.113.1  # a comment\n"
    )
    (server,) = result.servers
    assert (server.scheduler, server.persistence, server.forward.name) == ("wlc", 300, "ROUTE")
    assert [(str(r.address), r.port, r.weight) for r in server.reals] == [("203.0.113.1", 80, 1)]
    assert not result.notes


def test_unsupported_is_listed_by_line() -> None:
    """fwmark services, -o, --pe, netmasks, thresholds, mixed forwarding, per-port weights: notes with lines."""
    text = """\
-A -f 1 -s rr
-a -f 1 -r 203.0.113.1:80 -g -w 1
-A -u 198.51.100.1:53 -s rr -o
-A -u 198.51.100.2:5060 -s rr -p 60 --pe sip
-A -t 198.51.100.3:80 -s rr -p 300 -M 255.255.255.0
-a -t 198.51.100.3:80 -r 203.0.113.3:80 -m -w 1 -x 100 -y 0
-a -t 198.51.100.3:80 -r 203.0.113.4:80 -g -w 1
-a -t 198.51.100.3:80 -r 203.0.113.3:81 -m -w 2
-A -t 198.51.100.4:80 -s rr -b sh-port
"""
    result = ipvsadm.parse(text, "saved")
    assert [(n.where.line, n.message.split(":", 1)[0]) for n in result.notes] == [
        (1, "a firewall-mark virtual server"),
        (3, "-o"),
        (4, "--pe sip"),
        (5, "-M 255.255.255.0"),
        (6, "-x 100"),
        (7, "-g"),
        (8, "weight 2"),
        (9, "-b sh-port"),
    ]
    assert [str(s.address) for s in result.servers] == ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"]


def test_unknown_scheduler_is_listed_and_not_written(tmp_path: Path) -> None:
    """A scheduler ipvsctl does not know: that virtual server is listed, not written; exit 3."""
    code, out, err = run_import("--from", "ipvsadm", stdin="-A -t 198.51.100.1:80 -s fancy\n-A -t 198.51.100.2:80\n")
    assert code == 3
    assert "<stdin>:1: cannot be expressed: metadata.annotations.ipvsctl.io/scheduler: unknown scheduler" in err
    assert "198-51-100-1" not in out and "198-51-100-2" in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "-A -t www.example.org:http -s rr\n", "<stdin>:1: 'www.example.org' is not an IP address", id="names"
        ),
        pytest.param("-A -t 198.51.100.1:http -s rr\n", "port 'http' is not a number", id="port-name"),
        pytest.param("-a -t 198.51.100.1:80 -r 203.0.113.1:80\n", "which no earlier -A line adds", id="real-first"),
        pytest.param("-A -t 198.51.100.1:80\n-A -t 198.51.100.1:80\n", "<stdin>:2: virtual server", id="twice"),
        pytest.param("-A -t 198.51.100.1:80 -s\n", "-s needs a value", id="missing-value"),
        pytest.param("-A -t 198.51.100.1:80 --frob\n", "--frob: not an option of -A", id="unknown-option"),
        pytest.param("-C\n", "-C: ipvsadm -Sn output has only -A and -a lines", id="other-command"),
        pytest.param("-A -t [2001:db8::1:80\n", "is not [IPv6 address]:port", id="bad-brackets"),
        pytest.param("-A -s rr\n", "names no virtual server", id="no-service"),
        pytest.param("ipvsadm -A -t 198.51.100.1:80\n", "'ipvsadm' is not an ipvsadm option", id="program-name"),
    ],
)
def test_bad_lines_are_one_error(text: str, message: str) -> None:
    """A line ipvsadm would not take is one error naming the line; exit 3; nothing written."""
    code, out, err = run_import("--from", "ipvsadm", stdin=text)
    assert code == 3
    assert err.startswith("error: <stdin>:") and message in err, err
    assert out == ""


OPTIONS = ["-A", "-a", "-t", "-u", "--sctp-service", "-f", "-s", "rr", "wlc", "sh", "-p", "-M", "-b",
           "sh-port", "flag-1", "-o", "--pe", "-r", "-m", "-g", "-i", "-w", "-x", "-y", "--tun-type", "gue", "-E",
           "-C"]  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(
        [
            "198.51.100.1:80",
            "[2001:db8::1]:53",
            "203.0.113.1",
            "[::]:0",
            "0.0.0.0:65535",
            "127.0.0.1:1",
            "1.2.3.4:99999",
            "[fe80::1%eth0]:80",
            "x:y",
            "[",
            "]:",
            "300",
            "65536",
            "4294967296",
        ]
    ),
    st.text(max_size=12),
)
LINE = st.lists(st.one_of(st.sampled_from(OPTIONS), VALUES), max_size=10).map(" ".join)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINE, max_size=12))
def test_fuzzed_lines_import_or_fail_with_a_clear_error(tmp_path: Path, lines: list[str]) -> None:
    """Random ipvsadm-like lines: success or a ConfigError naming a line, never another exception;
    what is written reads back without a problem."""
    try:
        result = ipvsadm.parse("\n".join(lines), "fuzz")
    except ConfigError as err:
        assert str(err).startswith("fuzz:") and err.message
        return
    files, _ = manifests.render(result.servers)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    write(out, files)
    if files:
        translated(out)
