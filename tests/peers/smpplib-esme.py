"""A third-party ESME for the SMPP server's interop tests, on PyPI `smpplib` (not our
code). It binds with a wrong password (and reports the status), then binds as a
transceiver and submits: a short message, a UCS-2 one, a long one split by smpplib's own
`make_parts` (UDH), and one to an invalid destination. Each result is one JSON line on
stdout: {"case", "status", "id"}.
Usage: python smpplib-esme.py PORT SYSTEM_ID PASSWORD
"""
import json
import sys

import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.gsm

port, system_id, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]


def out(case, status, msg_id=""):
    if isinstance(msg_id, bytes):
        msg_id = msg_id.decode()
    print(json.dumps({"case": case, "status": status, "id": msg_id or ""}), flush=True)


wrong = smpplib.client.Client("127.0.0.1", port, timeout=10)
wrong.connect()
try:
    wrong.bind_transceiver(system_id=system_id, password="wrong")
    out("bad_password", 0)
except smpplib.exceptions.PDUError as e:
    out("bad_password", e.args[1])
wrong.disconnect()

client = smpplib.client.Client("127.0.0.1", port, timeout=10)
results = {}
client.set_message_sent_handler(lambda pdu: results.__setitem__(pdu.sequence, pdu))
client.connect()
bound = client.bind_transceiver(system_id=system_id, password=password)
out("bind", bound.status)


def submit(case, to, text):
    parts, coding, esm = smpplib.gsm.make_parts(text)
    for i, part in enumerate(parts):
        pdu = client.send_message(
            source_addr_ton=smpplib.consts.SMPP_TON_ALNUM,
            source_addr="Shop",
            dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
            destination_addr=to,
            short_message=part,
            data_coding=coding,
            esm_class=esm,
            registered_delivery=True,
        )
        # Read until this submit's response is in (an error response raises).
        name = case if len(parts) == 1 else "%s_%d" % (case, i + 1)
        try:
            while pdu.sequence not in results:
                client.read_once()
            r = results[pdu.sequence]
            out(name, r.status, r.message_id)
        except smpplib.exceptions.PDUError as e:
            out(name, e.args[1])


submit("short", "447911123301", "Hello from smpplib")
submit("unicode", "447911123302", "Привет из smpplib")
submit("long", "447911123303", "smpplib long message. " * 10)
submit("bad_destination", "12", "nowhere")
client.unbind()
out("unbind", 0)
client.disconnect()
