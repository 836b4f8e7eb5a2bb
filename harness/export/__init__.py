"""`qrc export`: one case as files that run without qrc, generated from what it did.

recorder, hooks   a pytest plugin that records, in order, every interaction of the case
                  with QEMU and per story step the model's answer
plan, code        a recording -> the body of calls (`r.qmp(...)`, `r.hmp_read(...)`, ...)
writer            reproduce.py and the iotest (with its .out, the body run dry)
command           the case run under the recorder, the files written and run once
rt_*              the runtime copied into the files: Python's standard library only
"""
