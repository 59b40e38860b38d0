"""`fipo_nb.widgets`: the public path of the views in `fipo_nb.views` (README and notebooks import from here)."""

from .views import Dashboard, PhaseView, TokenView  # noqa: F401
