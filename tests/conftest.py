"""Fixtures shared by the harness's own tests."""

from tests.qemu_helpers import machines

__all__ = ["machines"]
