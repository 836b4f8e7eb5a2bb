"""Topologies as values: a graph stated once (values), the standard ones (standard,
pair). Nothing here runs or models anything: QEMU's interpreter of a value is
harness.real.topology, the model's is the model package's build.py, and a story
(harness.story.Story.open) puts the two side by side.

    graph = standard.secondary("secondary", over_secondary=faults.over_secondary(1))
    story = Story.open(graph, build, profile, machines, workdir)   # QEMU, then the model
"""

from harness.topology.values import Graph, Mode

__all__ = ["Graph", "Mode"]
