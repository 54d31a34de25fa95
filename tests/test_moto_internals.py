"""The moto internals wsmon/demo/moto_server.py relies on are still where it expects them.

The demo store and the tests' shared endpoint patch moto's DynamoDB backend (per-item transaction
rollback) and serve moto's WSGI app directly. pyproject pins moto below the next minor release;
when that pin is raised, these tests say exactly what moved instead of the demo silently going
slow (a table deep-copied per transaction) or failing to start.
"""

from __future__ import annotations

import inspect
import re
from importlib.metadata import version
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from packaging.requirements import Requirement
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
MOVED = "moto's internals moved: update wsmon/demo/moto_server.py, then the moto pin in pyproject.toml"


def _moto_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(spec) for group in ("demo", "dev") for spec in extras[group]
            if Requirement(spec).name == "moto"]


def test_cheroot_is_pinned_below_an_untested_release_and_still_binds_through_bind() -> None:
    """moto_server.py serves an inherited socket by overriding cheroot's ``bind``."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements = [Requirement(spec) for group in ("demo", "dev") for spec in extras[group]
                    if Requirement(spec).name == "cheroot"]
    assert len(requirements) == 2, "both the demo and dev extras serve the stand-in with cheroot"
    for requirement in requirements:
        assert any(spec.operator in ("<", "<=", "~=", "==") for spec in requirement.specifier), requirement
        assert Version(version("cheroot")) in requirement.specifier
    from cheroot.server import HTTPServer

    assert list(inspect.signature(HTTPServer.bind).parameters) == ["self", "family", "type", "proto"]
    assert "self.bind(" in inspect.getsource(HTTPServer.prepare), "cheroot's prepare() no longer binds via bind()"


def test_the_stand_in_keeps_connections_open_and_serves_an_inherited_socket() -> None:
    """Keep-alive (a new connection per request cost ~1-2 ms of CPU each), on the socket the
    demo makes before the stand-in's process starts, and an empty object (botocore sends it with
    ``Expect: 100-continue``) is stored with its lowercase metadata, as S3 does."""
    import http.client
    import socket
    from urllib.parse import urlsplit

    from botocore.config import Config

    from wsmon.demo.moto_server import serve_in_subprocess

    with serve_in_subprocess() as endpoint:
        where = urlsplit(endpoint)
        conn = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
        try:
            conn.request("GET", "/")
            first = conn.getresponse()
            first.read()
            sock = conn.sock
            assert isinstance(sock, socket.socket)
            assert (first.getheader("Connection") or "").lower() != "close"
            conn.request("GET", "/")
            conn.getresponse().read()
            assert conn.sock is sock, "the second request needed a new connection"
        finally:
            conn.close()
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          config=Config(read_timeout=10, retries={"max_attempts": 1}))
        s3.create_bucket(Bucket="empty-object-check")
        s3.put_object(Bucket="empty-object-check", Key="folder/.hold", Body=b"",
                      Metadata={"wsmon-writer": "test"})
        head = s3.head_object(Bucket="empty-object-check", Key="folder/.hold")
        assert head["ContentLength"] == 0 and head["Metadata"] == {"wsmon-writer": "test"}


def test_moto_is_pinned_below_an_untested_release_and_the_installed_one_fits() -> None:
    requirements = _moto_requirements()
    assert len(requirements) == 2, "both the demo and dev extras need moto's server"
    installed = Version(version("moto"))
    for requirement in requirements:
        assert any(spec.operator in ("<", "<=", "~=", "==") for spec in requirement.specifier), (
            f"{requirement} has no upper bound; wsmon/demo/moto_server.py uses moto's internals")
        assert installed in requirement.specifier, f"installed moto {installed} is outside {requirement}"


def test_moto_still_backs_up_whole_tables_through_the_models_copy_module() -> None:
    """The per-item rollback works by replacing ``copy`` in moto's DynamoDB models module: that is
    only faster while moto's transaction takes its backup as ``copy.deepcopy(self.tables[...])``."""
    from moto.dynamodb import models

    source = inspect.getsource(models)
    assert re.search(r"^import copy$", source, re.M), MOVED
    assert re.search(r"copy\.deepcopy\(\s*self\.tables\[", source), MOVED
    assert "transact_items" in inspect.signature(models.DynamoDBBackend.transact_write_items).parameters, MOVED
    for name in ("get_table", "get_item", "put_item", "delete_item"):
        assert callable(getattr(models.DynamoDBBackend, name, None)), f"{MOVED} (DynamoDBBackend.{name})"
    table_init = inspect.getsource(models.Table.__init__)
    assert "self.hash_key_attr" in table_init and "self.range_key_attr" in table_init, MOVED


def test_moto_server_application_parts_are_importable() -> None:
    try:
        from moto.moto_server.werkzeug_app import (  # noqa: F401
            DomainDispatcherApplication,
            create_backend_app,
        )
    except ImportError as exc:
        pytest.fail(f"{MOVED}: {exc}")
    # the stand-in builds its services' backend apps before serving
    assert isinstance(DomainDispatcherApplication(create_backend_app).app_instances, dict), MOVED


def test_a_cancelled_transaction_on_the_embedded_endpoint_changes_nothing_and_copies_no_table(
        moto_endpoint: str, unique_name: str) -> None:
    from moto.dynamodb import models

    assert getattr(models.DynamoDBBackend.transact_write_items, "_wsmon_per_item", False), (
        "the embedded endpoint runs without the per-item rollback patch")
    table = object.__new__(models.Table)
    assert models.copy.deepcopy(table) is table, "tables are deep-copied again on every transaction"

    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    client.create_table(TableName=unique_name, BillingMode="PAY_PER_REQUEST",
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
    client.put_item(TableName=unique_name, Item={"pk": {"S": "a"}, "v": {"N": "1"}})
    with pytest.raises(ClientError) as cancelled:
        client.transact_write_items(TransactItems=[
            {"Put": {"TableName": unique_name, "Item": {"pk": {"S": "a"}, "v": {"N": "2"}}}},
            {"Put": {"TableName": unique_name, "Item": {"pk": {"S": "b"}, "v": {"N": "2"}}}},
            {"ConditionCheck": {"TableName": unique_name, "Key": {"pk": {"S": "missing"}},
                                "ConditionExpression": "attribute_exists(pk)"}},
        ])
    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert client.get_item(TableName=unique_name, Key={"pk": {"S": "a"}})["Item"]["v"] == {"N": "1"}
    assert "Item" not in client.get_item(TableName=unique_name, Key={"pk": {"S": "b"}})


def test_item_responses_written_as_plain_json_read_back_as_motos_serializer_writes_them(
        moto_endpoint: str, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded endpoint skips moto's shape-walking serializer for item operations (most of
    the demo's CPU): every such response, binary and nested values, sets, empty results, paging
    keys and consumed capacity included, must parse to exactly what moto's serializer writes."""
    import json

    from moto.core.responses import BaseResponse
    from moto.dynamodb.responses import DynamoHandler

    from wsmon.demo.moto_server import PLAIN_JSON_ACTIONS

    fast = DynamoHandler.serialized
    assert getattr(fast, "_wsmon_plain_json", False), "the embedded endpoint serialises item responses the slow way"
    compared: dict[str, int] = {}
    differences: list[str] = []

    def both(self, action_result):  # noqa: ANN001, ANN202 - moto's own signature
        status, headers, body = fast(self, action_result)
        _, serializer_headers, expected = BaseResponse.serialized(self, action_result)
        action = self._get_action()
        if action in PLAIN_JSON_ACTIONS and status == 200:
            compared[action] = compared.get(action, 0) + 1
            if json.loads(body) != json.loads(expected):
                differences.append(f"{action}: {body} != {expected}")
            if headers.get("Content-Type") != serializer_headers.get("Content-Type"):
                differences.append(f"{action}: content type {headers.get('Content-Type')}")
        return status, headers, body

    monkeypatch.setattr(DynamoHandler, "serialized", both)
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    client.create_table(TableName=unique_name, BillingMode="PAY_PER_REQUEST",
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                   {"AttributeName": "sk", "KeyType": "RANGE"}],
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                              {"AttributeName": "sk", "AttributeType": "N"}])
    rich = {"blob": {"B": b"\x00\xffbinary"}, "blobs": {"BS": [b"\x01", b"\x02"]},
            "names": {"SS": ["a", "b"]}, "numbers": {"NS": ["1", "2.5"]}, "flag": {"BOOL": False},
            "nothing": {"NULL": True}, "text": {"S": "ünïcode [b]markup[/b] \x1b[31m"},
            "nested": {"M": {"blob": {"B": b"zz"}, "list": {"L": [{"N": "1"}, {"NULL": True},
                                                                 {"M": {"deep": {"S": "x"}}}]}}}}
    capacity = {"ReturnConsumedCapacity": "TOTAL"}
    for i in range(5):
        client.put_item(TableName=unique_name, Item={"pk": {"S": "p"}, "sk": {"N": str(i)}, **rich},
                        **capacity)
    key = {"pk": {"S": "p"}, "sk": {"N": "1"}}
    client.get_item(TableName=unique_name, Key=key, **capacity)
    client.get_item(TableName=unique_name, Key={"pk": {"S": "p"}, "sk": {"N": "99"}})
    page = client.query(TableName=unique_name, KeyConditionExpression="pk = :p", Limit=2,
                        ExpressionAttributeValues={":p": {"S": "p"}}, **capacity)
    assert "LastEvaluatedKey" in page
    client.query(TableName=unique_name, KeyConditionExpression="pk = :p",
                 ExpressionAttributeValues={":p": {"S": "none"}})
    client.query(TableName=unique_name, KeyConditionExpression="pk = :p", Select="COUNT",
                 ExpressionAttributeValues={":p": {"S": "p"}})
    client.scan(TableName=unique_name, ProjectionExpression="pk, nested.#l",
                ExpressionAttributeNames={"#l": "list"})
    client.update_item(TableName=unique_name, Key=key, UpdateExpression="SET #f = :t",
                       ExpressionAttributeNames={"#f": "flag"},
                       ExpressionAttributeValues={":t": {"BOOL": True}}, ReturnValues="ALL_NEW")
    client.delete_item(TableName=unique_name, Key=key, ReturnValues="ALL_OLD")
    client.batch_write_item(RequestItems={unique_name: [
        {"PutRequest": {"Item": {"pk": {"S": "q"}, "sk": {"N": "1"}, **rich}}}]})
    client.batch_get_item(RequestItems={unique_name: {"Keys": [
        {"pk": {"S": "q"}, "sk": {"N": "1"}}, {"pk": {"S": "p"}, "sk": {"N": "2"}}]}})
    client.transact_write_items(TransactItems=[
        {"Put": {"TableName": unique_name, "Item": {"pk": {"S": "t"}, "sk": {"N": "1"}}}}])
    client.transact_get_items(TransactItems=[
        {"Get": {"TableName": unique_name, "Key": {"pk": {"S": "q"}, "sk": {"N": "1"}}}}])

    assert not differences, "\n".join(differences)
    assert set(compared) == set(PLAIN_JSON_ACTIONS), f"not exercised: {set(PLAIN_JSON_ACTIONS) - set(compared)}"
