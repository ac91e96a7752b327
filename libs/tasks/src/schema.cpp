#include "smart/tasks/coordinator.hpp"

namespace smart::tasks {

std::vector<store::Migration> Coordinator::Migrations() {
  const char* sql = R"sql(
CREATE TABLE tasks (
  id TEXT PRIMARY KEY,
  requester TEXT NOT NULL,
  type TEXT NOT NULL,
  input TEXT NOT NULL,
  input_is_json INTEGER NOT NULL,
  parameters TEXT NOT NULL,
  priority INTEGER NOT NULL,
  status TEXT NOT NULL,
  asset TEXT NOT NULL,
  cost TEXT NOT NULL,
  max_cost TEXT,
  timeout_s BIGINT NOT NULL,
  max_attempts INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  failures INTEGER NOT NULL,
  node_id TEXT,
  lease_expires_ms BIGINT NOT NULL,
  progress INTEGER NOT NULL,
  progress_message TEXT NOT NULL,
  output TEXT,
  proof_hash TEXT,
  error TEXT,
  escrow_id TEXT NOT NULL,
  idem_key TEXT UNIQUE,
  fingerprint TEXT NOT NULL,
  created_ms BIGINT NOT NULL,
  updated_ms BIGINT NOT NULL,
  completed_ms BIGINT NOT NULL
);
CREATE INDEX tasks_queue ON tasks (priority DESC, created_ms) WHERE status = 'pending';
CREATE INDEX tasks_requester ON tasks (requester, id);
CREATE INDEX tasks_node ON tasks (node_id) WHERE status IN ('assigned', 'in_progress');
CREATE INDEX tasks_leases ON tasks (lease_expires_ms) WHERE status IN ('assigned', 'in_progress');
CREATE TABLE task_events (
  task_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  ts_ms BIGINT NOT NULL,
  status TEXT NOT NULL,
  node_id TEXT,
  detail TEXT NOT NULL,
  PRIMARY KEY (task_id, seq)
);
CREATE TABLE nodes (
  id TEXT PRIMARY KEY,
  operator_id TEXT NOT NULL,
  name TEXT NOT NULL UNIQUE,
  capabilities TEXT NOT NULL,
  capacity INTEGER NOT NULL,
  hardware TEXT NOT NULL,
  endpoint TEXT NOT NULL,
  state TEXT NOT NULL,
  stake TEXT NOT NULL,
  stake_id TEXT,
  slashed TEXT NOT NULL,
  slashes INTEGER NOT NULL,
  reputation INTEGER NOT NULL,
  load INTEGER NOT NULL,
  running INTEGER NOT NULL,
  last_heartbeat_ms BIGINT NOT NULL,
  created_ms BIGINT NOT NULL,
  completed BIGINT NOT NULL,
  failed BIGINT NOT NULL,
  timed_out BIGINT NOT NULL
);
CREATE INDEX nodes_operator ON nodes (operator_id);
CREATE TABLE task_settings (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  paused INTEGER NOT NULL,
  min_stake TEXT NOT NULL,
  max_tasks_per_node INTEGER NOT NULL,
  min_timeout_s BIGINT NOT NULL,
  max_timeout_s BIGINT NOT NULL
);
)sql";
  // Fair queueing between requesters, scheduled tasks, deadlines, retries.
  const char* fair = R"sql(
ALTER TABLE tasks ADD COLUMN fair_key BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN not_before_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN deadline_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
DROP INDEX tasks_queue;
CREATE INDEX tasks_queue ON tasks (priority DESC, fair_key, created_ms) WHERE status = 'pending';
CREATE INDEX tasks_deadlines ON tasks (deadline_ms) WHERE status = 'pending' AND deadline_ms > 0;
CREATE TABLE task_requesters (
  requester TEXT PRIMARY KEY,
  last_key BIGINT NOT NULL
);
CREATE TABLE task_clock (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  vtime BIGINT NOT NULL
);
INSERT INTO task_clock (id, vtime) VALUES (1, 0);
)sql";
  // Dead letters per requester, and their count for the network's stats.
  const char* dead = "CREATE INDEX tasks_dead ON tasks (requester, id) WHERE status IN ('failed', 'timed_out');";
  // A requester's running tasks (the per-requester cap) without walking its
  // whole history; the claimable types for pushed work from the index alone.
  const char* active = R"sql(
CREATE INDEX tasks_requester_active ON tasks (requester) WHERE status IN ('assigned', 'in_progress');
CREATE INDEX tasks_pending_types ON tasks (not_before_ms, type) WHERE status = 'pending';
)sql";
  // Redundant execution: a task with replicas (2 or 3) is run by as many
  // child tasks on different nodes; their results are compared.
  const char* replicas = R"sql(
ALTER TABLE tasks ADD COLUMN replicas INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN parent_id TEXT;
CREATE INDEX tasks_parent ON tasks (parent_id) WHERE parent_id IS NOT NULL;
)sql";
  // The pending queue by type first: a claim reads the head of each type its
  // node runs, and dispatch counts what is claimable per type, without
  // walking a backlog of other types (or of tasks scheduled for later).
  // not_before_ms and status last, so the count reads the index alone.
  const char* by_type = R"sql(
DROP INDEX tasks_queue;
DROP INDEX tasks_pending_types;
CREATE INDEX tasks_ready ON tasks (type, priority DESC, fair_key, created_ms, not_before_ms, status)
  WHERE status = 'pending';
)sql";
  // A task's history in its own row (a line per event, see internal.hpp):
  // the transitions every task makes append in the statement that changes the
  // row, instead of two more B-tree inserts each (task_events and its key).
  const char* history_sqlite = R"sql(
ALTER TABLE tasks ADD COLUMN history TEXT NOT NULL DEFAULT '';
UPDATE tasks SET history = (
  SELECT group_concat(line, '') FROM (
    SELECT json_array(e.ts_ms, e.status, e.node_id, json(e.detail)) || char(10) AS line
    FROM task_events e WHERE e.task_id = tasks.id ORDER BY e.seq))
WHERE id IN (SELECT task_id FROM task_events);
DROP TABLE task_events;
)sql";
  const char* history_postgres = R"sql(
ALTER TABLE tasks ADD COLUMN history TEXT NOT NULL DEFAULT '';
UPDATE tasks SET history = e.lines FROM (
  SELECT task_id, string_agg(CAST(json_build_array(ts_ms, status, node_id, CAST(detail AS json)) AS TEXT) || chr(10),
                             '' ORDER BY seq) AS lines
  FROM task_events GROUP BY task_id) e
WHERE e.task_id = tasks.id;
DROP TABLE task_events;
)sql";
  // Fair share first, priority within it: each requester has a lane per
  // priority (a higher priority takes smaller steps), and the queue is in key
  // order, so no requester's priorities hold back another's first task by
  // more than a few. A lane starts where its requester's single line was.
  // tasks_backlog: each requester's pending tasks of a type, in queue order
  // (a claim whose head holds only requesters at their cap reads the others'
  // heads there).
  const char* lanes = R"sql(
CREATE TABLE task_lanes (
  requester TEXT NOT NULL,
  priority INTEGER NOT NULL,
  last_key BIGINT NOT NULL,
  PRIMARY KEY (requester, priority)
);
INSERT INTO task_lanes (requester, priority, last_key)
  SELECT r.requester, p.priority, r.last_key FROM task_requesters r
  CROSS JOIN (SELECT 0 AS priority UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3) p;
DROP TABLE task_requesters;
DROP INDEX tasks_ready;
CREATE INDEX tasks_ready ON tasks (type, fair_key, priority DESC, created_ms, not_before_ms, status)
  WHERE status = 'pending';
CREATE INDEX tasks_backlog ON tasks (type, requester, fair_key, priority DESC, created_ms) WHERE status = 'pending';
)sql";
  // Several instances on one database. attach_epoch: which of a node's
  // attachments (node WebSockets, on any instance) may be given work, the
  // one whose first claim moved it last. silence_announced_ms: the last beat
  // whose silence was announced (node_status offline), so that of the
  // instances' sweeps only one announces it.
  const char* instances = R"sql(
ALTER TABLE nodes ADD COLUMN attach_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN silence_announced_ms BIGINT NOT NULL DEFAULT 0;
)sql";
  return {{300, "tasks", sql, ""},
          {301, "tasks_fair_scheduled", fair, ""},
          {302, "tasks_dead_letters", dead, ""},
          {303, "tasks_active_indexes", active, ""},
          {304, "tasks_replicas", replicas, ""},
          {305, "tasks_ready_by_type", by_type, ""},
          {306, "tasks_history_in_row", history_sqlite, history_postgres},
          {307, "tasks_priority_lanes", lanes, ""},
          {308, "nodes_of_several_instances", instances, ""}};
}

}  // namespace smart::tasks
