"""Render the README's pictures from a real run: TokenView on one traced response, and the top of the report.

    .venv/bin/python scripts/render_images.py [--run runs/demo] [--out docs/images]     (or `make images`)

token_view.png  the static TokenView of the traced response, from a mini-batch after the first, whose
                weights spread the most (the first mini-batch's weights are all 1: nothing to see there)
report.png      the report page from its title through its first token view (metric curves, phases)

Screenshots come from Debian's headless chromium driven by playwright-python (`playwright install` is
never run). Both pages are handed to the browser as content and every request is aborted, so nothing
is fetched and nothing is served. The PNGs are reduced to a 256-colour palette, which keeps them small
enough to commit (plots and flat colours lose nothing visible).
"""

from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"]
ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 300_000  # the README's pictures stay well under this


def token_view_page(run: Path) -> tuple[str, str]:
    """(page HTML, a caption) for the TokenView of `run` as it opens: the response FIPO re-weighted most."""
    from fipo_nb.trace import load_traces
    from fipo_nb.views.records import reweighted_first, view_records
    from fipo_nb.widgets import TokenView

    frame = load_traces(run)
    first = reweighted_first(view_records(frame))[0]  # where TokenView.from_run opens
    if first["mini_batch"] == 0:
        raise SystemExit("no traced response from a mini-batch after the first: run with mini_batch_size < "
                         "prompts_per_step (the demo preset does)")
    row = frame[(frame["step"] == first["step"]) & (frame["sample"] == first["sample"])].iloc[0]
    view = TokenView(frame.loc[[row.name]])
    question = row["prompt"].split("<|im_start|>user\n")[-1].split("<|im_end|>")[0]
    page = ('<!DOCTYPE html><html><head><meta charset="utf-8"></head>'
            '<body style="margin:0;padding:12px;background:#fff;font-family:system-ui,sans-serif;width:876px">'
            f'<div style="font-size:12px;color:#444">prompt: {html.escape(question)}</div>'
            f"{view.to_html()}</body></html>")
    return page, f"step {row['step']}, sample {row['sample']}, mini-batch {row['mini_batch']}"


def shot(browser, page_html: str, target: Path, *, width: int, until: str, scale: float) -> None:
    """Screenshot `page_html` at `width` CSS px, from the top to the bottom of the first element matching
    `until`, at `scale` device pixels per CSS pixel."""
    context = browser.new_context(viewport={"width": width, "height": 800}, device_scale_factor=scale)
    page = context.new_page()
    page.route("**/*", lambda route: route.abort())  # nothing leaves the page: all it needs is inline
    page.set_content(page_html, wait_until="load")
    box = page.locator(until).first.bounding_box()
    page.screenshot(path=str(target), full_page=True,
                    clip={"x": 0, "y": 0, "width": width, "height": box["y"] + box["height"] + 12})
    context.close()


def to_palette(target: Path) -> int:
    """Rewrite the PNG with a 256-colour palette (no dithering); returns its size in bytes."""
    from PIL import Image

    with Image.open(target) as image:
        small = image.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE)
    small.save(target, optimize=True)
    return target.stat().st_size


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="a run folder (default runs/demo; "
                        "the report's title shows the path as given)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="where the PNGs go")
    args = parser.parse_args(argv)
    if not (args.run / "metrics.jsonl").exists():
        raise SystemExit(f"{args.run} holds no run (no metrics.jsonl): `make demo` writes runs/demo")
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    from fipo_nb.report import render_report

    args.out.mkdir(parents=True, exist_ok=True)
    token_html, caption = token_view_page(args.run)
    pages = [  # (file, page, width, cut after, scale): the token view at twice the pixels, its text is small;
        ("token_view.png", token_html, 900, "body", 2),  # the report at its figures' own resolution
        ("report.png", render_report(args.run), 1180, ".fipo-tokenview", 1),
    ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        for name, page_html, width, until, scale in pages:
            target = args.out / name
            shot(browser, page_html, target, width=width, until=until, scale=scale)
            size = to_palette(target)
            shown = f" (TokenView of {caption})" if name == "token_view.png" else ""
            print(f"{target}: {size / 1000:.0f} KB{shown}")
            if size > MAX_BYTES:
                raise SystemExit(f"{target} is {size} bytes, over {MAX_BYTES}: too large to commit")
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
