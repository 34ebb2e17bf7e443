"""The sweeper: reconciles job records (the source of truth) with the queues, so that no job stays stuck.

One pass over every unfinished record (no Celery in here: sending is a callable the caller provides):
- **outbox**: a job recorded but never sent (the gateway died between the record and the send) is sent after
  DISPATCH_GRACE_S, under the task ids the record holds, so a late send of the gateway's own counts once;
- **dead or hung steps**: a running chunk, train or synth job whose worker stopped announcing itself
  (WORKER_HEARTBEAT_S, gone after three missed beats), whose worker name announces another process instance than
  the one that claimed it (restarted: gone at once), or whose lease (LEASE_S, renewed by every batch) expired is
  re-queued under a fresh task id; the old delivery, should Redis hand it out again, is stale and stops at once.
  After JOB_MAX_ATTEMPTS starts the job fails with the reason instead;
- **stranded tasks**: a queued chunk or job whose queue no live worker consumes is sent again to one that does;
  one whose queue has a worker idle for a whole grace period was lost (a Redis without persistence restarted)
  and is sent again under the same id;
- **assembly**: a predict job whose chunks all succeeded but whose assembler never ran or is gone (dead or restarted,
  as above) gets an assembly task (claiming it again is safe: the claim is under the record's lock, files are
  published once).

- **retention** (at most once an hour): finished jobs RETENTION_DAYS after they finished are deleted (record,
  files, Idempotency-Key), and datasets that old that no unfinished job reads.

Unfinished jobs come from the index of active jobs (shared/job_store.py), not from every record ever written.
Only one sweeper acts at a time (workers/background.py holds a lock in Redis); every change is a locked
read-modify-write of the record, so a worker finishing the same step meanwhile always wins over the sweeper.

Where each part lives: reconcile.py (the Sweeper: one pass over the active jobs, and the actions it takes),
liveness.py (whether the worker holding a step is dead, restarted or past its lease), retention.py (deleting what
is older than RETENTION_DAYS), messages.py (the task messages it sends).
"""

from workers.sweeper.messages import Send, TaskMessage
from workers.sweeper.reconcile import Sweeper

__all__ = ["Send", "Sweeper", "TaskMessage"]
