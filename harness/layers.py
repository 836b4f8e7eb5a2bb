"""The old name of harness.layer_inspector, kept only for harness/story.py's import of
inspect_all while that module is being rewritten; it goes once story.py imports from
harness.layer_inspector."""

from harness.layer_inspector import inspect_all as inspect_all
