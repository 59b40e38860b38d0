"""`fipo_nb.report`: the public path of `fipo_nb.views.report`, where the code lives (README and notebooks import from here)."""

from .views.report import render_report, write_report  # noqa: F401
