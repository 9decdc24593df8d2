"""Lab bookkeeping without touching the machine: plans, validation, state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from raykit import lab as labkit

BOOKWORM = ("bookworm",)


def settings(tmp_path: Path, **overrides: str) -> labkit.LabSettings:
    values: dict[str, Any] = {
        "state_dir": tmp_path / "state",
        "cache_dir": tmp_path / "cache",
        "bridge": "raykit0",
        "subnet": "10.77.0.0/24",
        "prefix": "raylab",
        "admin_user": "ops",
        "suite": "bookworm",
        "mirror": "http://deb.debian.org/debian",
    }
    values.update(overrides)
    return labkit.LabSettings(**values)


def test_plan_names_and_addresses_hosts_in_order() -> None:
    hosts = labkit.plan_hosts("raylab", "10.77.0.0/24", 3, BOOKWORM)
    assert hosts == (
        labkit.Host("raylab-1", "10.77.0.11", "bookworm"),
        labkit.Host("raylab-2", "10.77.0.12", "bookworm"),
        labkit.Host("raylab-3", "10.77.0.13", "bookworm"),
    )
    assert labkit.bridge_address("10.77.0.0/24") == "10.77.0.1/24"


def test_growing_a_plan_keeps_existing_hosts() -> None:
    three = labkit.plan_hosts("raylab", "10.77.0.0/24", 3, BOOKWORM)
    five = labkit.plan_hosts("raylab", "10.77.0.0/24", 5, BOOKWORM)
    assert five[:3] == three


@pytest.mark.parametrize("count", [0, -1, True, 2.5])
def test_host_count_must_be_positive_whole_number(count: object) -> None:
    with pytest.raises(labkit.LabError, match="--hosts"):
        labkit.plan_hosts("raylab", "10.77.0.0/24", count, BOOKWORM)  # type: ignore[arg-type]


def test_host_count_must_fit_subnet() -> None:
    assert len(labkit.plan_hosts("raylab", "10.77.0.0/24", 244, BOOKWORM)) == 244
    with pytest.raises(labkit.LabError, match=r"does not fit in subnet 10\.77\.0\.0/24"):
        labkit.plan_hosts("raylab", "10.77.0.0/24", 245, BOOKWORM)


@pytest.mark.parametrize("subnet", ["10.77.0.0/24", "192.168.50.0/24", "172.20.0.0/16"])
def test_private_subnets_of_24_or_larger_are_accepted(subnet: str) -> None:
    assert str(labkit.parse_subnet(subnet)) == subnet


@pytest.mark.parametrize(
    ("subnet", "why"),
    [
        ("8.8.8.0/24", "not a private IPv4"),
        ("10.77.0.0/25", "not a private IPv4 network of /24 or larger"),
        ("10.77.0.5/24", "not a network address"),
        ("fd00::/64", "not a private IPv4"),
        ("127.0.0.0/8", "loopback"),
        ("banana", "not a network address"),
    ],
)
def test_bad_subnets_are_refused_with_the_reason(subnet: str, why: str) -> None:
    with pytest.raises(labkit.LabError, match=why):
        labkit.parse_subnet(subnet)


@pytest.mark.parametrize("prefix", ["Ray_Lab", "-lab", "lab-", "a" * 64, "", "lab.1"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(labkit.LabError, match="not a valid hostname"):
        labkit.plan_hosts(prefix, "10.77.0.0/24", 1, BOOKWORM)


def test_bad_bridge_name_is_refused() -> None:
    with pytest.raises(labkit.LabError, match="not a valid interface name"):
        labkit.check_bridge("a-bridge-name-too-long")


def existing(subnet: str = "10.77.0.0/24", hosts: int = 3, suites: tuple[str, ...] = BOOKWORM) -> labkit.LabState:
    bases = {suite: f"/cache/base-{suite}-0123456789ab" for suite in suites}
    hosts_ = labkit.plan_hosts("raylab", subnet, hosts, suites)
    return labkit.LabState(subnet, "raykit0", "raylab", suites, bases, hosts_)


def planned(count: int, suites: tuple[str, ...] = BOOKWORM) -> tuple[labkit.Host, ...]:
    return labkit.plan_hosts("raylab", "10.77.0.0/24", count, suites)


def test_existing_lab_accepts_same_shape_or_growth(tmp_path: Path) -> None:
    labkit.check_against_state(existing(), settings(tmp_path), planned(3))
    labkit.check_against_state(existing(), settings(tmp_path), planned(5))
    labkit.check_against_state(None, settings(tmp_path), planned(1))
    # A host added later gets the suite its place has, whatever the others run.
    labkit.check_against_state(existing(), settings(tmp_path), planned(4, ("bookworm",) * 3 + ("trixie",)))


def test_hosts_get_the_suites_in_turn() -> None:
    hosts = planned(5, ("bookworm", "trixie"))
    assert [h.suite for h in hosts] == ["bookworm", "trixie", "bookworm", "trixie", "bookworm"]
    assert labkit.parse_suites("bookworm,trixie") == ("bookworm", "trixie")


@pytest.mark.parametrize("text", ["", "bookworm,", "Trixie", "bookworm trixie", "../x"])
def test_bad_suites_are_refused(text: str) -> None:
    with pytest.raises(labkit.LabError, match="is not a Debian suite name"):
        labkit.parse_suites(text)


def test_a_host_keeps_its_suite(tmp_path: Path) -> None:
    with pytest.raises(labkit.LabError, match="raylab-2 runs bookworm and --suites would make it trixie"):
        labkit.check_against_state(existing(), settings(tmp_path), planned(3, ("bookworm", "trixie")))


@pytest.mark.parametrize(
    ("override", "count", "why"),
    [
        ({"subnet": "10.78.0.0/24"}, 3, "already has 3 hosts on subnet 10.77.0.0/24"),
        ({"prefix": "other"}, 3, "already has hosts named raylab-N"),
        ({"bridge": "other0"}, 3, "already uses bridge raykit0"),
        ({}, 2, "would remove some"),
    ],
)
def test_existing_lab_refuses_reshaping(tmp_path: Path, override: dict[str, str], count: int, why: str) -> None:
    with pytest.raises(labkit.LabError, match=why):
        labkit.check_against_state(existing(), settings(tmp_path, **override), planned(count))


def test_state_round_trips_through_json() -> None:
    state = existing(hosts=3, suites=("bookworm", "trixie"))
    assert labkit.LabState.from_json(state.to_json()) == state


def test_a_lab_made_before_suites_is_read_as_one_suite() -> None:
    old = {
        "subnet": "10.77.0.0/24",
        "bridge": "raykit0",
        "prefix": "raylab",
        "base": "/cache/base-bookworm-0123456789ab",
        "hosts": [{"name": "raylab-1", "address": "10.77.0.11"}, {"name": "raylab-2", "address": "10.77.0.12"}],
    }
    assert labkit.LabState.from_json(json.dumps(old)) == existing(hosts=2)


def test_every_host_resolves_every_other_from_etc_hosts() -> None:
    text = labkit.etc_hosts(labkit.plan_hosts("raylab", "10.77.0.0/24", 2, BOOKWORM))
    assert "10.77.0.11\traylab-1\n" in text
    assert "10.77.0.12\traylab-2\n" in text
    assert text.startswith("127.0.0.1\tlocalhost\n")


def test_network_unit_sets_static_address_without_link_local() -> None:
    unit = labkit.network_unit("10.77.0.12", 24)
    assert "Name=host0" in unit
    assert "Address=10.77.0.12/24" in unit
    assert "LinkLocalAddressing=no" in unit


def test_base_image_path_follows_its_recipe(tmp_path: Path) -> None:
    a = labkit.base_image_path(settings(tmp_path), "bookworm")
    assert a == labkit.base_image_path(settings(tmp_path), "bookworm")
    assert a.parent == tmp_path / "cache" and a.name.startswith("base-bookworm-")
    assert labkit.base_image_path(settings(tmp_path, mirror="http://mirror.example/debian"), "bookworm") != a
    assert labkit.base_image_path(settings(tmp_path), "trixie").name.startswith("base-trixie-")
