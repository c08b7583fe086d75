"""Decodes smsgw's event log the way an analytics team would: with a third-party Avro
library (fastavro) and nothing but the .avsc files in schemas/.

Each record is Avro single-object encoded: C3 01, the 8-byte CRC-64-AVRO fingerprint of
the writer schema (as fastavro's `fingerprint(..., "CRC-64-AVRO")` prints it), then the
datum. Run from the repository root: python3 tests/analytics/decode_event_log.py
It decodes every golden fixture under schemas/*/fixtures and checks each, field for
field, against the datum the Rust codec reads from the same bytes (the `.json` beside it).
"""
import datetime
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


EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def plain(value):
    """fastavro applies logical types (timestamp-millis becomes a datetime); the Rust
    side's JSON has the Avro long. Datetimes go back to milliseconds, exactly."""
    if isinstance(value, datetime.datetime):
        return (value - EPOCH) // datetime.timedelta(milliseconds=1)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


checked = 0
for path in sorted(glob.glob("schemas/*/fixtures/*/*.bin")):
    record = open(path, "rb").read()
    event = plain(decode(record))
    # The datum as the Rust side reads it with the writer's schema (the codec's golden
    # test keeps this file equal to it): every field must be equal, nested ones included.
    expected = json.load(open(path[:-4] + ".json"))
    if event != expected["datum"]:
        sys.exit(f"{path}: fastavro read\n{event}\nthe Rust codec reads\n{expected['datum']}")
    # The union branch, by record name.
    named = schemaless_reader(io.BytesIO(record[10:]), writers[record[2:10]], return_record_name=True)
    kind = named["event"][0].rsplit(".", 1)[-1]
    if kind != expected["kind"]:
        sys.exit(f"{path}: fastavro read a {kind}, the Rust codec a {expected['kind']}")
    checked += 1

if checked == 0:
    sys.exit("no fixtures found")
print(f"{checked} passed, 0 failed")
