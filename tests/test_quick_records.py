"""The faster construction paths give the very values of the slow ones (records.quick_init,
records.replace, views.iso_time)."""

from __future__ import annotations

import dataclasses
import pickle
import random
from datetime import datetime, timezone

import pytest

from ikeaudit import records
from ikeaudit.classify import Classification
from ikeaudit.records import Anomaly, IkeMessage, Notify, Proposal, Transform, quick_init
from ikeaudit.report.views import iso_time


def _message(**changes) -> IkeMessage:
    fields = dict(frame=7, frames=(6, 7), timestamp=2.5, first_timestamp=2.25, ip_version=4, src="10.0.0.1",
                  dst="10.0.0.2", sport=500, dport=500, transport="udp", non_esp_marker=False, ip_length=300,
                  ip_fragment_lengths=(), udp_payload_length=272, spi_i="01" * 8, spi_r="00" * 8, exchange=34,
                  flags=8, message_id=0, length=272, payload_types=(33, 34, 40))
    fields.update(changes)
    return IkeMessage(**fields)


def test_every_record_class_is_built_by_quick_init():
    quick = [c for c in vars(records).values() if isinstance(c, type) and dataclasses.is_dataclass(c)]
    assert quick and all(c in records._FIELDS for c in quick)
    assert Classification in records._FIELDS


def test_a_quickly_built_record_holds_its_fields_and_defaults_and_stays_frozen():
    m = _message(notifies=(Notify(16430, 0, b""),))
    assert (m.frame, m.frames, m.spi_i, m.notifies[0].type) == (7, (6, 7), "01" * 8, 16430)
    assert (m.proposals, m.key_exchange, m.digest, m.inner) == ((), None, b"", None)  # the declared defaults
    assert type(m) is IkeMessage and m == _message(notifies=(Notify(16430, 0, b""),))
    assert hash(m) == hash(_message(notifies=(Notify(16430, 0, b""),)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.frame = 8
    assert pickle.loads(pickle.dumps(m)) == m


def test_a_quickly_built_record_refuses_what_the_generated_init_refuses():
    with pytest.raises(TypeError):
        Anomaly("malformed")  # detail missing
    with pytest.raises(TypeError):
        Anomaly("malformed", "x", 1, 2)
    with pytest.raises(TypeError):
        Notify(1, 2, b"", colour="red")


def test_a_field_named_like_a_builtin_does_not_shadow_it():
    assert Notify(type=3, protocol=0, data=b"x").type == 3  # `type` is a field of Notify


def test_a_subclass_keeps_the_generated_init():
    @dataclasses.dataclass(frozen=True, slots=True)
    class Base:
        a: int
        b: str = "b"

    quick_init(Base)

    @dataclasses.dataclass(frozen=True, slots=True)
    class Sub(Base):
        c: int = 0

    class Plain(Base):  # no __init__ of its own: Base's runs on it
        __slots__ = ()

    assert (Sub(1, "x", 2).a, Sub(1, "x", 2).c, type(Sub(1))) == (1, 2, Sub)
    assert (type(Plain(1)), Plain(1).a, Plain(1).b) == (Plain, 1, "b")
    assert type(Base(1)) is Base and Base(1).b == "b"


def test_quick_init_takes_only_frozen_slotted_dataclasses_of_plain_defaults():
    @dataclasses.dataclass
    class Loose:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Listed:
        a: list = dataclasses.field(default_factory=list)

    for cls in (Loose, Listed):
        with pytest.raises(TypeError):
            quick_init(cls)


def test_records_replace_gives_what_dataclasses_replace_gives():
    proposal = Proposal(1, 1, "", (Transform(4, 19), Transform(6, 36)))
    m = _message(proposals=(proposal,))
    for changes in ({}, {"frame": 9}, {"proposals": (), "anomalies": (Anomaly("order", "late", 9),)}):
        fast, slow = records.replace(m, **changes), dataclasses.replace(m, **changes)
        assert fast == slow and type(fast) is IkeMessage and fast is not m
    with pytest.raises(TypeError):
        records.replace(m, colour="red")


def test_records_replace_of_another_dataclass_is_dataclasses_replace():
    @dataclasses.dataclass(frozen=True)
    class Other:
        a: int
        b: int = 2

    assert records.replace(Other(1), b=3) == Other(1, 3)


def test_iso_time_is_datetimes_isoformat_to_the_microsecond():
    """Rounded as datetime rounds (half to even, carried into the second), before and
    after the epoch, on the half microsecond and between."""
    rng = random.Random(14)
    values = [0, 0.0, -0.5, -1e-7, 1.5, 2**31, 1700000000.9999995, 1700000000.0000005, 1700000000.0000015,
              -1700000000.9999995, 253402300799.9999]
    values += [rng.uniform(-2e9, 4e9) for _ in range(3000)]
    values += [rng.randint(1_600_000_000, 1_800_000_000) + rng.randint(0, 999_999) / 1e6
               + rng.choice((0.0, 5e-7, -5e-7, 1e-9)) for _ in range(3000)]
    for value in values:
        expected = datetime.fromtimestamp(value, tz=timezone.utc).isoformat(timespec="microseconds")
        assert iso_time(value) == expected.replace("+00:00", "Z"), value


@pytest.mark.parametrize("value", [1e20, float("nan"), float("inf"), 253402300800.0])
def test_iso_time_refuses_what_datetime_refuses(value):
    with pytest.raises((ValueError, OverflowError)):
        iso_time(value)
