"""`fipo_nb.phases`: the public path of `fipo_nb.analysis.phases`, where the code lives (README and notebooks import from here)."""

from .analysis.phases import PHASE_NAMES, SEGMENT_KINDS, PhaseResult, Segment, TokenSpan, classify, segments, summarize, token_spans  # noqa: F401
