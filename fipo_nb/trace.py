"""`fipo_nb.trace`: the public path of `fipo_nb.analysis.traces`, where the code lives (README and notebooks import from here)."""

from .analysis.traces import SCHEMA, TOKEN_ARRAYS, count_records, load_traces, select_rows, step_path, trace_steps, write_step  # noqa: F401
