'use strict';
// Protocol scenarios driven by the official RocketMQ 5 Node.js client (npm rocketmq-client-nodejs) with its
// default settings (sslEnabled false: plaintext on ferromq's mixed TLS/plaintext port).
//
// Run by tests/suites/30-clients.sh; topics and groups come from the environment (see ../lib.sh). Each scenario
// prints `SCENARIO node <name> PASS|FAIL|SKIP <detail>` and appends it to FERROMQ_RESULTS_FILE. Exit code 0 only
// if no scenario failed.

const fs = require('node:fs');
const crypto = require('node:crypto');
const {
  Producer, SimpleConsumer, PushConsumer, FilterExpression, ConsumeResult,
} = require('rocketmq-client-nodejs');
const { TransactionResolution, FilterType } = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb');

const env = (k, d) => process.env[k] || d;
const ENDPOINT = env('FERROMQ_ENDPOINT', '127.0.0.1:8081');
const GROUP_PREFIX = env('FERROMQ_GROUP_PREFIX', 'node_g');
const RETRY_SECS = Number(env('FERROMQ_RETRY_INVISIBLE_SECS', '10'));
const DLQ_ATTEMPTS = Number(env('FERROMQ_DLQ_MAX_ATTEMPTS', '2'));
const AWAIT_MS = 5000;
const INVISIBLE_MS = 30000;
const MAX_BODY = 4 * 1024 * 1024;
const TOPIC_NOT_FOUND = 40402;
const EARLY_SLACK_MS = 5;
const TX_WINDOW_MS = 15000;
const RUN = crypto.randomBytes(4).toString('hex');
const SCENARIOS = [ 'send_receive_ack', 'tag_filter', 'sql_filter', 'redelivery', 'fifo_order', 'dead_letter',
  'push_consume', 'push_retry', 'unknown_topic', 'oversized_body', 'delay', 'recall', 'transaction', 'priority' ];

const topic = kind => env(`FERROMQ_TOPIC_${kind.toUpperCase()}`, `node_${kind}`);
const group = kind => `${GROUP_PREFIX}_${kind}`;
const sleep = ms => new Promise(r => setTimeout(r, ms));

// Client logs: warnings and errors only, to this program's output (the run log).
const logger = {
  info() {},
  debug() {},
  warn(...a) { console.log('[client warn]', ...a); },
  error(...a) { console.log('[client error]', ...a); },
};

class Failed extends Error {}
class Skipped extends Error {}
function check(ok, msg) {
  if (!ok) throw new Failed(typeof msg === 'function' ? msg() : msg);
}

const base = () => ({ endpoints: ENDPOINT, namespace: '', logger, requestTimeout: 10000 });

function message(t, body, tag, keys, props, messageGroup) {
  const m = { topic: t, body: Buffer.isBuffer(body) ? body : Buffer.from(body) };
  if (tag) m.tag = tag;
  if (keys && keys.length) m.keys = keys;
  if (props) m.properties = new Map(Object.entries(props));
  if (messageGroup) m.messageGroup = messageGroup;
  return m;
}

async function simple(kind, t, expression) {
  const c = new SimpleConsumer({
    ...base(),
    consumerGroup: group(kind),
    subscriptions: new Map([[ t, expression ]]),
    awaitDuration: AWAIT_MS,
  });
  await c.startup();
  return c;
}

async function receive(c, max, invisibleMs) {
  const l = (await c.receive(max, invisibleMs)) || [];
  // The client checks each body against the digest the server sent (SHA-1 or MD5).
  const bad = l.filter((m) => m.corrupted).map((m) => m.messageId);
  if (bad.length > 0) throw new Error(`the client found bodies that do not match their digest: ${bad}`);
  return l;
}

function bodyFor(i, scenario) {
  const head = Buffer.from(`${scenario}:${RUN}:${i}:`);
  const n = (i * 131) % 3000 + 1;
  const tail = Buffer.alloc(n);
  for (let j = 0; j < n; j++) tail[j] = (i * 7 + j) % 256;
  return Buffer.concat([ head, tail ]);
}

const first10 = p => p.slice(0, 10).join('; ');
const sortedKeys = k => [ ...k ].sort().join(',');
const propsOf = m => m.properties || new Map();
let producer;
let passDetail = '';

// ---- scenarios ----

async function sendReceiveAck() {
  const t = topic('normal');
  const n = 20;
  const expected = new Map();
  for (let i = 0; i < n; i++) {
    const tag = i % 2 === 0 ? 'TagA' : 'TagB';
    const keys = [ `key-${RUN}-${i}`, `order-${i}` ];
    const props = { seq: String(i), origin: 'node', text: 'héllo wörld ✓' };
    const body = i !== n - 1 ? bodyFor(i, 'sra') : crypto.randomBytes(256 * 1024);
    const r = await producer.send(message(t, body, tag, keys, props));
    check(r.messageId, 'send receipt without message id');
    expected.set(r.messageId, { body, tag, keys: sortedKeys(keys), props });
  }
  check(expected.size === n, 'duplicate message ids in send receipts');
  const c = await simple('normal', t, FilterExpression.SUB_ALL);
  try {
    const acked = new Set();
    const problems = [];
    const end = Date.now() + 60000;
    while (acked.size < n && Date.now() < end) {
      for (const m of await receive(c, 32, INVISIBLE_MS)) {
        const id = m.messageId;
        const e = expected.get(id);
        if (!e) { problems.push(`unexpected message ${id}`); continue; }
        if (acked.has(id)) { problems.push(`acked message ${id} delivered again`); continue; }
        if (m.topic !== t) problems.push(`${id}: topic ${m.topic}`);
        if (!m.body.equals(e.body)) problems.push(`${id}: body differs (len ${m.body.length} vs ${e.body.length})`);
        if (m.tag !== e.tag) problems.push(`${id}: tag ${m.tag} != ${e.tag}`);
        if (sortedKeys(m.keys) !== e.keys) problems.push(`${id}: keys ${sortedKeys(m.keys)} != ${e.keys}`);
        for (const [ k, v ] of Object.entries(e.props)) {
          if (propsOf(m).get(k) !== v) problems.push(`${id}: property ${k}=${propsOf(m).get(k)}`);
        }
        if (m.deliveryAttempt !== 1) problems.push(`${id}: delivery attempt ${m.deliveryAttempt} on first delivery`);
        await c.ack(m);
        acked.add(id);
      }
    }
    check(problems.length === 0, first10(problems));
    check(acked.size === n, `received+acked ${acked.size} of ${n} sent (lost ${n - acked.size})`);
    for (let round = 0; round < 2; round++) {
      const again = await receive(c, 32, INVISIBLE_MS);
      check(again.length === 0, `${again.length} message(s) delivered after everything was acked`);
    }
  } finally {
    await c.shutdown();
  }
}

async function tagFilter() {
  const t = topic('filter');
  const sent = { A: new Set(), B: new Set(), C: new Set() };
  for (let i = 0; i < 15; i++) {
    const tag = 'ABC'[i % 3];
    const r = await producer.send(message(t, `filter ${RUN} ${i} ${tag}`, tag));
    sent[tag].add(r.messageId);
  }
  const c = await simple('filter', t, new FilterExpression('A || B'));
  try {
    const got = new Map();
    const end = Date.now() + 60000;
    let rounds = 0;
    while (Date.now() < end && rounds < 2) {
      if (got.size >= 10) rounds++;
      for (const m of await receive(c, 32, INVISIBLE_MS)) {
        got.set(m.messageId, m.tag || '');
        await c.ack(m);
      }
    }
    const wrong = [ ...got ].filter(([ , tag ]) => tag !== 'A' && tag !== 'B').map(([ id, tag ]) => `${id} tag ${tag}`);
    check(wrong.length === 0, `filter 'A || B' delivered: ${wrong}`);
    const missing = [ ...sent.A, ...sent.B ].filter(id => !got.has(id));
    check(missing.length === 0, `${missing.length} A/B message(s) never delivered`);
  } finally {
    await c.shutdown();
  }
}

async function sqlFilter() {
  const t = topic('filter');
  const expression = `run = '${RUN}' AND region IS NOT NULL AND ((amount >= 100 AND region = 'eu') OR amount BETWEEN 10 AND 30)`;
  const want = new Set();
  for (let i = 0; i < 30; i++) {
    const props = { run: RUN, amount: String(i * 10) };
    const region = i % 5 === 0 ? null : (i % 2 === 0 ? 'eu' : 'us');
    if (region) props.region = region;
    const r = await producer.send(message(t, `sql ${RUN} ${i}`, 'S', null, props));
    if (region && ((i * 10 >= 100 && region === 'eu') || (i * 10 >= 10 && i * 10 <= 30))) want.add(r.messageId);
  }
  const c = await simple('sql', t, new FilterExpression(expression, FilterType.SQL));
  try {
    const got = new Set();
    const end = Date.now() + 60000;
    let rounds = 0;
    while (Date.now() < end && rounds < 2) {
      if (got.size >= want.size) rounds++;
      for (const m of await receive(c, 32, INVISIBLE_MS)) {
        got.add(m.messageId);
        await c.ack(m);
      }
    }
    const extra = [ ...got ].filter(id => !want.has(id));
    const missing = [ ...want ].filter(id => !got.has(id));
    check(extra.length === 0 && missing.length === 0,
      `SQL filter: ${missing.length} matching message(s) missing, ${extra.length} non-matching delivered`);
  } finally {
    await c.shutdown();
  }
  // A malformed expression is refused (ILLEGAL_FILTER_EXPRESSION 40010): at start-up or on receive.
  let bad;
  try {
    bad = await simple('sqlbad', t, new FilterExpression('amount >>> 5', FilterType.SQL));
  } catch (e) {
    return;
  }
  try {
    await receive(bad, 8, INVISIBLE_MS);
    throw new Failed('a malformed SQL expression was accepted on receive');
  } catch (e) {
    if (e instanceof Failed) throw e;
    const d = `${e.code || ''} ${e.message}`;
    check(d.includes('40010') || d.toUpperCase().includes('FILTER'), `unexpected refusal: ${d}`);
  } finally {
    await bad.shutdown();
  }
}

async function redelivery() {
  const t = topic('retry');
  const body = Buffer.from(`redeliver me ${RUN}`);
  const id = (await producer.send(message(t, body, 'retry', [ `rk-${RUN}` ]))).messageId;
  const c = await simple('retry', t, FilterExpression.SUB_ALL);
  try {
    const retryMs = RETRY_SECS * 1000;
    let first = null;
    let end = Date.now() + 60000;
    while (!first && Date.now() < end) {
      for (const m of await receive(c, 1, retryMs)) first = m;
    }
    check(first, 'message never delivered');
    const tFirst = Date.now();
    check(first.messageId === id, `unexpected message ${first.messageId}`);
    check(first.deliveryAttempt === 1, `first delivery attempt ${first.deliveryAttempt}`);
    let second = null;
    end = Date.now() + (RETRY_SECS + 40) * 1000;
    while (!second && Date.now() < end) {
      for (const m of await receive(c, 1, INVISIBLE_MS)) {
        check(m.messageId === id, `unexpected message ${m.messageId}`);
        second = m;
      }
    }
    check(second, `not redelivered within ${RETRY_SECS + 40} s`);
    const waited = (Date.now() - tFirst) / 1000;
    check(waited >= RETRY_SECS - 1.5, `redelivered after ${waited.toFixed(1)} s < invisible ${RETRY_SECS} s`);
    check(second.deliveryAttempt === 2, `redelivery has delivery attempt ${second.deliveryAttempt}, want 2`);
    check(second.body.equals(body), 'redelivered body differs');
    await c.ack(second);
    end = Date.now() + (RETRY_SECS + 2) * 1000;
    while (Date.now() < end) {
      const again = await receive(c, 1, retryMs);
      check(again.length === 0, () => `acked message came back (attempt ${again[0].deliveryAttempt})`);
    }
  } finally {
    await c.shutdown();
  }
}

async function fifoOrder() {
  const t = topic('fifo');
  const perGroup = 6;
  const groups = [ 0, 1, 2, 3 ].map(g => `mg${g}-${RUN}`);
  for (let s = 0; s < perGroup; s++) {
    for (const g of groups) await producer.send(message(t, `${g}|${s}`, 'fifo', null, { seq: String(s) }, g));
  }
  const next = new Map(groups.map(g => [ g, 0 ]));
  const problems = [];
  const valid = (m, held) => {
    const g = m.messageGroup;
    const s = Number(propsOf(m).get('seq') ?? -1);
    if (!g || !next.has(g)) { problems.push(`message with group ${g}`); return false; }
    if (g === held) { problems.push(`${g} seq ${s} delivered while seq ${next.get(g)} is unacked`); return false; }
    if (s !== next.get(g)) { problems.push(`${g}: got seq ${s}, expected ${next.get(g)}`); return false; }
    if (m.body.toString() !== `${g}|${s}`) problems.push(`${g} seq ${s}: body differs`);
    return true;
  };
  const c = await simple('fifo', t, FilterExpression.SUB_ALL);
  try {
    let held = null;
    let end = Date.now() + 60000;
    while (!held && Date.now() < end) {
      for (const m of await receive(c, 1, INVISIBLE_MS)) held = m;
    }
    check(held, 'no FIFO message delivered');
    check(valid(held, null), () => first10(problems));
    const hg = held.messageGroup;
    // While it is held, nothing later of its message group may be delivered.
    for (let round = 0; round < 2; round++) {
      for (const m of await receive(c, 32, INVISIBLE_MS)) {
        if (valid(m, hg)) { await c.ack(m); next.set(m.messageGroup, next.get(m.messageGroup) + 1); }
      }
    }
    check(problems.length === 0, () => first10(problems));
    await c.ack(held);
    next.set(hg, next.get(hg) + 1);
    const total = () => [ ...next.values() ].reduce((a, b) => a + b, 0);
    end = Date.now() + 90000;
    while (total() < groups.length * perGroup && Date.now() < end && problems.length === 0) {
      for (const m of await receive(c, 32, INVISIBLE_MS)) {
        if (valid(m, null)) { await c.ack(m); next.set(m.messageGroup, next.get(m.messageGroup) + 1); }
      }
    }
    check(problems.length === 0, () => first10(problems));
    check([ ...next.values() ].every(v => v === perGroup), () => `incomplete: ${JSON.stringify([ ...next ])}`);
  } finally {
    await c.shutdown();
  }
}

async function deadLetter() {
  const t = topic('dlq');
  const body = Buffer.from(`dead letter ${RUN}`);
  const id = (await producer.send(message(t, body, 'dlq', [ `dk-${RUN}` ], { origin: 'node' }))).messageId;
  const retryMs = RETRY_SECS * 1000;
  const c = await simple('dlq', t, FilterExpression.SUB_ALL);
  let reader = null;
  try {
    const attempts = [];
    let end = Date.now() + (DLQ_ATTEMPTS * RETRY_SECS + 60) * 1000;
    while (attempts.length < DLQ_ATTEMPTS && Date.now() < end) {
      for (const m of await receive(c, 1, retryMs)) {
        check(m.messageId === id, `unexpected message ${m.messageId}`);
        attempts.push(m.deliveryAttempt);
      }
    }
    const want = Array.from({ length: DLQ_ATTEMPTS }, (_, i) => i + 1);
    check(JSON.stringify(attempts) === JSON.stringify(want), `delivery attempts ${JSON.stringify(attempts)}`);
    const dlqTopic = `%DLQ%${group('dlq')}`;
    let found = null;
    end = Date.now() + (RETRY_SECS + 60) * 1000;
    while (!found && Date.now() < end) {
      // The source group keeps polling: it must not get the message a further time.
      const again = await receive(c, 1, retryMs);
      check(again.length === 0, `delivered again after ${DLQ_ATTEMPTS} attempts`);
      if (!reader) {
        try {
          reader = await simple('dlqreader', dlqTopic, FilterExpression.SUB_ALL);
        } catch (e) { // the DLQ topic may not exist before the first dead letter
          await sleep(1000);
          continue;
        }
      }
      let got = [];
      try {
        got = await receive(reader, 32, INVISIBLE_MS);
      } catch (e) {
        await sleep(1000);
      }
      for (const m of got) {
        await reader.ack(m);
        if (m.messageId === id || m.body.equals(body)) found = m;
      }
    }
    check(found, `not found in ${dlqTopic}`);
    check(found.messageId === id, `DLQ copy has message id ${found.messageId}, sent ${id}`);
    check(found.body.equals(body) && found.tag === 'dlq' && found.keys.includes(`dk-${RUN}`), 'DLQ copy differs');
    check(propsOf(found).get('origin') === 'node', `DLQ copy lost user properties: ${JSON.stringify([ ...propsOf(found) ])}`);
  } finally {
    if (reader) await reader.shutdown();
    await c.shutdown();
  }
}

async function pushConsumer(kind, t, consume) {
  const c = new PushConsumer({
    ...base(),
    consumerGroup: group(kind),
    subscriptions: new Map([[ t, FilterExpression.SUB_ALL ]]),
    messageListener: { consume },
  });
  await c.startup();
  return c;
}

async function pushConsume() {
  const t = topic('push');
  const n = 20;
  const expected = new Map();
  const seen = new Map();
  for (let i = 0; i < n / 2; i++) {
    const b = bodyFor(i, 'push');
    expected.set((await producer.send(message(t, b, 'push'))).messageId, b);
  }
  const c = await pushConsumer('push', t, async m => {
    if (!seen.has(m.messageId)) seen.set(m.messageId, []);
    seen.get(m.messageId).push(Buffer.from(m.body));
    return ConsumeResult.SUCCESS;
  });
  try {
    await sleep(1000);
    for (let i = n / 2; i < n; i++) {
      const b = bodyFor(i, 'push');
      expected.set((await producer.send(message(t, b, 'push'))).messageId, b);
    }
    const end = Date.now() + 60000;
    while ([ ...expected.keys() ].some(id => !seen.has(id)) && Date.now() < end) await sleep(200);
    await sleep(3000); // give duplicates a chance to show up
    const missing = [ ...expected.keys() ].filter(id => !seen.has(id));
    check(missing.length === 0, `push consumer got ${n - missing.length} of ${n} messages`);
    const dups = [ ...seen ].filter(([ , v ]) => v.length > 1).map(([ k, v ]) => `${k} x${v.length}`);
    check(dups.length === 0, `consumed more than once: ${dups}`);
    const extra = [ ...seen.keys() ].filter(id => !expected.has(id));
    check(extra.length === 0, `unexpected messages ${extra}`);
    for (const [ id, b ] of expected) check(seen.get(id)[0].equals(b), `body differs for ${id}`);
  } finally {
    await c.shutdown();
  }
}

async function pushRetry() {
  const t = topic('pushretry');
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push((await producer.send(message(t, `nack ${RUN} ${i}`, 'nack'))).messageId);
  const attempts = new Map();
  const c = await pushConsumer('pushretry', t, async m => {
    if (!attempts.has(m.messageId)) attempts.set(m.messageId, []);
    const a = attempts.get(m.messageId);
    a.push(m.deliveryAttempt);
    return a.length === 1 ? ConsumeResult.FAILURE : ConsumeResult.SUCCESS;
  });
  try {
    const end = Date.now() + 60000;
    while (Date.now() < end && !ids.every(id => (attempts.get(id) || []).length >= 2)) await sleep(200);
    await sleep(3000);
    const bad = ids.filter(id => JSON.stringify(attempts.get(id) || []) !== '[1,2]')
      .map(id => `${id}: ${JSON.stringify(attempts.get(id) || [])}`);
    check(bad.length === 0, `delivery attempts per message (want [1,2]): ${bad}`);
  } finally {
    await c.shutdown();
  }
}

async function unknownTopic() {
  try {
    await producer.send(message(topic('missing'), 'nobody home', 'x'));
  } catch (e) {
    check(e.code === TOPIC_NOT_FOUND || String(e.message).includes(String(TOPIC_NOT_FOUND)),
      `expected TOPIC_NOT_FOUND (${TOPIC_NOT_FOUND}), got ${e.name} code ${e.code}: ${e.message}`);
    return;
  }
  throw new Failed('send to an unknown topic succeeded');
}

async function oversizedBody() {
  const big = Buffer.alloc(MAX_BODY + 1, 'x');
  try {
    await producer.send(message(topic('normal'), big, 'big'));
    throw new Failed(`a ${big.length}-byte body was accepted`);
  } catch (e) {
    if (e instanceof Failed) throw e;
    const m = `${e.code || ''} ${e.message}`.toLowerCase();
    check(m.includes('exceed') || m.includes('too large') || m.includes('41301') || m.includes('41300'),
      `unexpected error for an oversized body: ${e.name}: ${e.message}`);
  }
  check((await producer.send(message(topic('normal'), 'small after big', 'small'))).messageId,
    'producer broken after the oversized send');
}

function quantiles(values) {
  const v = [ ...values ].sort((a, b) => a - b);
  return `min ${v[0]} p50 ${v[Math.floor(v.length / 2)]} max ${v[v.length - 1]}`;
}

function delayMessage(t, body, tag, atMs, props) {
  return { ...message(t, body, tag, null, props), deliveryTimestamp: new Date(atMs) };
}

async function delay() {
  const t = topic('delay');
  const n = 10;
  const c = await simple('delay', t, new FilterExpression('delay'));
  try {
    const due = new Map();
    const t0 = Date.now();
    for (let i = 0; i < n; i++) {
      const at = t0 + 1000 + (i * 337) % 3000;
      const r = await producer.send(delayMessage(t, `delay ${RUN} ${i}`, 'delay', at, { seq: String(i) }));
      due.set(r.messageId, at);
    }
    check(due.size === n, 'duplicate message ids in send receipts');
    const late = new Map();
    const problems = [];
    const end = Math.max(...due.values()) + 30000;
    while (late.size < n && Date.now() < end) {
      const got = await receive(c, 32, INVISIBLE_MS);
      const now = Date.now();
      for (const m of got) {
        await c.ack(m);
        const id = m.messageId;
        if (!due.has(id)) problems.push(`unexpected message ${id}`);
        else if (late.has(id)) problems.push(`${id} delivered twice`);
        else {
          const l = now - due.get(id);
          late.set(id, l);
          if (l < -EARLY_SLACK_MS) problems.push(`seq ${propsOf(m).get('seq')} delivered ${-l} ms before its delivery timestamp`);
        }
      }
    }
    check(problems.length === 0, first10(problems));
    check(late.size === n, `${n - late.size} of ${n} DELAY messages never delivered (30 s past the last due time)`);
    passDetail = `lateness ms ${quantiles([ ...late.values() ])} (n=${n})`;
  } finally {
    await c.shutdown();
  }
}

async function recall() {
  const t = topic('delay');
  const c = await simple('recall', t, new FilterExpression('recall'));
  try {
    const at = Date.now() + 3000;
    const r1 = await producer.send(delayMessage(t, `recall me ${RUN}`, 'recall', at));
    check(r1.recallHandle, 'the send receipt of a DELAY message has no recall handle');
    const rr = await producer.recallMessage(t, r1.recallHandle);
    const recalled = rr && rr.messageId ? rr.messageId : '';
    check(!recalled || recalled === r1.messageId, `RecallMessage answered message id ${recalled}, recalled ${r1.messageId}`);
    const id2 = (await producer.send(delayMessage(t, `keep me ${RUN}`, 'recall', at))).messageId;
    const got = new Map();
    while (Date.now() < at + 30000 && (Date.now() < at + 2000 || !got.has(id2))) {
      const batch = await receive(c, 32, INVISIBLE_MS);
      const now = Date.now();
      for (const m of batch) {
        await c.ack(m);
        if (!got.has(m.messageId)) got.set(m.messageId, now);
      }
    }
    check(!got.has(r1.messageId), 'the recalled message was delivered');
    check(got.has(id2), 'the message that was not recalled never arrived (30 s past its due time)');
    check(got.size === 1, `unexpected messages ${[ ...got.keys() ]}`);
    passDetail = `recalled one absent until ${((Date.now() - at) / 1000).toFixed(1)} s past due; kept one ${got.get(id2) - at} ms late`;
  } finally {
    await c.shutdown();
  }
}

async function transaction() {
  const t = topic('tx');
  const roles = new Map();
  const calls = []; // {id, role, at}
  const txp = new Producer({
    ...base(),
    topics: [ t ],
    checker: {
      async check(m) {
        const id = m.messageId;
        const role = roles.get(id);
        const first = !calls.some(c => c.id === id);
        calls.push({ id, role, at: Date.now() });
        return role === 'unresolved' && first ? TransactionResolution.COMMIT
          : TransactionResolution.TRANSACTION_RESOLUTION_UNSPECIFIED;
      },
    },
  });
  await txp.startup();
  const c = await simple('tx', t, FilterExpression.SUB_ALL);
  try {
    const idOf = new Map();
    const sentAt = new Map();
    const txs = new Map();
    for (const role of [ 'commit', 'rollback', 'unresolved' ]) {
      const tx = txp.beginTransaction();
      const r = await txp.send(message(t, `tx ${RUN} ${role}`, 'tx', null, { role }), tx);
      roles.set(r.messageId, role);
      idOf.set(role, r.messageId);
      sentAt.set(role, Date.now());
      txs.set(role, tx);
    }
    const seen = new Map();
    const problems = [];
    const take = async (m, committed) => {
      const id = m.messageId;
      const role = roles.get(id);
      seen.set(id, (seen.get(id) || 0) + 1);
      await c.ack(m);
      if (!role) problems.push(`unexpected message ${id}`);
      else if (role === 'rollback') problems.push('the rolled-back half message was delivered');
      else if (role === 'commit' && !committed) problems.push('the half message was delivered before commit()');
      else if (role === 'unresolved' && !calls.some(call => call.id === id)) {
        problems.push('the unresolved half message was delivered before the checker was asked');
      }
    };
    // Before anything is committed: at least one full receive and 3 s, nothing but a checked-back message.
    const t0 = Date.now();
    for (let rounds = 0; rounds === 0 || Date.now() - t0 < 3000; rounds++) {
      for (const m of await receive(c, 32, INVISIBLE_MS)) await take(m, false);
    }
    check(problems.length === 0, first10(problems));
    await txs.get('commit').commit();
    await txs.get('rollback').rollback();
    const end = Date.now() + TX_WINDOW_MS;
    while (Date.now() < end) {
      for (const m of await receive(c, 32, INVISIBLE_MS)) await take(m, true);
    }
    check(problems.length === 0, first10(problems));
    const unresolved = calls.filter(call => call.role === 'unresolved');
    check(unresolved.length > 0, `the checker was never asked about the unresolved half message (calls: ${calls.length})`);
    const counts = [ 'commit', 'rollback', 'unresolved' ].map(r => `${r}=${seen.get(idOf.get(r)) || 0}`).join(' ');
    check(counts === 'commit=1 rollback=0 unresolved=1', `deliveries per half message: ${counts}`);
    const others = [ ...new Set(calls.filter(call => call.role !== 'unresolved').map(call => call.role)) ].sort();
    passDetail = `check-back after ${Math.min(...unresolved.map(u => u.at)) - sentAt.get('unresolved')} ms; asked `
      + `${unresolved.length}x about the unresolved one${others.length ? `, also about ${others} (answered unknown)` : ''}`;
  } finally {
    await c.shutdown();
    await txp.shutdown();
  }
}

async function priority() {
  const reason = process.env.FERROMQ_SKIP_PRIORITY;
  if (reason) throw new Skipped(reason);
  const t = topic('priority');
  const prios = [ 1, 5, 3, 5, 9, 1 ];
  const label = new Map();
  const sent = [];
  for (let i = 0; i < prios.length; i++) {
    const m = { ...message(t, `prio ${RUN} ${i}`, 'prio', null, { seq: String(i) }), priority: prios[i] };
    const id = (await producer.send(m)).messageId;
    label.set(id, `p${prios[i]}#${i}`);
    sent.push({ id, prio: prios[i] });
  }
  // Array.prototype.sort is stable: equal priorities keep send order.
  const want = [ ...sent ].sort((a, b) => b.prio - a.prio).map(s => s.id);
  const c = await simple('priority', t, FilterExpression.SUB_ALL);
  try {
    const order = [];
    const end = Date.now() + 60000;
    while (order.length < prios.length && Date.now() < end) {
      for (const m of await receive(c, 32, INVISIBLE_MS)) { order.push(m.messageId); await c.ack(m); }
    }
    for (const m of await receive(c, 32, INVISIBLE_MS)) { order.push(m.messageId); await c.ack(m); } // nothing more
    const shown = order.map(id => label.get(id) || id).join(' ');
    const wanted = want.map(id => label.get(id)).join(' ');
    check(shown === wanted, `delivered ${shown}; want ${wanted}`);
    passDetail = `order ${shown}`;
  } finally {
    await c.shutdown();
  }
}

// ---- runner ----

let failures = 0;
let skipped = 0;

function report(name, verdict, detail) {
  let d = String(detail || '').replace(/\s+/g, ' ').trim();
  if (d.length > 300) d = d.slice(0, 300);
  const line = `node ${name} ${verdict} ${d}`.trim();
  console.log(`SCENARIO ${line}`);
  if (verdict === 'FAIL') failures++;
  if (verdict === 'SKIP') skipped++;
  if (process.env.FERROMQ_RESULTS_FILE) fs.appendFileSync(process.env.FERROMQ_RESULTS_FILE, `${line}\n`);
}

async function runScenario(name, f) {
  const t0 = Date.now();
  passDetail = '';
  try {
    await f();
    report(name, 'PASS', passDetail);
  } catch (e) {
    if (e instanceof Skipped) report(name, 'SKIP', e.message);
    else if (e instanceof Failed) report(name, 'FAIL', e.message);
    else {
      console.log(e && e.stack);
      report(name, 'FAIL', `${e && e.name}: ${e && e.message}`);
    }
  }
  console.log(`  ${name} took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

async function main() {
  console.log(`node client scenarios against ${ENDPOINT} (run ${RUN}, sslEnabled false: the client's default)`);
  try {
    // No topics declared up front: with topics, 1.0.8's startup() starts waiting for the first
    // Settings answer only after fetching their routes, and misses an answer that came earlier (a
    // fast local server); it then waits for the next settings sync, 5 minutes later. Routes are
    // fetched on the first send instead. The transactional producer declares its one topic (the
    // server sends check-backs to producers whose Settings name the topic).
    producer = new Producer(base());
    await producer.startup();
  } catch (e) {
    console.log(e && e.stack);
    for (const s of SCENARIOS) report(s, 'FAIL', `producer start failed: ${e}`);
    process.exit(1);
  }
  const all = [ sendReceiveAck, tagFilter, sqlFilter, redelivery, fifoOrder, deadLetter, pushConsume, pushRetry,
    unknownTopic, oversizedBody, delay, recall, transaction, priority ];
  for (let i = 0; i < all.length; i++) await runScenario(SCENARIOS[i], all[i]);
  try {
    await producer.shutdown();
  } catch (e) {
    console.log(`producer shutdown failed: ${e}`);
  }
  console.log(`node: ${SCENARIOS.length - failures - skipped} passed, ${failures} failed, ${skipped} skipped`);
  process.exit(failures === 0 ? 0 : 1);
}

main();
