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
        text = extra.get(name) or default_text(name)
        if text == "none":  # "not set": the help sentence says what happens; "[default: (none)]" only puzzles
            info.show_default = False
        elif text and not isinstance(info.show_default, str):
            info.show_default = text  # typer prints a string show_default as "[default: <text>]"
    return command


def tidy_flags(*apps: Any) -> None:
    """Show no value type on on/off switches (``--quiet``, ``--cml/--no-cml``) in every command of ``apps``.

    Why: typer's rich help prints ``<bool>`` beside a switch, which reads as if it took a value
    (``--quiet true``); a switch takes none. An empty metavar leaves the type column blank for them only.
    """
    for app in apps:
        for cmd in app.registered_commands:
            for param in inspect.signature(cmd.callback).parameters.values():
                info = param.default
                if hasattr(info, "metavar") and info.metavar is None and _is_bool(param.annotation):
                    info.metavar = ""


def _is_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    return isinstance(annotation, str) and annotation.replace(" ", "") in ("bool", "bool|None", "Optional[bool]")


__all__ = ["default_text", "show_defaults", "tidy_flags"]
