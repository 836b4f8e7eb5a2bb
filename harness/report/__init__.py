"""What a run leaves behind for people: JSON and JUnit reports, per-failure
artifacts (QMP transcripts, traces, layer-map pictures), the version matrix,
and the pytest plugin and runner that produce them for `qrc run`, `qrc matrix`
and `qrc bisect`.
"""
