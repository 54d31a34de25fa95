"""DynamoDB state store: ``dynamodb://TABLE?region=REGION[&endpoint_url=URL][&profile=NAME]``.

Six tables, all created by ``init_schema`` / ``wsmon store init`` (idempotent, on-demand
billing, waiting until ACTIVE): ``TABLE`` (worksets), ``TABLE-events``, ``TABLE-meta``,
``TABLE-alerts``, ``TABLE-outbox``, ``TABLE-metrics`` (schema.py has the keys and indexes).

One module per concern:

``codec.py``     Python values <-> attribute values, expression placeholders
``client.py``    every request, error mapping (missing table, refused action, throttling,
                 unreachable endpoint), paging and batch loops
``schema.py``    tables and GSIs, ``init_schema``
``cache.py``     the last version of each workset item this instance saw
``writes.py``    the workset item and the one conditional write path (rule -> plan -> write)
``worksets.py``  register, read, the queue listing, state changes, history
``leases.py``    claim, heartbeat, release, adopt, force release, expired leases
``meta.py``      monitors, key/value, named leases, clusters, silences (``TABLE-meta``)
``alerts.py``    alerts and their (rule, subject) dedup guard
``outbox.py``    the notification outbox: dedup, coalescing, delivery, pruning
``metrics.py``   metric history and its name registry
``store.py``     ``DynamoDBStore``: the URL, the client, the mixins together

What an operation may do is decided by ``wsmon.engine.store.rules``, as for every backend;
these modules read, write under a condition and map errors.

Concurrency. Every workset write is conditional on the item's ``version`` (bumped by every
write) and, for a lease holder, on its ``fence`` and owner; a claim is also conditional on the
claim rule itself. A transition's event must be written under the next ``seq``, which cannot be
known without knowing the item, so the store keeps the last version it saw of each item. With
that, a claim or a transition is exactly one ``TransactWriteItems`` request (the conditional
Update of the workset plus the Put of its event). A stale cache entry costs a failed write,
whose ``ALL_OLD`` item refreshes the cache, and a retry; a record this instance never read
costs one GetItem first. That is the failure path, never the correctness: nothing is written
unless the condition holds.

No Scan anywhere. Every path that runs per poll or per screen refresh (``list_worksets``,
``queue_stats``, ``expired_leases``, ``worksets_changed_since``, ``list_alerts``,
``due_notifications``, ``list_notifications``, ``metric_history``, ``list_monitors``,
``events``) is a Query or a GetItem. The only paths that read many items at once are the hourly
prunes: ``prune_metric_history`` (a Query per registered metric name, then batched deletes),
``prune_notifications`` (a range Query per final status on ``status-due-index``) and
``prune_alerts`` (a range Query on ``state-updated-index``).
"""

from wsmon.engine.store.dynamodb.schema import TABLE_SUFFIXES
from wsmon.engine.store.dynamodb.store import DynamoDBStore

__all__ = ["TABLE_SUFFIXES", "DynamoDBStore"]
