// A third-party ESME (npm `smpp`, not our code) for the SMPP server's end-to-end test of
// delivery receipts. Modes:
//   submit TO,TO,...   bind as a transmitter, submit one message per number asking for a
//                      receipt, print {"case":"submit","to","status","id"} for each, unbind
//   receive N          bind as a receiver, answer and print each deliver_sm receipt
//                      ({"case":"receipt","id","state","text","esm_class"}) until N came
//                      (or 60 s passed), unbind
//   both TO,TO,...     one transceiver session: submit, then receive as many receipts
//   cancel TO          bind as a transmitter, submit one message scheduled 5 minutes
//                      ahead, query_sm it, cancel_sm it, query_sm it again
//                      ({"case":"query"|"cancel", "status", "state"})
// Usage: node npm-smpp-esme-receipts.js PORT SYSTEM_ID PASSWORD MODE ARG
'use strict';
const smpp = require('smpp');

const [port, systemId, password, mode, arg] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

function connect() {
  return new Promise((resolve, reject) => {
    const s = smpp.connect({ url: `smpp://127.0.0.1:${port}`, auto_enquire_link_period: 10000 }, () => resolve(s));
    s.on('error', reject);
  });
}

const call = (s, method, params) => new Promise((resolve) => s[method](params, resolve));

function receive(s, n) {
  return new Promise((resolve) => {
    let got = 0;
    const timer = setTimeout(resolve, 60000);
    s.on('pdu', (pdu) => {
      if (pdu.command !== 'deliver_sm') return;
      s.send(pdu.response());
      const text = Buffer.isBuffer(pdu.short_message) ? pdu.short_message.toString() : String(pdu.short_message.message || '');
      out({ case: 'receipt', id: pdu.receipted_message_id, state: pdu.message_state, text, esm_class: pdu.esm_class });
      got += 1;
      if (got >= n) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

async function submitAll(s, numbers) {
  for (const to of numbers) {
    const r = await call(s, 'submit_sm', {
      source_addr_ton: 5, source_addr: 'Shop', dest_addr_ton: 1, destination_addr: to,
      registered_delivery: 1, short_message: `receipt test to ${to}`,
    });
    out({ case: 'submit', to, status: r.command_status, id: r.message_id });
  }
}

async function main() {
  const s = await connect();
  s.on('pdu', (pdu) => { if (pdu.command === 'enquire_link') s.send(pdu.response()); });
  const bind = { submit: 'bind_transmitter', cancel: 'bind_transmitter', receive: 'bind_receiver', both: 'bind_transceiver' }[mode];
  const bound = await call(s, bind, { system_id: systemId, password });
  out({ case: 'bind', status: bound.command_status });
  if (mode === 'submit') await submitAll(s, arg.split(','));
  if (mode === 'cancel') {
    const r = await call(s, 'submit_sm', {
      source_addr_ton: 5, source_addr: 'Shop', dest_addr_ton: 1, destination_addr: arg,
      schedule_delivery_time: '000000000500000R', short_message: 'to be cancelled',
    });
    out({ case: 'submit', to: arg, status: r.command_status, id: r.message_id });
    const query = async () => {
      // The server's view of the event log may lag the submit by a moment.
      for (let i = 0; i < 50; i++) {
        const q = await call(s, 'query_sm', { message_id: r.message_id, source_addr_ton: 5, source_addr: 'Shop' });
        if (q.command_status === 0) return q;
        await new Promise((ok) => setTimeout(ok, 100));
      }
      return { command_status: -1 };
    };
    const before = await query();
    out({ case: 'query', status: before.command_status, state: before.message_state });
    const c = await call(s, 'cancel_sm', { message_id: r.message_id, source_addr_ton: 5, source_addr: 'Shop', dest_addr_ton: 1, destination_addr: arg });
    out({ case: 'cancel', status: c.command_status });
    const after = await query();
    out({ case: 'query', status: after.command_status, state: after.message_state, final_date: after.final_date });
    const again = await call(s, 'cancel_sm', { message_id: r.message_id, source_addr_ton: 5, source_addr: 'Shop', dest_addr_ton: 1, destination_addr: arg });
    out({ case: 'cancel', status: again.command_status });
  }
  if (mode === 'receive') await receive(s, Number(arg));
  if (mode === 'both') {
    const numbers = arg.split(',');
    const receipts = receive(s, numbers.length);
    await submitAll(s, numbers);
    await receipts;
  }
  await call(s, 'unbind', {});
  s.close();
}

main().catch((e) => {
  process.stderr.write(`npm ESME failed: ${e}\n`);
  process.exit(1);
});
