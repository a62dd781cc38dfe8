"""Effective defaults in ``cmlgraph train --help``, read from the config dataclasses and the domain defaults.

Why: ``train``'s flags default to ``None`` ("not given"), so a ``--config`` file's values win over the dataclass
defaults and only flags the user typed override them; typer therefore shows no default. :func:`show_defaults`
sets each flag's shown default (``[default: ...]``) from :class:`cmlgraph.config.Config` (and, where a setting is
filled per task, ``domain default: graph 3, sinusoid 5, ...`` from ``DOMAIN_DEFAULTS``) without changing what
the flags default to. It reads the signature once at import; flags added later get their default the same way
when they are config keys. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

from typer.core import TyperCommand, TyperGroup
from typer.models import DefaultPlaceholder

from cmlgraph.config import SECTION_CLASSES, Config
from cmlgraph.domains.registry import DOMAIN_DEFAULTS


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)


def _section_of(name: str) -> str | None:
    for section, cls in SECTION_CLASSES.items():
        if name in {f.name for f in dataclasses.fields(cls)}:
            return section
    return None


def default_text(name: str, section: str | None = None) -> str | None:
    """The default of config key ``name`` as help shows it (its section found when not given); ``None`` if
    ``name`` is no config key."""
    section = section or _section_of(name)
    if section is None:
        return None
    value = getattr(getattr(Config(), section), name)
    if value is not None:
        return _fmt(value)
    per_task = {task: sections[section][name] for task, sections in DOMAIN_DEFAULTS.items()
                if name in sections.get(section, {})}
    if not per_task:
        return "none"
    groups: dict[str, list[str]] = {}
    for task, v in per_task.items():
        groups.setdefault(_fmt(v), []).append(task)
    text = ", ".join(f"{'/'.join(tasks)} {v}" for v, tasks in groups.items())
    return f"domain default: {text}"


def show_defaults(command: Callable[..., Any], extra: dict[str, str] | None = None) -> Callable[..., Any]:
    """Append the effective default to the help of every ``None``-defaulted option of a typer command.

    Args:
        command: The command function (its parameters' defaults are ``typer.Option`` objects).
        extra: Default texts for options that are not config keys (e.g. ``--config``).
    """
    extra = extra or {}
    for name, param in inspect.signature(command).parameters.items():
        info = param.default
        if not hasattr(info, "help") or getattr(info, "default", None) is not None:
            continue  # not an option, or typer shows its (non-None) default itself
        if isinstance(info.show_default, str):
            continue  # the option says its own default (e.g. --layers: chosen on validation)
        text = extra.get(name) or default_text(name)
        if text == "none":  # "not set": the help sentence says what happens; "[default: (none)]" only puzzles
            info.show_default = False
        elif text and not isinstance(info.show_default, str):
            info.show_default = text  # typer prints a string show_default as "[default: <text>]"
    return command


def _blank_help_metavar(option: Any) -> Any:
    if option is not None:
        option.metavar = ""
    return option


class _TidyCommand(TyperCommand):
    """A command whose built-in ``--help`` shows no ``<bool>`` value type (it is a switch)."""

    def get_help_option(self, ctx: Any) -> Any:
        return _blank_help_metavar(super().get_help_option(ctx))


class _TidyGroup(TyperGroup):
    """A command group whose built-in ``--help`` shows no ``<bool>`` value type."""

    def get_help_option(self, ctx: Any) -> Any:
        return _blank_help_metavar(super().get_help_option(ctx))


def tidy_flags(*apps: Any) -> None:
    """Show no value type on on/off switches (``--quiet``, ``--cml/--no-cml``, ``--help``) in every command of
    ``apps``.

    Why: typer's rich help prints ``<bool>`` beside a switch, which reads as if it took a value
    (``--quiet true``); a switch takes none. An empty metavar leaves the type column blank for them only.
    """
    for app in apps:
        if app.info.cls is None or app.info.cls is TyperGroup or isinstance(app.info.cls, DefaultPlaceholder):
            app.info.cls = _TidyGroup
        for cmd in app.registered_commands:
            if cmd.cls is None or cmd.cls is TyperCommand or isinstance(cmd.cls, DefaultPlaceholder):
                cmd.cls = _TidyCommand
        callbacks = [c.callback for c in app.registered_commands]
        if app.registered_callback is not None:  # the app's own options (``--version``)
            callbacks.append(app.registered_callback.callback)
        for callback in callbacks:
            for param in inspect.signature(callback).parameters.values():
                info = param.default
                if hasattr(info, "metavar") and info.metavar is None and _is_bool(param.annotation):
                    info.metavar = ""
        for group in app.registered_groups:
            if group.cls is None or group.cls is TyperGroup or isinstance(group.cls, DefaultPlaceholder):
                group.cls = _TidyGroup


def _is_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    return isinstance(annotation, str) and annotation.replace(" ", "") in ("bool", "bool|None", "Optional[bool]")


__all__ = ["default_text", "show_defaults", "tidy_flags"]
