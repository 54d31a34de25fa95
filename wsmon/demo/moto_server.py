"""A local moto DynamoDB endpoint that behaves enough like DynamoDB for races and benchmarks.

Three differences from stock moto matter to the DynamoDB store:

* moto makes ``TransactWriteItems`` rollback-safe by deep-copying every table the transaction
  touches, on every call. A store that writes each transition as one transaction (the workset
  update plus its event) then costs O(table size) per request, so 10,000 transitions take hours
  and gigabytes. ``use_per_item_transaction_rollback`` snapshots only the items the transaction
  names and restores them if it is cancelled: the same all-or-nothing result.
* moto evaluates a condition and applies the write without a lock, so two concurrent requests can
  both pass ``attribute_not_exists(...)``. DynamoDB serialises writes per item.
  ``python -m wsmon.demo.moto_server`` runs a server whose backend handles one request at a time
  (connections are still accepted in parallel), which models that per-item atomicity.
* moto 5.2 writes every response by walking botocore's output shapes member by member; for the
  item operations that is most of the stand-in's CPU (a 40-item Scan: ~250 ms to serialise, a few
  to answer), which alone kept the demo's one-request-at-a-time endpoint saturated.
  ``use_plain_json_item_responses`` writes the item operations' results as the JSON they already
  are (DynamoDB's wire format: ``{"S": ...}`` maps), base64 for binary, members without a value
  left out, as the serializer does; ``tests/test_moto_internals.py`` checks both give the same.

The server is cheroot rather than moto's werkzeug one, for HTTP/1.1 keep-alive (``StandInServer``),
and ``serve_in_subprocess`` hands it a socket made in the parent, so the URL is known before the
stand-in's process has imported moto.

moto is a development dependency (the ``dev``/``demo`` extras); nothing in the engine imports this.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

_patch_lock = threading.Lock()
log = logging.getLogger(__name__)


def use_per_item_transaction_rollback() -> None:
    """Patch moto (in this process) so a transaction snapshots items, not whole tables."""
    from moto.dynamodb import models

    with _patch_lock:
        backend = models.DynamoDBBackend
        if getattr(backend.transact_write_items, "_wsmon_per_item", False):
            return
        original = backend.transact_write_items
        table_type = models.Table
        real_deepcopy = copy.deepcopy

        class _CopyWithoutTables:
            """``copy`` for moto's models module: tables are not copied (we snapshot items)."""

            @staticmethod
            def deepcopy(obj: Any, memo: Any = None) -> Any:
                if isinstance(obj, table_type):
                    return obj
                return real_deepcopy(obj, memo)

            def __getattr__(self, name: str) -> Any:
                return getattr(copy, name)

        models.copy = _CopyWithoutTables()  # type: ignore[attr-defined]

        def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
            before: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
            for entry in transact_items:
                try:
                    op_type, op = next(iter(entry.items()))
                    table_name = op["TableName"]
                    table = self.get_table(table_name)
                    if op_type == "Put":
                        key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
                        if table.range_key_attr is not None:
                            key[table.range_key_attr] = op["Item"][table.range_key_attr]
                    else:
                        key = op["Key"]
                    prev = self.get_item(table_name, key)
                    before.append((table_name, key,
                                   None if prev is None else prev.to_json()["Attributes"]))
                except Exception:  # noqa: BLE001 - moto reports a malformed request itself
                    continue
            try:
                return original(self, transact_items)
            except Exception:
                for table_name, key, attrs in reversed(before):
                    try:
                        if attrs is None:
                            self.delete_item(table_name, key)
                        else:
                            self.put_item(table_name, attrs)
                    except Exception:  # noqa: BLE001 - the item was never written
                        pass
                raise

        transact_write_items._wsmon_per_item = True  # type: ignore[attr-defined]
        backend.transact_write_items = transact_write_items  # type: ignore[method-assign]


# The operations whose results moto builds as wire-format dicts of items (no timestamps, no shapes
# that rename members); everything else, errors included, goes through moto's own serializer.
PLAIN_JSON_ACTIONS = frozenset({
    "GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "BatchGetItem",
    "BatchWriteItem", "TransactGetItems", "TransactWriteItems",
})


def _output_members(value: Any, shape: Any) -> Any:
    """``value`` with only the members ``shape`` declares and that have a value, as the serializer
    writes it (moto's results carry extras, e.g. DeleteItem's ``ConsumedCapacityUnits``). Item
    maps are already in wire format and are passed through whole, which is where the time goes."""
    if shape is None or value is None:
        return value
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        if shape.name == "AttributeValue":
            return value
        members = shape.members
        return {k: _output_members(v, members[k]) for k, v in value.items()
                if k in members and v is not None}
    if kind == "list" and isinstance(value, list):
        return [_output_members(v, shape.member) for v in value]
    if kind == "map" and isinstance(value, dict):
        if shape.value.name == "AttributeValue":
            return value
        return {k: _output_members(v, shape.value) for k, v in value.items() if v is not None}
    return value


def _binary_as_base64(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not part of an item response")


def plain_json_item_response(action: str, result: Any, output_shape: Any) -> str | None:
    """The response body for ``action``'s ``result``, or None when moto's serializer must write it."""
    if action not in PLAIN_JSON_ACTIONS or not isinstance(result, dict) or output_shape is None:
        return None
    try:
        return json.dumps(_output_members(result, output_shape), default=_binary_as_base64,
                          separators=(",", ":"))
    except TypeError:
        return None  # something unexpected in the result: the serializer knows its shape


def use_plain_json_item_responses() -> None:
    """Patch moto (in this process) so DynamoDB item operations answer without the shape walk."""
    from moto.core.responses import get_service_model
    from moto.dynamodb.responses import DynamoHandler

    with _patch_lock:
        if getattr(DynamoHandler.serialized, "_wsmon_plain_json", False):
            return
        original = DynamoHandler.serialized

        output_shapes: dict[str, Any] = {}

        def output_shape(action: str) -> Any:
            if action not in output_shapes:
                service = get_service_model("dynamodb")
                output_shapes[action] = service.operation_model(action).output_shape
            return output_shapes[action]

        def serialized(self: Any, action_result: Any) -> Any:
            action = self._get_action()
            body = (plain_json_item_response(action, action_result.result, output_shape(action))
                    if action in PLAIN_JSON_ACTIONS else None)
            if body is None:
                return original(self, action_result)
            headers = {"Content-Type": "application/x-amz-json-1.0", "server": "amazon.com"}
            headers.update(self.response_headers)
            return 200, headers, body

        serialized._wsmon_plain_json = True  # type: ignore[attr-defined]
        DynamoHandler.serialized = serialized  # type: ignore[method-assign]


class StandInServer:
    """moto's WSGI app behind cheroot (CherryPy's HTTP/1.1 server), so botocore keeps its
    connections open: werkzeug's development server closes each one after a response, and a
    new TCP connection plus a new server thread per request cost ~1-2 ms of CPU a request on
    the two ends together, in a demo that makes dozens a second. Header names are passed as
    sent (S3 metadata keys stay lowercase), and an empty PUT with ``Expect: 100-continue``
    (botocore's, for an empty object) is answered."""

    def __init__(self, app: Any, host: str, port: int, fd: int | None) -> None:
        from cheroot import wsgi

        class Server(wsgi.Server):
            def bind(self, family: int, type: int, proto: int = 0) -> socket.socket:
                if fd is None:
                    return super().bind(family, type, proto)
                # the parent made and bound the listening socket; serve that one
                self.socket = socket.socket(fileno=fd)
                self.bind_addr = self.socket.getsockname()[:2]
                return self.socket

            def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
                # through logging, where the process's configuration sends it (a log file under
                # the dashboard), never straight to the terminal as cheroot does
                log.log(level, "%s", msg, exc_info=traceback)

        # 4 threads: requests are served one at a time anyway (see make_server); the others
        # read the next request off their connection meanwhile
        self._server = Server((host, port), app, numthreads=4, server_name="wsmon-aws-stand-in")
        self._server.prepare()
        self.port: int = self._server.bind_addr[1]

    def serve_forever(self) -> None:
        self._server.serve()

    def shutdown(self) -> None:
        self._server.stop()

    def server_close(self) -> None:
        """Nothing is left open after ``shutdown`` (kept for werkzeug's calling convention)."""


def make_server(host: str = "127.0.0.1", port: int = 0, *, one_at_a_time: bool = True,
                fd: int | None = None, warm: tuple[str, ...] = ()) -> StandInServer:
    """A server running moto's backends; ``serve_forever()`` it, ``.port`` tells where.
    ``fd``: an inherited listening socket instead of binding ``port``; ``warm``: services whose
    backend apps are built now rather than by their first request."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    use_per_item_transaction_rollback()
    use_plain_json_item_responses()
    app = DomainDispatcherApplication(create_backend_app)
    for service in warm:
        app.app_instances.setdefault(service, create_backend_app(service))
    if not one_at_a_time:
        return StandInServer(app, host, port, fd)
    lock = threading.Lock()

    def serialised(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        # The whole request, condition check and write, runs alone: DynamoDB's per-item
        # atomicity, modelled coarsely as one request at a time.
        with lock:
            return list(app(environ, start_response))

    return StandInServer(serialised, host, port, fd)


@contextlib.contextmanager
def serve_in_thread(host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """``make_server`` in a thread of this process; yields its URL and always shuts it down.

    The demo and the tests' shared endpoint use this: the engine makes concurrent requests by
    design, and stock moto's backends are not thread-safe (a TransactWriteItems deep-copies a
    table while another request writes to it: "dictionary changed size during iteration").
    """
    server = make_server(host, port, one_at_a_time=True)
    thread = threading.Thread(target=server.serve_forever, name="wsmon-moto", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def serve_in_subprocess(timeout: float = 60.0, *, wait: bool = True) -> Iterator[str]:
    """Run ``python -m wsmon.demo.moto_server`` in its own process; yields its endpoint URL.

    The listening socket is made here and handed to the child, so the URL is known at once.
    ``wait=False`` yields without waiting for the child to start serving: requests made
    meanwhile wait in the socket's backlog (the demo opens its dashboard during those ~1.5 s),
    and if the child dies they are refused, not left hanging."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        env = dict(os.environ)
        env.setdefault("AWS_ACCESS_KEY_ID", "testing")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        proc = subprocess.Popen(
            [sys.executable, "-m", "wsmon.demo.moto_server", "--fd", str(listener.fileno())],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
            pass_fds=(listener.fileno(),))
    finally:
        listener.close()  # the child's copy is the only one: a dead child refuses connections
    try:
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(proc.stdout.readline()),  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        if wait:
            reader.join(timeout)
            line = ready[0].strip() if ready else ""
            if not line.startswith("listening "):
                raise RuntimeError(f"local moto server did not start (exit code {proc.poll()})")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# What the demo and the tests talk to; made before serving, so no first request pays for it.
WARM_SERVICES = ("dynamodb", "s3", "sns", "sqs", "cloudwatch")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="moto's AWS backends, one request at a time")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--fd", type=int, default=None,
                        help="serve on this already listening socket (inherited from the parent)")
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port, fd=args.fd, warm=WARM_SERVICES)
    # The parent reads this line to learn the port (0 = chosen by the OS).
    print(f"listening http://{args.host}:{server.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
