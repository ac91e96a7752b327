// The peer: BullMQ doing the same no-op job flow on the same machine.
// Producers add jobs as fast as they are acknowledged; a worker (concurrency
// 64) completes them; RATE paces the producers (for latency at half load),
// BULK adds that many jobs per call (addBulk). Prints "completed_per_s submitted_per_s p50_ms p99_ms"
// (from adding a job to the worker receiving it).
import { Queue, Worker } from 'bullmq';

const port = Number(process.env.REDIS_PORT);
const seconds = Number(process.env.SECONDS_EACH || 10);
const producers = Number(process.env.PRODUCERS || 8);
const rate = Number(process.env.RATE || 0);  // tasks/s in all; 0: as fast as acknowledged
const bulk = Number(process.env.BULK || 1);  // jobs per add (addBulk)
const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null };
const queue = new Queue('bench', { connection });
const latencies = [];
let completed = 0;
let submitted = 0;
let stop = false;
const worker = new Worker('bench', async (job) => {
  latencies.push(Date.now() - job.data.t);
  return job.data.t;
}, { connection, concurrency: 64 });
worker.on('completed', () => { completed++; });
await worker.waitUntilReady();
const loops = Array.from({ length: producers }, async (_, p) => {
  let next = Date.now() + (rate > 0 ? (producers * bulk / rate) * 1000 * p / producers : 0);  // staggered, as tasks_sim
  while (!stop) {
    if (rate > 0) {  // as tasks_sim: the first add at the producer's offset, then one an interval
      const wait = next - Date.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      next += (producers * bulk / rate) * 1000;
      if (stop) break;
    }
    if (bulk > 1) {
      const t = Date.now();
      await queue.addBulk(Array.from({ length: bulk }, () => ({ name: 'echo', data: { t }, opts: { removeOnComplete: true, removeOnFail: true } })));
    } else {
      await queue.add('echo', { t: Date.now() }, { removeOnComplete: true, removeOnFail: true });
    }
    submitted += bulk;
  }
});
await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
stop = true;
const done = completed;
const added = submitted;
await Promise.all(loops);
await worker.close();  // the backlog, if any, goes with this run's redis-server (run.sh starts one a run)
await queue.close();
latencies.sort((a, b) => a - b);
const pct = (p) => latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] : 0;
console.log(`${(done / seconds).toFixed(0)} ${(added / seconds).toFixed(0)} ${pct(0.5)} ${pct(0.99)}`);
process.exit(0);
