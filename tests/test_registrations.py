"""Each extension point is one file plus one registration (docs/architecture.md, "Where to add"),
and a forgotten registration fails here instead of going quietly unnoticed:

- an alert rule needs an entry in ``RULES`` and a settings section in ``AlertsSettings`` (without
  the section the evaluator skips the rule: silently disabled);
- a screen or dialog needs an entry in ``wsmon.screens.all_screen_classes`` (without it its binding
  ids cannot be rebound in ``[keymap]`` and are missing from the key help: only a warning at start);
- a notification channel needs a branch in ``build_channels`` (without it no configuration turns it on);
- a store backend needs a URL scheme in ``wsmon.core.store_url``, a branch in ``open_store``, and a
  parameter of the contract suite's ``store`` fixture.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]


def _package_modules(package: ModuleType) -> list[ModuleType]:
    """The package and every module under it, imported."""
    modules = [package]
    for info in pkgutil.walk_packages(getattr(package, "__path__", []), prefix=package.__name__ + "."):
        modules.append(importlib.import_module(info.name))
    return modules


def _classes_defined_in(package: ModuleType, base: type) -> set[type]:
    return {obj for module in _package_modules(package) for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, base) and obj is not base
            and obj.__module__ == module.__name__}


def _leaves(classes: set[type]) -> set[type]:
    """The classes no other class of the set derives from (bases such as WsmonDialog are not registered)."""
    return {c for c in classes if not any(other is not c and issubclass(other, c) for other in classes)}


# ------------------------------------------------------------------------------------------------
# alert rules
# ------------------------------------------------------------------------------------------------


def test_every_alert_rule_has_a_settings_section_and_every_section_a_rule() -> None:
    from wsmon.config.settings import AlertRuleSettings, AlertsSettings
    from wsmon.engine.alerts import RULES

    sections = {name for name, field in AlertsSettings.model_fields.items()
                if inspect.isclass(field.annotation) and issubclass(field.annotation, AlertRuleSettings)}
    assert sections, "AlertsSettings has no rule sections: has AlertRuleSettings been renamed?"
    assert not set(RULES) - sections, (
        f"alert rule(s) {sorted(set(RULES) - sections)} have no section in AlertsSettings: "
        "the evaluator would skip them (add `name: NameRule = Field(default_factory=NameRule, ...)`)")
    assert not sections - set(RULES), (
        f"AlertsSettings section(s) {sorted(sections - set(RULES))} have no rule in wsmon.engine.alerts.RULES")


def test_a_rule_with_a_section_is_evaluated_and_one_without_is_not(tmp_path: Path) -> None:
    """What the check above protects against: the evaluator runs only rules that have settings."""
    from wsmon.config.settings import Settings
    from wsmon.core.clock import ManualClock
    from wsmon.engine.alerts import AlertEvaluator, Observation
    from wsmon.engine.store import open_store

    clock = ManualClock()
    store = open_store(f"sqlite:///{tmp_path / 's.db'}", clock=clock)
    try:
        ran: list[str] = []

        def rule(name: str):
            def evaluate(ctx, cfg) -> list[Observation]:
                ran.append(name)
                return []
            return evaluate

        evaluator = AlertEvaluator(Settings(), store, clock=clock,
                                   rules={"queue_depth": rule("queue_depth"), "no_section": rule("no_section")})
        evaluator.evaluate()
        assert ran == ["queue_depth"]
    finally:
        store.close()


# ------------------------------------------------------------------------------------------------
# screens
# ------------------------------------------------------------------------------------------------


def test_every_screen_and_dialog_is_registered_in_the_screens_package() -> None:
    from textual.screen import Screen

    import wsmon.screens

    defined = _leaves(_classes_defined_in(wsmon.screens, Screen))
    registered = set(wsmon.screens.all_screen_classes())
    assert {c.__name__ for c in defined} >= {"QueueScreen", "HelpScreen", "JumpDialog"}, defined
    missing = sorted(c.__qualname__ for c in defined - registered)
    assert not missing, (f"screen(s) {', '.join(missing)} are not in wsmon/screens/__init__.py "
                         "all_screen_classes(): their binding ids cannot be rebound or shown in help")


# ------------------------------------------------------------------------------------------------
# notification channels
# ------------------------------------------------------------------------------------------------


def test_every_notification_channel_is_built_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import wsmon.engine.notify
    from wsmon.config.settings import Settings
    from wsmon.engine.notify import Channel, build_channels

    kinds = _leaves(_classes_defined_in(wsmon.engine.notify, Channel))
    assert len(kinds) >= 3, kinds
    for name in ("WSMON_LINEAR_API_KEY", "WSMON_SLACK_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    everything_on = Settings(notify={
        "sns_topic_arn": "arn:aws:sns:us-west-2:123456789012:wsmon",
        "linear_team_id": "team-1", "linear_api_key": SecretStr("lin_api_" + "x" * 20),
        "slack_webhook_url": SecretStr("https://hooks.slack.com/services/T/B/C"),
    }, aws={"region": "us-west-2"})
    built = build_channels(everything_on, store=None)
    missing = sorted(k.__name__ for k in kinds if not any(isinstance(c, k) for c in built.values()))
    assert not missing, (f"channel class(es) {', '.join(missing)} are never built by build_channels: "
                         "no configuration can turn them on")


# ------------------------------------------------------------------------------------------------
# store backends
# ------------------------------------------------------------------------------------------------


def _url_for(scheme: str, tmp_path: Path) -> str:
    examples = {"sqlite": f"sqlite:///{tmp_path / 'state.db'}",
                # the constructor makes a client only; nothing is sent to this endpoint
                "dynamodb": "dynamodb://wsmon-registration?region=us-west-2&endpoint_url=http://127.0.0.1:9"}
    assert scheme in examples, f"add an example URL for the new store scheme {scheme!r} here"
    return examples[scheme]


def test_every_store_scheme_opens_a_backend_and_every_backend_has_a_scheme(tmp_path: Path) -> None:
    import wsmon.engine.store
    from wsmon.core.store_url import SUPPORTED_SCHEMES
    from wsmon.engine.store import Store, open_store

    opened: set[type] = set()
    for scheme in SUPPORTED_SCHEMES:
        store = open_store(_url_for(scheme, tmp_path))
        try:
            assert isinstance(store, Store)
            opened.add(type(store))
        finally:
            store.close()
    backends = {c for c in _classes_defined_in(wsmon.engine.store, Store) if not inspect.isabstract(c)}
    assert backends, "no Store backends found under wsmon/engine/store"
    unreachable = sorted(c.__qualname__ for c in backends
                         if not any(issubclass(kind, c) for kind in opened))
    assert not unreachable, (f"store backend(s) {', '.join(unreachable)} are not opened by any scheme in "
                             "wsmon/core/store_url.py SUPPORTED_SCHEMES (and open_store)")


def test_the_store_contract_suite_runs_against_every_scheme() -> None:
    from wsmon.core.store_url import SUPPORTED_SCHEMES

    conftest = (ROOT / "tests" / "contract" / "conftest.py").read_text(encoding="utf-8")
    match = re.search(r"@pytest\.fixture\(params=\[([^\]]*)\]\)\s*\ndef store\(", conftest)
    assert match, "tests/contract/conftest.py has no `@pytest.fixture(params=[...])` store fixture any more"
    params = set(re.findall(r"[\"'](\w+)[\"']", match.group(1)))
    assert params == set(SUPPORTED_SCHEMES), (
        f"the contract suite runs against {sorted(params)}, the store schemes are {sorted(SUPPORTED_SCHEMES)}")
