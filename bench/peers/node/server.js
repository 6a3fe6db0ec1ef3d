// The receiver a merchant would write by hand, for bench/run to measure beside
// ipayout-webhook behind the same nginx and TLS, on the same PostgreSQL.
// Fastify and pg (node-postgres) as a merchant would use them, with their
// defaults: one process, a pool of 10 connections, one INSERT per request
// (autocommit), the i-payout signature check of docs/ipayout.md and
// de-duplication by a unique key. Not part of the product.
//
// Environment:
//   PEER_PORT              where it listens (127.0.0.1), nginx proxies to it
//   DATABASE_URL           PostgreSQL; the peer creates its own table peer.events
//   PEER_TOKEN             the secret last segment of the webhook URL
//   PEER_NOTIFICATION_URL  the URL registered with i-payout (it is signed)
//   PEER_KEY               the endpoint's i-payout key (HMAC key)
//   PEER_PG_POOL           pool size (default 10, node-postgres's own default)
'use strict';

const crypto = require('node:crypto');
const Fastify = require('fastify');
const { Pool } = require('pg');

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`peer: ${name} is not set`);
    process.exit(2);
  }
  return v;
}

const port = Number(need('PEER_PORT'));
const token = need('PEER_TOKEN');
const notificationUrl = need('PEER_NOTIFICATION_URL');
const key = need('PEER_KEY');
const pool = new Pool({
  connectionString: need('DATABASE_URL'),
  max: Number(process.env.PEER_PG_POOL || 10),
});

const sha256 = (data) => crypto.createHash('sha256').update(data).digest();
// Compared as digests: equal lengths for timingSafeEqual, and no early exit.
const tokenDigest = sha256(token);
const REPLAY_WINDOW_S = 300;

function signature(ts, body) {
  const digest = sha256(Buffer.concat([Buffer.from(`${ts}#${notificationUrl}#`), body]));
  return crypto.createHmac('sha256', key).update(digest).digest();
}

function signatureOk(ts, sig, body) {
  if (typeof ts !== 'string' || typeof sig !== 'string') return false;
  if (!/^\d{1,11}$/.test(ts) || Math.abs(Date.now() / 1000 - Number(ts)) > REPLAY_WINDOW_S) {
    return false;
  }
  const got = Buffer.from(sig, 'base64');
  const want = signature(ts, body);
  return got.length === want.length && crypto.timingSafeEqual(got, want);
}

const app = Fastify({ logger: false, bodyLimit: 1048576 });
// The raw bytes: the signature is over the body exactly as received.
app.removeAllContentTypeParsers();
app.addContentTypeParser(/^application\/([\w.-]+\+)?json\b/i, { parseAs: 'buffer' },
  (req, body, done) => done(null, body));

app.post('/ipayout/webhooks/:token', async (req, reply) => {
  const given = sha256(String(req.params.token));
  if (!crypto.timingSafeEqual(given, tokenDigest)) {
    return reply.code(404).send({ error: 'not_found' });
  }
  const body = req.body;
  if (!Buffer.isBuffer(body)) return reply.code(415).send({ error: 'unsupported_media_type' });
  if (!signatureOk(req.headers['x-timestamp'], req.headers['x-signature'], body)) {
    return reply.code(401).send({ error: 'bad_signature' });
  }
  const text = body.toString('utf8');
  let doc;
  try {
    doc = JSON.parse(text);
  } catch {
    return reply.code(400).send({ error: 'bad_json' });
  }
  if (!doc || typeof doc.event !== 'string' || doc.event === '') {
    return reply.code(400).send({ error: 'bad_event' });
  }
  const dedupKey = typeof doc.eventId === 'string' ? `/eventId=${doc.eventId}`
    : crypto.createHash('sha256').update(body).digest('hex');
  try {
    const ins = await pool.query(
      'INSERT INTO peer.events (event, dedup_key, payload, raw_body) VALUES ($1, $2, $3, $4) ' +
      'ON CONFLICT (dedup_key) DO NOTHING RETURNING id',
      [doc.event, dedupKey, text, text]);
    if (ins.rows.length) return { status: 'accepted', id: Number(ins.rows[0].id) };
    const dup = await pool.query('SELECT id FROM peer.events WHERE dedup_key = $1', [dedupKey]);
    return { status: 'duplicate', id: Number(dup.rows[0].id) };
  } catch (e) {
    // Anything from the database: let i-payout deliver again.
    return reply.code(503).header('Retry-After', '5').send({ error: 'unavailable' });
  }
});

async function main() {
  await pool.query(`CREATE SCHEMA IF NOT EXISTS peer;
    CREATE TABLE IF NOT EXISTS peer.events (
      id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      event       text NOT NULL,
      dedup_key   text NOT NULL UNIQUE,
      payload     jsonb NOT NULL,
      raw_body    text NOT NULL,
      received_at timestamptz NOT NULL DEFAULT now())`);
  await app.listen({ host: '127.0.0.1', port });
  console.log(`peer: listening on 127.0.0.1:${port}`);
}

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => app.close().then(() => pool.end()).then(() => process.exit(0)));
}

main().catch((e) => {
  console.error(`peer: ${e.message}`);
  process.exit(1);
});
