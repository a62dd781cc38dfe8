"""Remove the Python modules PyG writes into the temp folder for its message-passing layers.

Why: constructing a PyG ``MessagePassing`` layer renders its ``propagate`` (and ``edge_updater``) from a jinja
template into ``tempfile.NamedTemporaryFile(delete=False)`` (``torch_geometric.template.module_from_template``),
imports it and never deletes the file: one file per layer class per process, so every run, test and benchmark case
used to leave a few ``<module>_<Class>_propagate_*.py`` files behind (hundreds accumulate). Once imported, the
module's code lives in memory, so the file can go. Only files in the temp folder whose module PyG registered under
its template name are removed.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

_SUFFIXES = ("_propagate", "_edge_updater")
_removed: set[str] = set()


def remove_template_files() -> int:
    """Delete the temp files of the PyG template modules imported so far (each once); returns how many."""
    tmp = Path(tempfile.gettempdir()).resolve()
    count = 0
    for name, module in list(sys.modules.items()):
        if not name.endswith(_SUFFIXES) or name in _removed:
            continue
        file = getattr(module, "__file__", None)
        if not file:
            continue
        path = Path(file)
        if path.name.startswith(f"{name}_") and path.suffix == ".py" and path.parent.resolve() == tmp:
            try:
                os.remove(path)
                count += 1
            except FileNotFoundError:
                pass
            except OSError:
                continue
        _removed.add(name)
    return count


__all__ = ["remove_template_files"]
