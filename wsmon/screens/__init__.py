"""Dashboard screens. They read and change only the store (through the app's workers)."""

from __future__ import annotations


def all_screen_classes() -> list[type]:
    """Every screen and dialog class, for collecting binding ids (keymap validation, help)."""
    from wsmon.screens.alerts import AlertsScreen
    from wsmon.screens.clusters import ClustersScreen
    from wsmon.screens.detail import DetailScreen
    from wsmon.screens.dialogs import (
        AckDialog,
        JumpDialog,
        PriorityDialog,
        ResolveDialog,
        SilenceDialog,
        StopDialog,
        WorksetActionDialog,
    )
    from wsmon.screens.events import EventsScreen
    from wsmon.screens.help import HelpScreen
    from wsmon.screens.queue import QueueScreen

    return [QueueScreen, ClustersScreen, AlertsScreen, DetailScreen, HelpScreen, JumpDialog,
            WorksetActionDialog, PriorityDialog, AckDialog, SilenceDialog, StopDialog, ResolveDialog,
            EventsScreen]
