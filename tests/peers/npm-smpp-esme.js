// A third-party ESME for the SMPP server's interop tests, built on the npm `smpp`
// package (not our code). It binds with a wrong password (and reports the status), then
// binds as a transceiver and submits: a short GSM message, a UCS-2 one, a long one as
// message_payload, a long one as two parts with an 8-bit UDH (the package's own udh
// support), and one to an invalid destination. Each result is one JSON line on stdout:
// {"case", "status", "id"}. Usage: node npm-smpp-esme.js PORT SYSTEM_ID PASSWORD
'use strict';
const smpp = require('smpp');

const [port, systemId, password] = process.argv.slice(2);
const url = `smpp://127.0.0.1:${port}`;
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

function connect() {
  return new Promise((resolve, reject) => {
    const s = smpp.connect({ url, auto_enquire_link_period: 10000 }, () => resolve(s));
    s.on('error', reject);
  });
}

function call(session, method, params) {
  return new Promise((resolve) => session[method](params, resolve));
}

async function main() {
  const wrong = await connect();
  const refused = await call(wrong, 'bind_transceiver', { system_id: systemId, password: 'wrong' });
  out({ case: 'bad_password', status: refused.command_status });
  wrong.destroy();

  const s = await connect();
  s.on('pdu', (pdu) => {
    if (pdu.command === 'enquire_link') s.send(pdu.response());
    if (pdu.command === 'deliver_sm') s.send(pdu.response());
  });
  const bound = await call(s, 'bind_transceiver', { system_id: systemId, password });
  out({ case: 'bind', status: bound.command_status });
  const submit = async (name, params) => {
    const r = await call(s, 'submit_sm', {
      source_addr_ton: 5,
      source_addr: 'Shop',
      dest_addr_ton: 1,
      registered_delivery: 1,
      ...params,
    });
    out({ case: name, status: r.command_status, id: r.message_id });
  };
  await submit('short', { destination_addr: '447911123101', short_message: 'Hello from npm: $5 @ shop' });
  await submit('unicode', { destination_addr: '447911123102', short_message: 'Привет, мир' });
  const long = 'npm long message. '.repeat(12).trim();
  await submit('payload', { destination_addr: '447911123103', message_payload: long });
  const part = (seq, text) => ({
    destination_addr: '447911123104',
    short_message: { udh: Buffer.from([0x05, 0x00, 0x03, 0x42, 0x02, seq]), message: text },
  });
  await submit('udh_1', part(1, 'first half, '));
  await submit('udh_2', part(2, 'second half'));
  await submit('bad_destination', { destination_addr: '12', short_message: 'nowhere' });
  const un = await call(s, 'unbind', {});
  out({ case: 'unbind', status: un.command_status });
  s.close();
}

main().catch((e) => {
  process.stderr.write(`npm ESME failed: ${e}\n`);
  process.exit(1);
});
