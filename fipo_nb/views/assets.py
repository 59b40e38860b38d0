"""The views' ES modules and stylesheet, shipped in the package: nothing is fetched at run time.

Each view's module is the colour constants (generated from colours.py, the one definition Python
and JS share), tokens.js and charts.js (shared helpers), then <view>.js, as one string: an
anywidget ESM has no base URL to import siblings from. The stylesheet is views.css and the
segment bands' rules, from colours.py too.
"""

from __future__ import annotations

from pathlib import Path

from .colours import band_css, js_constants

HERE = Path(__file__).resolve().parent


def esm(view: str) -> str:
    parts = ("tokens.js", "charts.js", f"{view}.js")
    return "\n".join([js_constants(), *((HERE / name).read_text(encoding="utf-8") for name in parts)])


def stylesheet() -> str:
    return (HERE / "views.css").read_text(encoding="utf-8") + band_css(".fipo-view")


class StaticHTMLFallback:
    """Mixin for an anywidget view: its mime bundle also carries `self.to_html()` as text/html.

    JupyterLab shows the live widget (its renderer ranks first); exported notebooks, nbconvert,
    and front-ends without the widget manager show the static page.
    """

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle or {}, {})
        return {**data, "text/html": self.to_html()}, metadata
