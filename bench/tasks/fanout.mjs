// Benchmark 5's load: CLIENTS idle client WebSockets on /api/v1/ws (API key
// KEY, scope tasks:read), each subscribed to network_stats. Prints "retried
// N" (connections opened again) and "ready" once all are subscribed; then,
// for SECONDS, writes the delay from each network_stats event's timestamp to
// its arrival (ms, one per line) to OUT, and prints "events_received".
import WebSocket from 'ws';
import { writeFileSync } from 'node:fs';

const server = process.env.SERVER;
const key = process.env.KEY;
const count = Number(process.env.CLIENTS);
const seconds = Number(process.env.SECONDS_EACH || 10);
const localAddress = process.env.LOCAL_ADDRESS || '127.0.0.1';
const delays = [];
let measuring = false;
const sockets = [];
const url = `${server.replace('http://', 'ws://')}/api/v1/ws`;
// A connection that fails before it is subscribed is opened again (up to 5
// times, counted): with every process on the same 2 cores, this one may be
// starved long enough to send its upgrade after the server's header timeout
// (10 s), and the server then closes the connection unanswered.
let retried = 0;
const open = (attempt = 0) => new Promise((resolve, reject) => {
  const ws = new WebSocket(url, { headers: { 'X-API-Key': key }, localAddress, perMessageDeflate: false });
  let subscribed = false, failed = false;
  const fail = (e) => {
    if (subscribed || failed) return;
    failed = true;
    ws.terminate();
    if (attempt >= 5) return reject(e);
    retried++;
    setTimeout(() => open(attempt + 1).then(resolve, reject), 100);
  };
  ws.on('open', () => ws.send(JSON.stringify({ type: 'subscribe', network_stats: true })));
  ws.on('message', (data) => {
    const now = Date.now();
    const m = JSON.parse(data);
    if (m.type === 'subscribed') {
      subscribed = true;
      resolve();
    } else if (m.type === 'network_stats' && measuring) delays.push(now - Date.parse(m.ts));
  });
  ws.on('error', fail);
  ws.on('close', (code) => fail(new Error(`closed with ${code} before it was subscribed`)));
  sockets.push(ws);
});
for (let i = 0; i < count; i += 500) {
  const batch = [];
  for (let j = i; j < Math.min(count, i + 500); j++) batch.push(open());
  await Promise.all(batch);
}
console.log(`retried ${retried}`);
console.log('ready');
await new Promise((resolve) => setTimeout(resolve, 2000));
measuring = true;
await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
measuring = false;
writeFileSync(process.env.OUT, delays.join('\n') + '\n');
console.log(`${delays.length}`);
for (const ws of sockets) ws.terminate();
process.exit(0);
