"""What happened inside a run, read from its responses and updates (no model code).

    phases.py     a response's reasoning phase (1-4) and its segments (planning, working, result, verification, answer)
    segments.py   influence weight and Future-KL per reasoning segment: a step's segment/* metrics
    traces.py     per-token trace records: built, written one Parquet file per step, read back
    runs.py       a run's JSON-lines logs read back (metrics.jsonl, eval.jsonl)
    credit.py     FIPO's token weights beside PPO's per-token advantages: rank agreement per response
    files.py      crash-safe writes: whole rows appended and synced, files replaced atomically, WriteError
"""
