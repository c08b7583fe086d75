"""Decodes smsgw's event log the way an analytics team would: with a third-party Avro
library (fastavro) and nothing but the .avsc files in schemas/.

Each record is Avro single-object encoded: C3 01, the 8-byte CRC-64-AVRO fingerprint of
the writer schema (as fastavro's `fingerprint(..., "CRC-64-AVRO")` prints it), then the
datum. Run from the repository root: python3 tests/analytics/decode_event_log.py
It decodes every golden fixture under schemas/*/fixtures and checks each against the
text the Rust codec wrote beside it.
"""
import glob
import io
import json
import sys

from fastavro import schemaless_reader
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

writers = {}
for path in glob.glob("schemas/**/*.avsc", recursive=True):
    schema = json.load(open(path))
    fp = fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")
    writers[bytes.fromhex(fp)] = parse_schema(schema)


def decode(record: bytes):
    if record[:2] != b"\xc3\x01":
        raise ValueError("not single-object encoded")
    writer = writers.get(record[2:10])
    if writer is None:
        raise KeyError("unknown writer schema " + record[2:10].hex())
    return schemaless_reader(io.BytesIO(record[10:]), writer)


checked = 0
for path in sorted(glob.glob("schemas/*/fixtures/*/*.bin")):
    event = decode(open(path, "rb").read())
    expected = open(path[:-4] + ".txt").read()
    # The Rust side wrote its Debug form; the ids and the event kind must agree.
    assert f'event_id: "{event["event_id"]}"' in expected, (path, event)
    assert f'message_id: "{event["message_id"]}"' in expected, (path, event)
    for key, value in event["event"].items():
        if value is None:
            forms = [f"{key}: None"]
        elif isinstance(value, bool):
            forms = [f"{key}: {str(value).lower()}", f"{key}: Some({str(value).lower()})"]
        elif isinstance(value, (int, str)):
            v = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)
            forms = [f"{key}: {v}", f"{key}: Some({v})"]
        else:
            forms = [f"{key}: "]
        assert any(f in expected for f in forms), (path, key, value, expected)
    checked += 1

if checked == 0:
    sys.exit("no fixtures found")
print(f"{checked} passed, 0 failed")
