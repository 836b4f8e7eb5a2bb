"""Topologies: a graph stated once as a value (values), the standard ones (standard,
pair), and QEMU's interpreter of a value (qemu); the model's is harness.model.build.

    graph = standard.secondary("secondary", over_secondary=faults.over_secondary(1))
    topo = open_topology(graph, build, profile, machines, workdir)   # QEMU, then the model
"""

from harness.topology.qemu import Topology, add_late, create_late, open_topology
from harness.topology.values import Graph

__all__ = ["Graph", "Topology", "add_late", "create_late", "open_topology"]
