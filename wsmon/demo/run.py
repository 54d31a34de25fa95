"""``wsmon --demo``: the whole system alive on an embedded AWS endpoint, in one process.

A moto server on 127.0.0.1 (a free port) stands in for S3, DynamoDB, SNS and CloudWatch. The demo
creates the bucket, the store's tables and the SNS topic exactly as ``wsmon store init`` and an
operator would, uploads about forty workset folders in the Daylily layout (built from the real
folders in ``wsmon/demo/data/``), and runs the real engine with the simulated runner at a speed
where something happens every few seconds, while a background thread keeps dropping new folders
in. Then it opens the dashboard, or with ``--headless`` prints the engine's logs.

Nothing here is demo-only logic inside the engine: the demo is configuration (``demo_settings``)
plus a world to look at. On exit it stops the dropper, the engine and the server (no process or
port left behind) and prints where its state lived.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from wsmon.core.clock import SystemClock
from wsmon.core.exit_codes import EXIT_USAGE
from wsmon.engine.store.from_settings import open_store_from_settings
from wsmon.logging import configure_logging

if TYPE_CHECKING:
    from wsmon.cli.context import CliContext
    from wsmon.config.settings import Settings
    from wsmon.demo.worksets import DemoWorkset
    from wsmon.engine.store import Store

log = structlog.get_logger(__name__)

REGION = "us-west-2"
BUCKET = "daylily-demo-worksets"
PREFIX = "daylily_monitoring/active_worksets/"
TABLE = "wsmon-demo"
TOPIC = "wsmon-demo-events"
MONITOR_ID = "demo-engine"
CRASHED_MONITOR = "crashed-monitor"
STALE_WORKSET = "stale-lease-crashed-monitor"
STALE_LEASE_SECONDS = 600.0
# folders uploaded and registered before the rest, so the first rows show within seconds
FIRST_BATCH = 2
# The stand-in's account (moto's own default, set explicitly so this process need not import moto
# to know the ARNs it will hand out)
DEMO_ACCOUNT_ID = "123456789012"
DUMMY_AWS_ENV = {
    "MOTO_ACCOUNT_ID": DEMO_ACCOUNT_ID,
    "AWS_ACCESS_KEY_ID": "demo",
    "AWS_SECRET_ACCESS_KEY": "demo",
    "AWS_SESSION_TOKEN": "demo",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    # never read the operator's real profiles or credential files while the demo runs
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
# Worksets occupy 16-32 vCPUs, the seven-sample one 192 (demo_worksets.TEMPLATE_FOOTPRINT): the
# small cluster is short of vCPUs before it is short of slots, only two clusters take the big one.
CLUSTERS = [
    {"name": "demo-small", "availability_zone": "us-west-2a", "max_vcpus": 64,
     "max_memory_gb": 256.0, "max_concurrent_worksets": 3, "cost_per_vcpu_hour": 0.048},
    {"name": "demo-medium", "availability_zone": "us-west-2b", "max_vcpus": 256,
     "max_memory_gb": 1024.0, "max_concurrent_worksets": 3, "cost_per_vcpu_hour": 0.042},
    {"name": "demo-large", "availability_zone": "us-west-2d", "max_vcpus": 512,
     "max_memory_gb": 2048.0, "max_concurrent_worksets": 4, "cost_per_vcpu_hour": 0.036},
]


class DemoUnavailable(Exception):
    """The demo cannot start here (e.g. moto is not installed); the message says what to do."""


@contextmanager
def dummy_aws_credentials() -> Iterator[None]:
    """Dummy credentials for this process only, restored afterwards: the demo must never reach
    (or be billed by) real AWS, whatever the operator's environment holds."""
    saved = {k: os.environ.get(k) for k in (*DUMMY_AWS_ENV, "AWS_PROFILE")}
    os.environ.update(DUMMY_AWS_ENV)
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def embedded_aws(own_process: bool = True) -> Iterator[str]:
    """A moto server on 127.0.0.1, a free port; yields its URL and always stops it.

    In its own process by default, so the stand-in (which serves one request at a time) does not
    also compete for the GIL with every engine thread; it uses the second core. That shortens the
    queue each request waits in, but the endpoint stays the demo's bottleneck: every job's store
    reads wait for each other (bench/engine_health_bench.py measures lag and skipped runs).
    ``own_process=False``: a thread of this process (what the demo used before)."""
    import importlib.util

    # found, not imported: importing moto here (~0.5 s) would only delay the dashboard, and the
    # stand-in's own process imports it anyway
    missing = [name for name in ("moto", "flask", "cheroot") if importlib.util.find_spec(name) is None]
    if missing:  # the demo extra is optional; anything else is a real error
        raise DemoUnavailable(
            f"the demo needs moto's server ({', '.join(missing)} not installed): "
            "pip install 'wsmon[demo]'")
    from wsmon.demo.moto_server import serve_in_subprocess, serve_in_thread

    # the stand-in starts on the other core while this process carries on; its first requests
    # wait in the socket's backlog
    with (serve_in_subprocess(wait=False) if own_process else serve_in_thread("127.0.0.1", 0)) as url:
        yield url


def store_url_for(kind: str, endpoint: str, state_dir: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{state_dir / 'state.db'}"
    return f"dynamodb://{TABLE}?region={REGION}&endpoint_url={endpoint}"


def demo_settings(*, endpoint: str, state_dir: Path, store_kind: str, topic_arn: str | None,
                  ui_overrides: dict[str, Any] | None = None) -> Settings:
    """The demo's configuration: real settings, tuned so something happens every few seconds.

    Every few, not every one: each job's reads go to a stand-in that serves one request at a
    time, and the whole demo (engine, dashboard, stand-in) is meant to idle under half a core
    (bench/demo_bench.py). The dashboard refreshes at the product's default, 2 s.

    Built directly (not from the operator's config file or WSMON_* environment), so a demo can
    never point at a production store or bucket.
    """
    from wsmon.config.settings import Settings

    values: dict[str, Any] = {
        "monitor_id": MONITOR_ID,
        "state_dir": state_dir,
        "aws": {"region": REGION, "endpoint_url": endpoint, "max_attempts": 5},
        "store": {"url": store_url_for(store_kind, endpoint, state_dir), "lease_seconds": 20.0,
                  "heartbeat_seconds": 6.0, "max_clock_skew_seconds": 2.0},
        "discovery": {"sources": [{"bucket": BUCKET, "prefix": PREFIX}],
                      "poll_interval_seconds": 5.0, "reconcile_every": 20,
                      "ready_lock_backoff_seconds": 1.0,
                      "estimate_vcpus": 32, "estimate_memory_gb": 128.0,
                      # the stand-in serves one request at a time: more threads only queue
                      "list_workers": 4, "head_workers": 4},
        "clusters": {"static": CLUSTERS, "slurm_usage": False, "pcluster_discovery": False,
                     "refresh_interval_seconds": 5.0},
        "scheduler": {"interval_seconds": 2.0, "max_concurrent_worksets": 9,
                      "customer_quotas": {"acme-genomics": 3}},
        "runner": {"kind": "simulated", "workdir": str(state_dir / "work"),
                   # seed 4: the fixed-name folders (the real ones, the stale lease) succeed
                   "simulated_seed": 4,
                   "simulated_step_seconds": {"stage": 1.5, "clone": 1.0, "run": 7.0, "export": 1.5},
                   "simulated_transient_failure_rate": 0.12,
                   "simulated_permanent_failure_rate": 0.03,
                   "simulated_hang_rate": 0.0,
                   "shutdown_grace_seconds": 2.0, "max_parallel_worksets": 9},
        "retry": {"base_seconds": 2.0, "cap_seconds": 12.0, "max_retries": 2},
        "metrics": {"sink": "cloudwatch", "flush_interval_seconds": 10.0},
        "alerts": {"evaluate_interval_seconds": 5.0, "keep_firing_for_seconds": 15.0,
                   "queue_depth": {"threshold": 12, "for_seconds": 10.0},
                   "urgent_waiting": {"threshold": 1.0},
                   "error_rate": {"min_events": 12},
                   "stale_lease": {"for_seconds": 3.0},
                   "cluster_full": {"for_seconds": 10.0}},
        "notify": {"deliver_interval_seconds": 5.0, "sns_topic_arn": topic_arn},
        "logging": {"level": "info"},
        # toasts still announce alerts; a bell for each of the first minute's would only annoy
        "ui": {"refresh_interval": 2.0, "bell": False, **(ui_overrides or {})},
    }
    return Settings(**values)


def _aws_client(settings: Settings, service: str) -> Any:
    from wsmon.core.aws import client

    return client(service, region=settings.aws.region, endpoint_url=settings.aws.endpoint_url,
                  max_attempts=settings.aws.max_attempts)


def upload(s3: Any, bucket: str, folders: list[DemoWorkset], workers: int = 8) -> int:
    objects = [(key, body) for ws in folders for key, body in ws.files.items()]
    # sentinels last, as a careful uploader would: a folder must be complete before it is ready
    objects.sort(key=lambda kv: kv[0].rsplit("/", 1)[-1].startswith("daylily."))
    data = [kv for kv in objects if not kv[0].rsplit("/", 1)[-1].startswith("daylily.")]
    sentinels = [kv for kv in objects if kv not in data]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), data))
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), sentinels))
    return len(objects)


class Dropper(threading.Thread):
    """Drops a new workset folder into S3 every 10-20 s, so the screens stay alive."""

    def __init__(self, s3: Any, *, interval: tuple[float, float] = (10.0, 20.0), seed: int = 11) -> None:
        super().__init__(name="wsmon-demo-dropper", daemon=True)
        self._s3 = s3
        self._interval = interval
        self._rng = random.Random(seed)
        self._halt = threading.Event()
        self.dropped: list[str] = []

    def run(self) -> None:
        from wsmon.demo.worksets import dropped_workset

        n = 0
        while not self._halt.wait(self._rng.uniform(*self._interval)):
            n += 1
            folder = dropped_workset(n, bucket=BUCKET, prefix=PREFIX, now=SystemClock().now(),
                                     rng=self._rng)
            try:
                upload(self._s3, BUCKET, [folder], workers=2)
            except Exception as exc:  # the endpoint stopping under us at shutdown is expected
                if not self._halt.is_set():
                    log.warning("demo_drop_failed", workset=folder.name, error=str(exc))
                continue
            self.dropped.append(folder.name)
            log.info("demo_workset_dropped", workset=folder.name, priority=folder.priority)

    def stop(self, timeout: float = 5.0) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout)


@dataclass
class DemoWorld:
    endpoint: str
    state_dir: Path
    store_kind: str
    settings: Settings
    seeded: list[DemoWorkset] = field(default_factory=list)


def create_world(endpoint: str, state_dir: Path, store_kind: str,
                 ui_overrides: dict[str, Any] | None = None) -> DemoWorld:
    """The demo's settings (naming the SNS topic ``populate`` creates). Nothing is created or
    seeded yet, so logging can be set up before anything logs, and a dashboard can open as soon
    as the store's tables exist."""
    topic_arn = f"arn:aws:sns:{REGION}:{DEMO_ACCOUNT_ID}:{TOPIC}"
    settings = demo_settings(endpoint=endpoint, state_dir=state_dir, store_kind=store_kind,
                             topic_arn=topic_arn, ui_overrides=ui_overrides)
    return DemoWorld(endpoint=endpoint, state_dir=state_dir, store_kind=store_kind,
                     settings=settings)


def seed_world(world: DemoWorld, say: Callable[[str], None] = lambda _text: None) -> None:
    """Store tables (as `wsmon store init`), the seeded folders, one discovery pass, and the
    crashed monitor's lease. ``say`` reports progress to the person waiting."""
    init_store(world, say)
    populate(world, say)


def init_store(world: DemoWorld, say: Callable[[str], None] = lambda _text: None) -> None:
    """The store's tables, as `wsmon store init` makes them: all a dashboard needs to open."""
    settings = world.settings
    say(f"creating the store ({_shown_url(settings.store_url)})")
    store = open_store_from_settings(settings)
    try:
        for line in store.init_schema():
            log.info("demo_store", detail=line)
    finally:
        store.close()


def populate(world: DemoWorld, say: Callable[[str], None] = lambda _text: None,
             halt: threading.Event | None = None,
             first_rows_in: Callable[[], None] = lambda: None) -> None:
    """The seeded folders, one discovery pass and the crashed monitor's lease, then the chart
    history. The stale-lease folder and a first handful go up and are registered first, so a
    dashboard that is already open shows rows within seconds; the rest follow and are
    registered by the same pass. ``halt`` stops between steps (the operator quit meanwhile)."""
    from wsmon.demo.worksets import initial_worksets
    from wsmon.engine.runner import SimulatedRunner

    settings = world.settings
    halt = halt or threading.Event()
    store = open_store_from_settings(settings)
    try:
        world.seeded = initial_worksets(bucket=BUCKET, prefix=PREFIX, now=SystemClock().now(),
                                        fate=SimulatedRunner(settings).fate)
        s3 = _aws_client(settings, "s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        topic_arn = _aws_client(settings, "sns").create_topic(Name=TOPIC)["TopicArn"]
        if topic_arn != settings.notify.sns_topic_arn:
            log.warning("demo_topic_arn_differs", created=topic_arn,
                        configured=settings.notify.sns_topic_arn)
        say(f"uploading {len(world.seeded)} workset folders to s3://{BUCKET}/{PREFIX}")
        first = [ws for ws in world.seeded if ws.name == STALE_WORKSET] + \
            [ws for ws in world.seeded if ws.name != STALE_WORKSET][:FIRST_BATCH]
        rest = [ws for ws in world.seeded if ws not in first]
        count = upload(s3, BUCKET, first)
        if halt.is_set():
            return
        say("first discovery pass (validates every folder, checks every FASTQ exists)")
        crash_a_monitor(settings, store)
        first_rows_in()  # an open dashboard shows them now, not at its next refresh
        if halt.is_set():
            return
        # two at a time: the stand-in serves one request at a time, and the dashboard's read of
        # the first rows waits among these uploads
        count += upload(s3, BUCKET, rest, workers=2)
        log.info("demo_seeded", worksets=len(world.seeded), objects=count, bucket=BUCKET)
        if halt.is_set():
            return
        seed_history(store, SystemClock().now())
    finally:
        store.close()


def build_world(endpoint: str, state_dir: Path, store_kind: str,
                ui_overrides: dict[str, Any] | None = None) -> DemoWorld:
    world = create_world(endpoint, state_dir, store_kind, ui_overrides)
    seed_world(world)
    return world


def seed_history(store: Store, now: datetime, hours: int = 6, step_minutes: int = 5,
                 seed: int = 3) -> int:
    """Chart history for the hours before the demo started: a queue that filled in the morning
    and drained, clusters busy in proportion. Only what the charts draw (queue depth, cluster
    utilisation, throughput); the engine adds real samples every minute from then on."""
    import math

    from wsmon.engine.metrics import H_CLUSTER_UTILISATION, H_QUEUE_DEPTH, H_THROUGHPUT
    from wsmon.core.models import MetricSample

    rng = random.Random(seed)
    start = (now - timedelta(hours=hours)).replace(second=0, microsecond=0)
    samples: list[MetricSample] = []
    for i in range(hours * 60 // step_minutes):
        at = start + timedelta(minutes=i * step_minutes)
        wave = 0.5 + 0.5 * math.sin(i / 11.0)
        ready = max(0.0, round(6 + 22 * wave + rng.uniform(-3, 3)))
        running = min(10.0, max(1.0, round(3 + 6 * wave + rng.uniform(-1, 1))))
        samples += [
            MetricSample(name=H_QUEUE_DEPTH, at=at, value=ready, dimensions={"state": "ready"}),
            MetricSample(name=H_QUEUE_DEPTH, at=at, value=running, dimensions={"state": "in_progress"}),
            MetricSample(name=H_THROUGHPUT, at=at, value=round(running / 6 + rng.uniform(0, 0.3), 3)),
        ]
        for n, cluster in enumerate(CLUSTERS):
            util = min(1.0, max(0.0, 0.25 + 0.6 * wave * (1 - 0.2 * n) + rng.uniform(-0.1, 0.1)))
            samples.append(MetricSample(name=H_CLUSTER_UTILISATION, at=at, value=round(util, 3),
                                        dimensions={"cluster": cluster["name"]}))
    store.record_metric_samples(samples)
    return len(samples)


def crash_a_monitor(settings: Settings, store: Store) -> None:
    """One workset claimed by a monitor that then "crashed". Its lease runs for ten minutes, so
    an operator has time to find it (the engine_heartbeat alert names the silent monitor) and
    practise a release, which is allowed as soon as the holder's heartbeat is stale; left alone,
    the engine's sweep recovers it when the lease runs out."""
    from wsmon import __version__
    from wsmon.engine.s3 import S3Source

    # one discovery pass, as `wsmon scan` does, so the folder is registered before any engine runs
    S3Source(settings, store, monitor_id=MONITOR_ID).poll()
    lease = store.acquire_lock(STALE_WORKSET, CRASHED_MONITOR, lease_seconds=STALE_LEASE_SECONDS)
    if lease is None:
        log.warning("demo_stale_lease_not_set", workset=STALE_WORKSET)
        return
    store.update_state(STALE_WORKSET, "in_progress", reason="pipeline started", actor=CRASHED_MONITOR,
                       lease=lease, cluster_name="demo-large")
    store.record_monitor_heartbeat(CRASHED_MONITOR, "old-headnode", 31337, __version__, role="engine")


def _summary(settings: Settings) -> dict[str, int]:
    store = open_store_from_settings(settings)
    try:
        stats = store.queue_stats()
    finally:
        store.close()
    return {state: sum(by_priority.values()) for state, by_priority in sorted(stats.counts.items())}


def _run_headless(settings: Settings, timeout: float | None) -> int:
    from wsmon.engine.service import Engine

    stop = threading.Event()
    previous = {}

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not the main thread (in-process tests): Ctrl-C is the caller's
            pass
    clock = SystemClock()
    deadline = None if timeout is None else clock.monotonic() + timeout
    store = open_store_from_settings(settings)
    engine: Engine | None = None
    try:
        engine = Engine(settings, store=store, clock=None)
        engine.start()
        # Wake up often: a signal the kernel hands to another thread only runs its Python
        # handler when the main thread next executes bytecode, never inside an untimed wait.
        while not stop.wait(0.5):
            if deadline is not None and clock.monotonic() >= deadline:
                break
    finally:
        try:
            if engine is not None:
                engine.stop(settings.runner.shutdown_grace_seconds)
        finally:
            store.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return 0


def _import_dashboard() -> None:
    try:
        import wsmon.app  # noqa: F401
    except Exception as exc:  # the real import, on the main thread, reports it
        log.debug("demo_preimport_failed", error=str(exc))


def _run_dashboard(world: DemoWorld, start_dropper: Callable[[], None]) -> int:
    from wsmon.app import run_dashboard

    halt = threading.Event()

    def prepare(show_store_now: Callable[[], None]) -> None:
        # the dashboard is on screen meanwhile: progress goes to the log, not over the screen
        populate(world, say=lambda text: log.info("demo_seeding", step=text), halt=halt,
                 first_rows_in=show_store_now)
        if halt.is_set():
            raise DemoUnavailable("the dashboard closed while the demo was being seeded")
        start_dropper()

    # "engine": the dashboard runs the engine in this process (once the world is seeded) and
    # stops it when it quits
    try:
        return run_dashboard(world.settings, engine_mode="engine", prepare=prepare)
    finally:
        halt.set()


def run_demo(obj: CliContext, *, headless: bool, store_kind: str, timeout: float | None = None) -> int:
    """Run the demo until ``q``/Ctrl-C (dashboard) or SIGINT/SIGTERM/``timeout`` (headless).

    Returns the exit code. Leaves no thread, process or port behind.
    """
    import click

    ui = {k: v for k, v in obj.overrides.get("ui", {}).items() if k in ("theme", "read_only")}
    if obj.overrides.get("store", {}).get("url"):
        click.echo("wsmon --demo: ignoring --store; the demo brings its own store", err=True)
    state_dir = Path(tempfile.mkdtemp(prefix="wsmon-demo-"))
    out = sys.stdout if headless else sys.stderr
    code = 1
    summary: dict[str, int] = {}
    settings: Settings | None = None
    dropper: Dropper | None = None
    try:
        with dummy_aws_credentials(), embedded_aws() as endpoint:
            if not headless:
                # the dashboard's imports run while the AWS stand-in's process (started first, so
                # nothing here delays it) boots on the other core
                threading.Thread(target=_import_dashboard, name="wsmon-import", daemon=True).start()
            print(f"wsmon demo: AWS stand-in at {endpoint}, state in {state_dir}", file=out, flush=True)
            world = create_world(endpoint, state_dir, store_kind, ui_overrides=ui)
            settings = world.settings
            configure_logging(settings, "headless" if headless else "tui")
            say = lambda text: print(f"wsmon demo: {text}", file=out, flush=True)  # noqa: E731
            dropper = Dropper(_aws_client(settings, "s3"))
            try:
                if headless:
                    seed_world(world, say=say)
                    say(f"{len(world.seeded)} worksets in s3://{BUCKET}/{PREFIX}, store "
                        f"{_shown_url(settings.store_url)}; new worksets arrive every 10-20 s")
                    dropper.start()
                    code = _run_headless(settings, timeout)
                else:
                    # the dashboard opens on the empty store; seeding runs behind it
                    init_store(world, say=say)
                    code = _run_dashboard(world, dropper.start)
            except KeyboardInterrupt:
                code = 0
            finally:
                dropper.stop()
            try:
                summary = _summary(settings)
            except Exception as exc:
                log.warning("demo_summary_failed", error=str(exc))
    except DemoUnavailable as exc:
        click.echo(f"wsmon --demo: {exc}", err=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        code = 0
    if store_kind != "sqlite":
        # the tables lived on the stand-in and are gone; nothing here is worth keeping (q, a
        # closed SSH session and SIGTERM all end here)
        shutil.rmtree(state_dir, ignore_errors=True)
    _print_where(state_dir, store_kind, settings, summary, dropper)
    return code


def _shown_url(url: str) -> str:
    return url.split("?", 1)[0]


def _print_where(state_dir: Path, store_kind: str, settings: Settings | None,
                 summary: dict[str, int], dropper: Dropper | None) -> None:
    print("", flush=True)
    if summary:
        # one machine-readable line (tests and scripts read it), then words for people
        print("wsmon demo summary: " + json.dumps(summary, sort_keys=True))
        dropped = len(dropper.dropped) if dropper else 0
        print(f"wsmon demo: {sum(summary.values())} worksets in the store "
              f"({dropped} new folders dropped in while it ran): "
              + ", ".join(f"{n} {state}" for state, n in summary.items() if n))
    if store_kind == "sqlite" and settings is not None:
        print(f"wsmon demo: state lived in {state_dir} (store {settings.store_url}); look again with\n"
              f"  wsmon --store {settings.store_url} list")
    else:
        print(f"wsmon demo: state lived in DynamoDB tables on the embedded endpoint, gone with it, "
              f"and its temporary directory {state_dir} is removed")
    print("wsmon demo: stopped the engine, the dropper and the AWS stand-in", flush=True)
