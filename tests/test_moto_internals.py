"""The moto internals wsmon/demo/moto_server.py relies on are still where it expects them.

The demo store and the tests' shared endpoint patch moto's DynamoDB backend (per-item transaction
rollback) and serve moto's werkzeug app directly. pyproject pins moto below the next minor release;
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
            MotoRequestHandler,
            create_backend_app,
        )
    except ImportError as exc:
        pytest.fail(f"{MOVED}: {exc}")


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
