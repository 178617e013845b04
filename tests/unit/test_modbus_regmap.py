"""Property tests of the sans-IO Modbus register maps: any map document parses or is refused with the key
named; any register contents decode or are refused per slot; decoded values round-trip through encoding."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voltcloud.api.v1 import common_pb2
from voltcloud_gateways.swap import regmap
from voltcloud_gateways.swap.modbus import to_uplink

ACME = regmap.bundled_map("acme_br16")
DOC: dict[str, Any] = {
    "vendor": "t",
    "word_order": "big",
    "byte_order": "big",
    "slot_count": 4,
    "slot_base": 100,
    "slot_stride": 20,
    "max_read": 40,
    "fields": {
        "pack_id": {"offset": 0, "type": "ascii", "count": 4},
        "soc_permille": {"offset": 4},
        "soh_permille": {"offset": 5, "invalid": [65535]},
        "temperature_milli_c": {"offset": 6, "type": "i16", "scale": 100},
        "voltage_mv": {"offset": 7, "type": "u32", "scale": 10},
        "current_ma": {"offset": 9, "type": "i32"},
        "faults": {"offset": 11, "type": "bits32"},
    },
    "faults": [{"bit": 0, "code": "hot", "level": "critical", "defect": "thermal"}, {"bit": 17, "code": "x"}],
}


def words(value: int, count: int, word_order: str = "big", byte_order: str = "big") -> list[int]:
    value &= (1 << (16 * count)) - 1
    out = [(value >> (16 * (count - 1 - i))) & 0xFFFF for i in range(count)]
    if word_order == "little":
        out.reverse()
    if byte_order == "little":
        out = [((w & 0xFF) << 8) | (w >> 8) for w in out]
    return out


def ascii_regs(text: str, count: int, byte_order: str = "big") -> list[int]:
    data = text.encode().ljust(2 * count, b"\0")
    regs = [data[i] << 8 | data[i + 1] for i in range(0, 2 * count, 2)]
    return [((w & 0xFF) << 8) | (w >> 8) for w in regs] if byte_order == "little" else regs


def slot_regs(m: regmap.RegisterMap, pack_id: str, **raw: int) -> list[int]:
    regs = [0] * m.slot_stride
    spec = m.fields["pack_id"]
    regs[spec.offset : spec.offset + spec.count] = ascii_regs(pack_id, spec.count, m.byte_order)
    for name, value in raw.items():
        f = m.fields[name]
        regs[f.offset : f.offset + f.count] = words(value, f.count, m.word_order, m.byte_order)
    return regs


def test_bundled_map_and_plan() -> None:
    assert ACME.slot_count == 16 and ACME.fields["temperature_milli_c"].scale == 100
    plan = ACME.read_plan()
    assert plan[0] == (1000, 96) and sum(c for _, c in plan) == 16 * 32
    assert all(c <= regmap.MAX_READ and c % 32 == 0 for _, c in plan)


@given(
    st.sampled_from(["big", "little"]),
    st.sampled_from(["big", "little"]),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=8),
    st.integers(0, 1000),
    st.integers(-1000, 2000),
    st.integers(0, 200_000),
    st.integers(-200_000, 200_000),
    st.integers(0, 2**32 - 1),
)
def test_decoded_values_round_trip(
    word_order: str, byte_order: str, pack_id: str, soc: int, temp: int, volt: int, cur: int, faults: int
) -> None:
    doc = copy.deepcopy(DOC) | {"word_order": word_order, "byte_order": byte_order}
    m = regmap.parse_map(doc)
    regs = slot_regs(
        m, pack_id, soc_permille=soc, temperature_milli_c=temp, voltage_mv=volt, current_ma=cur, faults=faults
    )
    reading = regmap.decode_slot(m, 2, regs)
    assert isinstance(reading, regmap.SlotReading), reading
    assert reading.pack_id == pack_id and reading.faults == faults
    assert reading.values["soc_permille"] == soc and reading.values["soh_permille"] == 0
    assert reading.values["temperature_milli_c"] == temp * 100
    assert reading.values["voltage_mv"] == volt * 10 and reading.values["current_ma"] == cur


@given(st.lists(st.integers(0, 0xFFFF), min_size=80, max_size=80), st.sampled_from([0, 2, 79, 81]))
def test_any_registers_decode_or_name_the_field(regs: list[int], cut: int) -> None:
    m = regmap.parse_map(DOC)
    blocks = [regs[:40], regs[40:]] if cut in (0, 2) else [regs[:40], regs[40:cut]]
    for r in regmap.decode_rack(m, blocks):
        if isinstance(r, regmap.SlotError):
            assert r.field and r.description and 1 <= r.slot <= 4
        else:
            assert 0 <= r.values.get("soc_permille", 0) <= 1000
            assert -100_000 <= r.values.get("temperature_milli_c", 0) <= 200_000
            # whatever decodes is accepted by the swap codec's mapping
            tracker = regmap.RackTracker(m, "rack")
            events, _ = to_uplink("st-1", tracker.observe([r], 0.0), dt.datetime.now(dt.UTC))
            for event in events:
                event.SerializeToString()


def test_out_of_range_and_invalid_values() -> None:
    m = regmap.parse_map(DOC)
    assert regmap.decode_slot(m, 1, slot_regs(m, "P1", soc_permille=1001)) == regmap.SlotError(
        1, "soc_permille", "1001 (raw 1001) outside 0..1000"
    )
    hot = regmap.decode_slot(m, 1, slot_regs(m, "P1", soc_permille=5, temperature_milli_c=2001))
    assert isinstance(hot, regmap.SlotError) and hot.field == "temperature_milli_c"
    unknown_soh = regmap.decode_slot(m, 1, slot_regs(m, "P1", soc_permille=5, soh_permille=65535))
    assert isinstance(unknown_soh, regmap.SlotReading) and "soh_permille" not in unknown_soh.values
    assert regmap.decode_slot(m, 1, slot_regs(m, "")) == regmap.SlotReading(1, "", {})
    bad_id = slot_regs(m, "P1", soc_permille=5)
    bad_id[0] = 0x0101
    assert isinstance(regmap.decode_slot(m, 1, bad_id), regmap.SlotError)
    assert regmap.decode_slot(m, 1, [0] * 3).field == "registers"  # type: ignore[union-attr]


BROKEN: list[tuple[str, Any]] = [
    ("vendor", lambda d: d.pop("vendor")),
    ("slot_stride", lambda d: d.update(slot_stride=126)),
    ("slot_count", lambda d: d.update(slot_base=65535)),
    ("max_read", lambda d: d.update(max_read=10)),
    ("word_order", lambda d: d.update(word_order="middle")),
    ("colour", lambda d: d.update(colour=1)),
    ("fields.pack_id", lambda d: d["fields"].pop("pack_id")),
    ("fields.bogus", lambda d: d["fields"].update(bogus={"offset": 15})),
    ("fields.soc_permille.offset", lambda d: d["fields"]["soc_permille"].update(offset=20)),
    ("fields.soc_permille.offset", lambda d: d["fields"]["soc_permille"].update(offset=3)),
    ("fields.soc_permille.type", lambda d: d["fields"]["soc_permille"].update(type="f32")),
    ("fields.soc_permille.type", lambda d: d["fields"]["soc_permille"].update(type="ascii")),
    ("fields.voltage_mv.scale", lambda d: d["fields"]["voltage_mv"].update(scale=0)),
    ("fields.voltage_mv.scale", lambda d: d["fields"]["voltage_mv"].update(scale=float("nan"))),
    ("fields.voltage_mv.count", lambda d: d["fields"]["voltage_mv"].update(count=1)),
    ("fields.soh_permille.invalid", lambda d: d["fields"]["soh_permille"].update(invalid="x")),
    ("fields.soh_permille.enum", lambda d: d["fields"]["soh_permille"].update(enum={"1": "ready"})),
    ("faults[1].bit", lambda d: d["faults"][1].update(bit=32)),
    ("faults[0].defect", lambda d: d["faults"][0].update(defect="melted")),
    ("faults[0].level", lambda d: d["faults"][0].update(level="doom")),
    ("faults[0].code", lambda d: d["faults"][0].update(code="")),
    ("faults", lambda d: d["fields"].pop("faults")),
    ("faults", lambda d: d["faults"].append({"bit": 0, "code": "again"})),
]


@pytest.mark.parametrize(("key", "breaks"), BROKEN)
def test_malformed_maps_name_the_key(key: str, breaks: Any) -> None:
    doc = copy.deepcopy(DOC)
    breaks(doc)
    with pytest.raises(regmap.MapError) as caught:
        regmap.parse_map(doc)
    assert caught.value.key == key, caught.value


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)


@given(st.dictionaries(st.sampled_from(sorted(regmap.MAP_KEYS)), json_values, max_size=8))
def test_any_document_parses_or_names_the_key(doc: dict[str, Any]) -> None:
    try:
        m = regmap.parse_map(doc)
    except regmap.MapError as error:
        assert error.key and error.description
        return
    assert m.read_plan()


@given(st.sampled_from(sorted(DOC["fields"])), st.sampled_from(["offset", "type", "scale", "count"]), json_values)
def test_any_field_value_parses_or_names_the_key(name: str, key: str, value: Any) -> None:
    doc = copy.deepcopy(DOC)
    doc["fields"][name][key] = value
    try:
        regmap.parse_map(doc)
    except regmap.MapError as error:
        assert error.key.startswith(("fields.", "faults")), error


def test_tracker_edges() -> None:
    m = regmap.parse_map(DOC)
    tracker = regmap.RackTracker(m, "rack-1", refresh_s=60)

    def poll(now: float, **raw: int) -> regmap.Messages:
        return tracker.observe([regmap.decode_slot(m, 1, slot_regs(m, "PK1", **raw))], now)

    first = poll(0, soc_permille=500)
    assert [k for k, _ in first.events] == ["pack_report"] and first.telemetry is not None
    assert poll(1, soc_permille=500).events == []  # unchanged: telemetry only
    assert [k for k, _ in poll(61, soc_permille=500).events] == ["pack_report"]  # refresh
    hot = poll(62, soc_permille=500, faults=1 | 1 << 17)
    assert [(k, b.get("code", b.get("defect"))) for k, b in hot.events] == [
        ("alarm", "hot"),
        ("inspection", "thermal"),
        ("alarm", "x"),
    ]
    assert poll(63, soc_permille=500, faults=1 | 1 << 17).events == []
    cleared = poll(64, soc_permille=500, faults=1)
    assert [(b["code"], b["cleared"]) for _, b in cleared.events] == [("x", True)]
    bad = poll(65, soc_permille=4000)
    assert [(k, b["code"]) for k, b in bad.events] == [("alarm", "bms_invalid_data")]
    assert poll(66, soc_permille=4000).events == []
    events, batch = to_uplink("st-1", poll(67, soc_permille=400), dt.datetime.now(dt.UTC))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds == ["alarm", "alarm", "pack_report"]  # invalid data cleared, fault bit 0 cleared, new SOC
    assert events[2].pack_report.soc_permille == 400 and events[2].pack_report.slot == 1
    assert batch is not None and common_pb2.METRIC_SOC_PERMILLE in batch.col_metric
    emptied = tracker.observe([regmap.SlotReading(1, "", {})], 68)
    assert emptied.events == [] and emptied.telemetry is None
