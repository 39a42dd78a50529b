"""The ownership record on disk: whole-record writes, journal patches, crashes mid-write."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from ipvsctl.agent.ledger import Ledger
from ipvsctl.errors import StateError
from ipvsctl.model.desired import Owner
from ipvsctl.model.ipvs import Protocol, RealKey, ServiceKey
from ipvsctl.plan import Ownership
from ipvsctl.state import Store, encode, patched
from tests.conftest import ip

KEYS = [ServiceKey(Protocol.TCP, ip(f"10.0.0.{i // 2}"), 80 + i % 2) for i in range(8)]  # two ports per address
REAL = RealKey(ip("10.1.0.1"), 8080)


def owner(i: int) -> Owner:
    return Owner("ns", f"svc{i}", "p")


def random_part(rng: random.Random) -> Ownership:
    keys = rng.sample(KEYS, rng.randrange(0, 4))
    return Ownership(
        {k: owner(rng.randrange(3)) for k in keys},
        frozenset(k.address for k in keys if rng.random() < 0.5),
        {(k, REAL): float(rng.randrange(100)) for k in keys if rng.random() < 0.3},
    )


def test_appended_patches_are_replayed_on_load(tmp_path: Path) -> None:
    store = Store(tmp_path)
    base = Ownership({KEYS[0]: owner(0)}, frozenset({KEYS[0].address}))
    store.save(base)
    grow = Ownership({KEYS[2]: owner(1)}, frozenset({KEYS[2].address}), {(KEYS[2], REAL): 5.0})
    store.append(Ownership(), grow)
    store.append(Ownership({KEYS[0]: owner(0)}, frozenset({KEYS[0].address})), Ownership())
    loaded = Store(tmp_path).load()
    assert loaded == grow
    assert json.loads(store.path.read_text())["services"][0]["name"] == "svc0"  # the snapshot was not rewritten


def test_a_whole_write_empties_the_journal(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.append(Ownership(), Ownership({KEYS[1]: owner(1)}))
    assert store.journal.exists() and store.patches == 1
    store.save(Ownership({KEYS[3]: owner(3)}))
    assert not store.journal.exists() and store.patches == 0
    assert Store(tmp_path).load() == Ownership({KEYS[3]: owner(3)})


def test_a_torn_last_line_is_ignored_and_the_next_patch_starts_a_line(tmp_path: Path) -> None:
    store = Store(tmp_path)
    first = Ownership({KEYS[1]: owner(1)})
    store.append(Ownership(), first)
    with open(store.journal, "a") as handle:
        handle.write('{"drop": {"version": 1, "serv')  # a crash mid-append
    assert Store(tmp_path).load() == first
    second = Ownership({KEYS[4]: owner(4)})
    store.append(Ownership(), second)
    assert Store(tmp_path).load() == Ownership({**first.services, **second.services})


def test_a_well_formed_but_wrong_patch_is_damage(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.journal.write_text('{"drop": {"version": 9}, "put": {"version": 1}}\n')
    with pytest.raises(StateError, match=r"owned\.journal is damaged"):
        store.load()


@pytest.mark.parametrize("seed", range(50))
def test_ledger_patches_like_the_journal(seed: int) -> None:
    """In memory and on disk the same patches give the same record; a slice holds what it should."""
    rng = random.Random(seed)
    record = random_part(rng)
    ledger = Ledger(record)
    for _ in range(6):
        drop, put = random_part(rng), random_part(rng)
        record = patched(record, drop, put)
        ledger.patch(drop, put)
        assert ledger.whole() == record
    keys = set(rng.sample(KEYS, 3))
    part = ledger.part(keys, lambda _address: False)
    assert part.services == {k: o for k, o in record.services.items() if k in keys}
    assert part.draining == {dk: t for dk, t in record.draining.items() if dk[0] in keys}
    for address in record.addresses:
        users = {k for k in record.services if k.address == address}
        alone = any(k.address == address for k in keys) and users <= keys
        assert (address in part.addresses) == alone
    assert ledger.part(keys, lambda _address: True).addresses == frozenset()  # wanted elsewhere: kept


@pytest.mark.parametrize("seed", range(20))
def test_the_record_written_line_by_line_is_the_encoded_record(seed: int, tmp_path: Path) -> None:
    """``save`` streams the record (write_record): it reads back as ``encode`` gives it, and loads as saved."""
    owned = random_part(random.Random(seed))
    store = Store(tmp_path)
    store.save(owned)
    text = (tmp_path / "owned.json").read_text()
    assert json.loads(text) == encode(owned)
    entries = [json.loads(line.strip().rstrip(",")) for line in text.splitlines() if line.startswith(" {")]
    assert len(entries) == len(owned.services) + len(owned.draining)  # one a line
    assert Store(tmp_path).load() == owned
