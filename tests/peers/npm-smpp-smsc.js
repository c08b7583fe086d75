// A third-party SMSC for smsgw's end-to-end and interop tests, built on the npm `smpp`
// package (not our code, and not our simulator). It accepts any bind, answers
// submit_sm with a hex id, and sends a delivery receipt (text form plus the
// receipted_message_id / message_state TLVs) after a delay. Behaviour by destination
// prefix comes from --rules (JSON): [{"prefix":"4479112","reject":true},
// {"prefix":"4479113","stat":"UNDELIV"}]; unmatched destinations are DELIVRD.
// An HTTP control port injects MO messages (POST /mo {from,to,body}) and reports
// counters (GET /stats).
'use strict';
const smpp = require('smpp');
const http = require('http');

function arg(name, dflt) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 ? process.argv[i + 1] : dflt;
}
const port = Number(arg('port', '2775'));
const controlPort = Number(arg('control', '2776'));
const dlrDelay = Number(arg('dlr-delay-ms', '200'));
const rules = JSON.parse(arg('rules', '[]'));

const stats = { binds: 0, submits: 0, refused: 0, receipts: 0, mo: 0 };
const receivers = new Set();
let nextId = 0xA000;

function ruleFor(dest) {
  return rules.find((r) => dest.startsWith(r.prefix)) || {};
}

function yymmddhhmm() {
  const d = new Date();
  const p = (n) => String(n).padStart(2, '0');
  return p(d.getUTCFullYear() % 100) + p(d.getUTCMonth() + 1) + p(d.getUTCDate()) + p(d.getUTCHours()) + p(d.getUTCMinutes());
}

const server = smpp.createServer(function (session) {
  const bind = function (pdu) {
    stats.binds++;
    session.send(pdu.response());
    if (pdu.command !== 'bind_transmitter') receivers.add(session);
  };
  session.on('bind_transceiver', bind);
  session.on('bind_receiver', bind);
  session.on('bind_transmitter', bind);
  session.on('enquire_link', (pdu) => session.send(pdu.response()));
  session.on('unbind', (pdu) => {
    session.send(pdu.response());
    receivers.delete(session);
    session.close();
  });
  session.on('close', () => receivers.delete(session));
  session.on('error', () => receivers.delete(session));
  session.on('submit_sm', function (pdu) {
    stats.submits++;
    const dest = pdu.destination_addr;
    const rule = ruleFor(dest);
    if (rule.reject) {
      stats.refused++;
      session.send(pdu.response({ command_status: smpp.ESME_RSUBMITFAIL }));
      return;
    }
    const id = (nextId++).toString(16).toUpperCase();
    session.send(pdu.response({ message_id: id }));
    if (!(pdu.registered_delivery & 0x03)) return;
    const stat = rule.stat || 'DELIVRD';
    const state = stat === 'DELIVRD' ? 2 : 5;
    setTimeout(function () {
      const date = yymmddhhmm();
      session.deliver_sm({
        source_addr: dest,
        destination_addr: pdu.source_addr,
        esm_class: 0x04,
        short_message: 'id:' + id + ' sub:001 dlvrd:' + (state === 2 ? '001' : '000') + ' submit date:' + date +
          ' done date:' + date + ' stat:' + stat + ' err:000 text:',
        receipted_message_id: id,
        message_state: state,
      });
      stats.receipts++;
    }, dlrDelay);
  });
});
server.listen(port, '127.0.0.1');

http
  .createServer(function (req, res) {
    if (req.method === 'GET' && req.url === '/stats') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(stats));
      return;
    }
    if (req.method === 'POST' && req.url === '/mo') {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', function () {
        const mo = JSON.parse(body);
        let n = 0;
        for (const s of receivers) {
          s.deliver_sm({ source_addr: mo.from.replace(/^\+/, ''), destination_addr: mo.to, short_message: mo.body });
          n++;
        }
        stats.mo += n;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ delivered_to_sessions: n }));
      });
      return;
    }
    res.writeHead(404);
    res.end();
  })
  .listen(controlPort, '127.0.0.1', () => console.log('npm-smpp-smsc ready on ' + port + ' control ' + controlPort));
