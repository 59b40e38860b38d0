"""The views' ES modules and stylesheet, shipped in the package: nothing is fetched at run time.

Each view's module is tokens.js and charts.js (shared helpers) followed by <view>.js, as one
string: an anywidget ESM has no base URL to import siblings from.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def esm(view: str) -> str:
    parts = ("tokens.js", "charts.js", f"{view}.js")
    return "\n".join((HERE / name).read_text(encoding="utf-8") for name in parts)


def stylesheet() -> str:
    return (HERE / "views.css").read_text(encoding="utf-8")


class StaticHTMLFallback:
    """Mixin for an anywidget view: its mime bundle also carries `self.to_html()` as text/html.

    JupyterLab shows the live widget (its renderer ranks first); exported notebooks, nbconvert,
    and front-ends without the widget manager show the static page.
    """

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle or {}, {})
        return {**data, "text/html": self.to_html()}, metadata
