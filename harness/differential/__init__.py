"""Differential random testing: the reference model and real QEMU in lock-step.

ops         operations only the random runner uses (LinkDown)
session     one run on a fresh topology: kinds (secondary, secondary-faults, primary,
            pair, many-nodes), policy (layer checks; every guest view after each operation
            that can change one), extra handlers
strategies  offsets, lengths and patterns, biased towards boundaries and recent requests
trace       trace files: write, read, validate (TraceError)
settings    the hypothesis settings profiles (ci, nightly), QRC_DIFFERENTIAL_* options, the
            shrinking budget
specs       topology specs, operation weights, the CI groups (Group, ci_groups)
rules       the hypothesis RuleBasedStateMachine: @initialize, one weighted @rule `step`
results     what a run found: DifferentialFailure (QEMU misbehaved), RunResult
runner      run_differential (one run at one seed), run_groups (groups, results merged)
replay      replay_main(trace, qemu_dir): 0 agrees, 1 diverges, 125 cannot run, 8 bad trace
"""
