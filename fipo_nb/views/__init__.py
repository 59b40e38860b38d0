"""Views of FIPO at work: TokenView (per-token influence), PhaseView (reasoning phases over
training) and Dashboard (live metrics). Each is an anywidget with a dependency-free ES module
shipped in this folder, and a self-contained static HTML fallback."""

from .dashboard import Dashboard
from .phase_view import PhaseView
from .token_view import TokenView

__all__ = ["Dashboard", "PhaseView", "TokenView"]
