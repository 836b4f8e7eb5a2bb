"""Counted nouns for summary lines: "1 case", "2 cases", "1 row differs"."""

from __future__ import annotations

# irregular plurals of the nouns our lines count
_MANY = {"matrix": "matrices"}


def plural(n: int, noun: str, many: str | None = None) -> str:
    """`n noun`, the noun in the plural unless n is 1."""
    if n == 1:
        return f"{n} {noun}"
    return f"{n} {many or _MANY.get(noun) or noun + 's'}"


def verb(n: int, singular: str, many: str) -> str:
    """The verb agreeing with a count of `n` ("differs" for 1, "differ" otherwise)."""
    return singular if n == 1 else many
