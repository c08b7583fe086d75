// A third-party SMSC for smsgw's end-to-end and interop tests, built on the npm `smpp`
// package (not our code, and not our simulator). It accepts any bind, answers
// submit_sm with a hex id, and sends a delivery receipt (text form plus the
// receipted_message_id / message_state TLVs) after a delay. Behaviour by destination
// prefix comes from --rules (JSON), first match wins:
//   reject: true         answer submit_sm with ESME_RSUBMITFAIL
//   stat: "UNDELIV"      receipt status (default DELIVRD)
//   throttle_first: N    answer the first N submits of the session with ESME_RTHROTTLED
//   throttle_every: N    answer every Nth submit with ESME_RTHROTTLED, at any rate (a
//                        share of submits, as per-destination or per-sender limits do)
//   queue_full_first: N  answer the first N submits of the session with ESME_RMSGQFUL
//                        (0x14: "try again later")
//   reject_part: K       answer the Kth part of a concatenated message (UDH or SAR)
//                        with ESME_RSUBMITFAIL; other parts are accepted
//   throttle_above: R    accept at most R submits per second over all sessions (a
//                        token bucket with one second's burst); throttle the rest
//   hold_ms: MS          answer submit_sm only after MS (a window that fills up)
//   dlr_first: true      send the receipt before the submit_sm_resp
//   drop_at: N           never answer; close the connection once N are outstanding
// --bind-fail N refuses the first N binds with ESME_RBINDFAIL. --tls-key FILE and
// --tls-cert FILE (PEM) make it an SMPP-over-TLS server (the package's own TLS mode). A transmitter's receipts
// go to a receiver bind, as real SMSCs do. Receipts are stored and forwarded as real SMSCs
// do: one with no open receiver bind waits for the next, and one sent on a session that
// closes before its deliver_sm_resp is sent again on another.
// An HTTP control port injects MO messages (POST /mo {from,to,body}) and reports
// counters (GET /stats). --log FILE appends every bind, unbind, submit (with the text as the
// npm package decoded it), receipt and drop as one JSON object per line.
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
const bindFail = Number(arg('bind-fail', '0'));
const logFile = arg('log', null);
const fs = require('fs');
const tlsKey = arg('tls-key', null);
const tlsCert = arg('tls-cert', null);
const serverOptions = tlsKey && tlsCert ? { key: fs.readFileSync(tlsKey), cert: fs.readFileSync(tlsCert) } : {};

const stats = { binds: 0, submits: 0, refused: 0, receipts: 0, mo: 0 };
let bindAttempts = 0;
let sessions = 0;
function note(ev) {
  if (!logFile) return;
  ev.peer = 'npm';
  ev.at = Date.now() / 1000;
  fs.appendFileSync(logFile, JSON.stringify(ev) + '\n');
}

// Concatenation info from a UDH information element list or SAR TLVs.
function concatOf(pdu, sm) {
  for (const ie of (sm && sm.udh) || []) {
    if (ie[0] === 0x00 && ie[1] === 3) return [ie[2], ie[3], ie[4]];
    if (ie[0] === 0x08 && ie[1] === 4) return [ie.readUInt16BE(2), ie[4], ie[5]];
  }
  if (pdu.sar_msg_ref_num !== undefined) return [pdu.sar_msg_ref_num, pdu.sar_total_segments, pdu.sar_segment_seqnum];
  return null;
}
function textOf(pdu) {
  const sm = pdu.short_message;
  if (sm && sm.message !== undefined && sm.message.length) return sm.message;
  const p = pdu.message_payload;
  if (p && p.message !== undefined) return p.message;
  return typeof sm === 'string' ? sm : '';
}
const receivers = new Set();
let nextId = 0xA000;

// One token bucket per throttle_above rule, shared by every session.
const buckets = new Map();
function overRate(rule) {
  const now = Date.now() / 1000;
  let b = buckets.get(rule);
  if (!b) buckets.set(rule, (b = { tokens: rule.throttle_above, at: now }));
  b.tokens = Math.min(rule.throttle_above, b.tokens + (now - b.at) * rule.throttle_above);
  b.at = now;
  if (b.tokens < 1) return true;
  b.tokens -= 1;
  return false;
}

function ruleFor(dest) {
  return rules.find((r) => dest.startsWith(r.prefix)) || {};
}

function yymmddhhmm() {
  const d = new Date();
  const p = (n) => String(n).padStart(2, '0');
  return p(d.getUTCFullYear() % 100) + p(d.getUTCMonth() + 1) + p(d.getUTCDate()) + p(d.getUTCHours()) + p(d.getUTCMinutes());
}

function open(s) {
  return s && s.receives && receivers.has(s) && s.socket.writable;
}

// Receipts no open receiver can take yet, oldest first.
const waiting = [];

// Sends a receipt to `preferred` (the submitting session) if it receives, else to any
// open receiver, else keeps it for the next bind. Until the ESME answers, the receipt
// stays on the session's `unanswered` list: a close puts it back in the queue.
function sendReceipt(r, preferred) {
  let to = open(preferred) ? preferred : null;
  if (!to) for (const s of receivers) if (open(s)) { to = s; break; }
  if (!to) {
    waiting.push(r);
    note({ ev: 'dlr_queued', id: r.id });
    return;
  }
  to.unanswered = to.unanswered || new Map();
  const pdu = new smpp.PDU('deliver_sm', r.pdu);
  const sent = to.send(pdu, () => to.unanswered.delete(pdu.sequence_number));
  if (!sent) {
    waiting.push(r);
    return;
  }
  to.unanswered.set(pdu.sequence_number, r);
  if (!r.sent) stats.receipts++;
  note({ ev: 'dlr', id: r.id, before_resp: r.beforeResp, conn: to.conn, resent: !!r.sent });
  r.sent = true;
}

function flushWaiting() {
  const queued = waiting.splice(0, waiting.length);
  for (const r of queued) sendReceipt(r, null);
}

// A receiver session has gone: what it did not answer goes out again elsewhere.
function lost(session) {
  receivers.delete(session);
  const unanswered = session.unanswered;
  session.unanswered = new Map();
  for (const r of (unanswered || new Map()).values()) sendReceipt(r, null);
}

const server = smpp.createServer(serverOptions, function (session) {
  const seen = {};
  let outstanding = 0;
  const conn = ++sessions;
  const bind = function (pdu) {
    const mode = { bind_transceiver: 'trx', bind_receiver: 'rx', bind_transmitter: 'tx' }[pdu.command];
    if (++bindAttempts <= bindFail) {
      session.send(pdu.response({ command_status: smpp.ESME_RBINDFAIL }));
      note({ ev: 'bind', mode, ok: false, conn });
      setTimeout(() => session.close(), 50);
      return;
    }
    stats.binds++;
    session.send(pdu.response());
    note({ ev: 'bind', mode, ok: true, conn });
    session.receives = pdu.command !== 'bind_transmitter';
    session.conn = conn;
    if (session.receives) {
      receivers.add(session);
      flushWaiting();
    }
  };
  session.on('bind_transceiver', bind);
  session.on('bind_receiver', bind);
  session.on('bind_transmitter', bind);
  session.on('enquire_link', (pdu) => session.send(pdu.response()));
  session.on('unbind', (pdu) => {
    note({ ev: 'unbind', conn: session.conn });
    session.send(pdu.response());
    lost(session);
    session.close();
  });
  session.on('close', () => lost(session));
  session.on('error', () => lost(session));
  session.on('submit_sm', function (pdu) {
    stats.submits++;
    const dest = pdu.destination_addr;
    const rule = ruleFor(dest);
    const count = (seen[rule.prefix || ''] = (seen[rule.prefix || ''] || 0) + 1);
    const ev = {
      ev: 'submit', conn, dest, esm: pdu.esm_class, dc: pdu.data_coding, rd: pdu.registered_delivery,
      text: textOf(pdu), concat: concatOf(pdu, pdu.short_message),
      // The package parses SMPP times into Dates: log them as Unix ms.
      validity_ms: pdu.validity_period instanceof Date ? pdu.validity_period.getTime() : null,
      schedule_ms: pdu.schedule_delivery_time instanceof Date ? pdu.schedule_delivery_time.getTime() : null,
    };
    const throttled =
      (rule.throttle_first && count <= rule.throttle_first) ||
      (rule.throttle_every && count % rule.throttle_every === 0) ||
      (rule.throttle_above && overRate(rule));
    if (throttled) {
      stats.refused++;
      session.send(pdu.response({ command_status: smpp.ESME_RTHROTTLED }));
      note(Object.assign(ev, { status: 0x58 }));
      return;
    }
    if (rule.queue_full_first && count <= rule.queue_full_first) {
      stats.refused++;
      session.send(pdu.response({ command_status: smpp.ESME_RMSGQFUL }));
      note(Object.assign(ev, { status: 0x14 }));
      return;
    }
    if (rule.reject || (rule.reject_part && ev.concat && ev.concat[2] === rule.reject_part)) {
      stats.refused++;
      session.send(pdu.response({ command_status: smpp.ESME_RSUBMITFAIL }));
      note(Object.assign(ev, { status: 0x45 }));
      return;
    }
    outstanding++;
    note(Object.assign(ev, { status: 0, outstanding }));
    if (rule.drop_at) {
      if (outstanding >= rule.drop_at) {
        note({ ev: 'drop', outstanding });
        session.socket.destroy();
      }
      return;
    }
    const answer = function () {
      const id = (nextId++).toString(16).toUpperCase();
      const wants = pdu.registered_delivery & 0x03;
      const stat = rule.stat || 'DELIVRD';
      const dlr = function (beforeResp) {
        const state = stat === 'DELIVRD' ? 2 : 5;
        const date = yymmddhhmm();
        sendReceipt({
          id,
          beforeResp,
          pdu: {
            source_addr: dest,
            destination_addr: pdu.source_addr,
            esm_class: 0x04,
            short_message: 'id:' + id + ' sub:001 dlvrd:' + (state === 2 ? '001' : '000') + ' submit date:' + date +
              ' done date:' + date + ' stat:' + stat + ' err:000 text:',
            receipted_message_id: id,
            message_state: state,
          },
        }, session);
      };
      if (wants && rule.dlr_first) dlr(true);
      session.send(pdu.response({ message_id: id }));
      outstanding--;
      if (wants && !rule.dlr_first) setTimeout(() => dlr(false), dlrDelay);
    };
    if (rule.hold_ms) setTimeout(answer, rule.hold_ms);
    else answer();
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
