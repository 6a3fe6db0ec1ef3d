// Follow i-payout events from Node.js (npm "pg"): LISTEN, catch up with poll on
// connect and on every notification, ack after the work.
//
//   cd examples/node && npm ci
//   DATABASE_URL=postgresql://billing@db.example.com/payments node consumer.js
//
// Optional: IPAYOUT_CONSUMER (default "billing"), IPAYOUT_EVENTS (LIKE pattern,
// default "%"), MAX_EVENTS and TIMEOUT_SECONDS (exit after that many, or that long).
// Delivery is at-least-once: an event is handled again if the process stops
// between handle() and the ack, so make handle() idempotent. It exits on a
// database error: run it under systemd (Restart=always); it resumes after the last ack.
'use strict';
const { Client } = require('pg');

const consumer = process.env.IPAYOUT_CONSUMER || 'billing';
const pattern = process.env.IPAYOUT_EVENTS || '%';
const maxEvents = Number(process.env.MAX_EVENTS) || Infinity;
const deadline = Date.now() + (Number(process.env.TIMEOUT_SECONDS) || Infinity) * 1000;

async function handle(event) {
  // Your work goes here. Runs at least once per event.
  console.log(JSON.stringify({ id: event.id, event: event.event, payload: event.payload }));
}

async function main() {
  const client = new Client({ connectionString: process.env.DATABASE_URL });
  await client.connect();
  await client.query('LISTEN ipayout_events'); // before the first poll: nothing slips between
  await client.query("SELECT ipayout.subscribe($1, 'end', $2)", [consumer, pattern]);

  let handled = 0;
  async function catchUp() {
    while (handled < maxEvents) {
      const batch = Math.min(100, maxEvents - handled);
      const { rows } = await client.query(
        'SELECT id, event, payload FROM ipayout.poll($1, $2) ORDER BY txid, id', [consumer, batch]);
      for (const row of rows) await handle(row);
      if (rows.length > 0) {
        // After the work: a crash before this line brings them again.
        await client.query('SELECT ipayout.ack($1, $2)', [consumer, rows[rows.length - 1].id]);
      }
      handled += rows.length;
      if (rows.length < batch) return;
    }
  }

  // Wake-ups only: the table is the truth.
  let woken = false;
  let wake = () => {};
  client.on('notification', () => { woken = true; wake(); });
  for (;;) {
    woken = false;
    await catchUp();
    const left = deadline - Date.now();
    if (handled >= maxEvents || left <= 0) break;
    if (!woken) {
      // Wait for a notification, at most 5 s: an event can become readable
      // without one of its own (when a long transaction elsewhere ends).
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, Math.min(5000, left));
        wake = () => { clearTimeout(timer); resolve(); };
      });
      wake = () => {};
    }
  }
  await client.end();
}

main().catch((err) => {
  console.error(`consumer: ${err.message}`);
  process.exit(1);
});
