"""Differential random testing: the reference model and real QEMU in lock-step.

ops         operations only the random runner uses (LinkDown)
kinds       the topology kinds, one object each (secondary, secondary-faults, primary,
            pair, many-nodes): graph, machine, mode, story, views, link; TopologySpec
colo_kinds  the COLO kinds (colo, colo-faults, colo-refused): COLO's migration drives
            the pair
policy      what is read when (layer checks; the guest views around each operation),
            its specification as its docstring
session     one run on a fresh topology: the kind's story under the read policy
strategies  offsets, lengths and patterns, biased towards boundaries and recent requests
trace       trace files: write, read, validate (TraceError)
settings    the hypothesis settings profiles (ci, nightly), QRC_DIFFERENTIAL_* options, the
            shrinking budget
specs       topology specs, operation weights (OP_KINDS), the CI groups (Group, ci_groups)
rules       the hypothesis RuleBasedStateMachine: @initialize, one weighted @rule `step`
results     what a run found: DifferentialFailure (QEMU misbehaved), RunResult
runner      run_differential (one run at one seed), run_groups (groups, results merged)
replay      replay_main(trace, qemu_dir): 0 agrees, 1 diverges, 125 cannot run, 8 bad trace
"""

from harness.differential import colo_kinds as _colo_kinds  # noqa: F401  (registers)
