"""Small text helpers for messages: counted nouns and verbs that agree with their number ("1 class has")."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``"1 class"``, ``"3 classes"``: ``n`` followed by ``noun`` in the number it needs.

    Args:
        n: The count.
        noun: The singular noun.
        plural: The plural when it is not ``noun + "s"`` (``"classes"``, ``"such classes"``) .
    """
    many = plural if plural is not None else noun + "s"
    return f"{n} {noun if n == 1 else many}"


def agree(n: int, singular: str, plural: str) -> str:
    """The verb (or phrase) that agrees with ``n``: ``agree(1, "has", "have") == "has"``."""
    return singular if n == 1 else plural



def have(n: int, noun: str, singular: str = "has", plural: str = "have") -> str:
    """``"1 class has"``, ``"2 classes have"``: a counted subject and its verb (``noun`` ending in s/ss takes -es)."""
    many = noun + ("es" if noun.endswith("s") else "s")
    return f"{counted(n, noun, many)} {agree(n, singular, plural)}"


__all__ = ["agree", "counted", "have"]
