"""Differential random testing: the reference model and real QEMU in lock-step.

ops         operations only the random runner uses (LinkDown)
session     one run on a fresh topology: kinds (secondary, secondary-faults, primary,
            pair, many-nodes), policy (layer checks; every guest view after each operation
            that can change one), extra handlers
strategies  offsets, lengths and patterns, biased towards boundaries
trace       trace files: write, read, validate (TraceError)
machine     the hypothesis state machine, its profiles (ci, nightly) and runners
replay      replay_main(trace, qemu_dir): 0 agrees, 1 diverges, 125 cannot run, 8 bad trace
"""
