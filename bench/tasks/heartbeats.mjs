// Benchmark 4's load: NODES simulated nodes on the node WebSocket, each
// saying hello (CREDIT, default 0: heartbeats only; CAPABILITIES, default
// echo, comma-separated) and heartbeating every
// INTERVAL_S seconds at a random phase, as smart-node does: without a ref, so
// the server answers only a refusal. Registers its nodes first (operator KEY,
// scope nodes). Prints "ready" once every node is welcomed, then, after
// SECONDS, "heartbeats_sent_per_s errors" (bench/tasks/realtime.sh checks in
// the database that they were recorded).
import WebSocket from 'ws';

const server = process.env.SERVER;
const key = process.env.KEY;
const count = Number(process.env.NODES);
const prefix = process.env.PREFIX;
const intervalMs = Number(process.env.INTERVAL_S || 5) * 1000;
const seconds = Number(process.env.SECONDS_EACH || 20);
const localAddress = process.env.LOCAL_ADDRESS || '127.0.0.1';
const credit = Number(process.env.CREDIT || 0);
const capabilities = (process.env.CAPABILITIES || 'echo').split(',');

async function register(i) {
  for (let attempt = 0; attempt < 5; attempt++) {
    let r;
    try {
      r = await fetch(`${server}/api/v1/nodes/register`, {
        method: 'POST',
        headers: { 'X-API-Key': key, 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: `${prefix}-${i}`, capabilities, capacity: Math.max(1, credit) }),
      });
    } catch (e) {  // a kept-alive connection closed under the request: try again
      await new Promise((resolve) => setTimeout(resolve, 200));
      continue;
    }
    if (r.status === 201) return (await r.json()).id;
    if (r.status !== 429 && r.status < 500) throw new Error(`register: ${r.status} ${await r.text()}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error('register: gave up');
}

const ids = [];
for (let i = 0; i < count; i += 64) {
  const batch = [];
  for (let j = i; j < Math.min(count, i + 64); j++) batch.push(register(j));
  ids.push(...(await Promise.all(batch)));
}

let sent = 0;
let errors = 0;
let measuring = false;
const sockets = [];
// One node's socket; a connection the server dropped before the welcome
// (a burst of 10,000 upgrades) is tried again, up to 5 times.
const connect = (id, attempt = 0) => new Promise((resolve, reject) => {
  const ws = new WebSocket(`${server.replace('http://', 'ws://')}/api/v1/nodes/ws`,
    { headers: { 'X-API-Key': key }, localAddress, perMessageDeflate: false });
  let welcomed = false;
  ws.on('open', () => ws.send(JSON.stringify({ type: 'hello', node_id: id, credit })));
  ws.on('message', (data) => {
    const m = JSON.parse(data);
    if (m.type === 'welcome') {
      welcomed = true;
      setTimeout(() => {
        const beat = () => {
          if (ws.readyState !== WebSocket.OPEN) return;
          ws.send(JSON.stringify({ type: 'heartbeat', load: 0, running: 0 }));
          if (measuring) sent++;
        };
        beat();
        setInterval(beat, intervalMs);
      }, Math.random() * intervalMs);
      sockets.push(ws);
      resolve();
    } else if (m.type === 'error') {
      errors++;
    }
  });
  ws.on('error', (e) => {
    if (welcomed) return;
    if (attempt >= 4) return reject(e);
    setTimeout(() => connect(id, attempt + 1).then(resolve, reject), 200);
  });
});
await Promise.all(ids.map((id) => connect(id)));
console.log('ready');
await new Promise((resolve) => setTimeout(resolve, intervalMs));  // every node has beaten once
measuring = true;
await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
measuring = false;
console.log(`${(sent / seconds).toFixed(0)} ${errors}`);
for (const ws of sockets) ws.terminate();
process.exit(0);
