"""The CML paper's experiments: its published numbers (``published.yaml``) and ``cmlgraph reproduce``."""

from cmlgraph.paper.published import load_published, table3_value

__all__ = ["load_published", "table3_value"]
