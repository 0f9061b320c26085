"""Small integer helpers shared by the kernel wrappers."""
from __future__ import annotations


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
