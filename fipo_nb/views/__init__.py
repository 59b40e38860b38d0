"""Views of FIPO at work: TokenView (per-token influence), PhaseView (reasoning phases over
training) and Dashboard (live metrics). Each is an anywidget with a dependency-free ES module
shipped in this folder, and a self-contained static HTML fallback.

    records.py      view records: what a view shows of a traced response, cleaned up from trace rows
    colours.py      every colour (metric scale, segment kinds and groups, phases), for Python and the JS
    static.py       a view record as static HTML, with its CSS
    figures.py      matplotlib figures as inline PNGs (metric curves, PhaseView's charts)
    assets.py       the ES modules and stylesheet handed to the browser
    token_view.py, phase_view.py, dashboard.py   the widgets (with their *.js)
    report.py       the run's static report page (above the widgets: it shows them)
"""

from .dashboard import Dashboard
from .phase_view import PhaseView
from .token_view import TokenView

__all__ = ["Dashboard", "PhaseView", "TokenView"]
