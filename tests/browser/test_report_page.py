"""(a) The static report in chromium with every non-file request blocked: text, colours, tooltips."""

from __future__ import annotations

import itertools

from fipo_nb.report import write_report
from fipo_nb.trace import load_traces


def test_static_report_renders_offline_with_colours_and_tooltips(page, smoke_run, artifacts):
    report = write_report(smoke_run)
    requests = []

    def only_files(route):
        requests.append(route.request.url)
        if route.request.url.startswith("file://") or route.request.url.startswith("data:"):
            route.continue_()
        else:
            route.abort()

    page.route("**/*", only_files)
    page.goto(report.as_uri())
    assert all(url.startswith(("file://", "data:")) for url in requests), requests
    newest = load_traces(smoke_run, steps=3).sort_values("sample").iloc[0]
    view = page.locator(".fipo-tokenview").filter(has_text=f"step 3 · sample {newest['sample']} ·").first
    assert view.locator(".fipo-text").inner_text().replace("\u21b5", "") == "".join(newest["tokens"])
    # colours differ where the weights differ, and agree where they agree
    later = page.locator(".fipo-tokenview").filter(has_text="mini-batch 1").first
    spans = later.locator(".fipo-tok")
    colours = spans.evaluate_all("spans => spans.map(s => getComputedStyle(s).backgroundColor)")
    titles = spans.evaluate_all("spans => spans.map(s => s.title)")
    weights = [float(t.split("weight ")[1].split("\n")[0]) for t in titles]
    pairs = list(zip(weights, colours))
    assert len({w for w, _ in pairs}) > 1
    for (w1, c1), (w2, c2) in itertools.combinations(pairs, 2):
        if abs(w1 - w2) > 0.01:
            assert c1 != c2, (w1, w2, c1)
        if w1 == w2 and w1 in (1.0, 1.2):  # clipped weights are exactly equal: same colour
            assert c1 == c2
    # a tooltip: the token's text, index and every metric
    first_title = spans.first.get_attribute("title")
    assert first_title.startswith("#0 ") and "future_kl" in first_title and "post_update_future_kl" in first_title
    assert page.locator("img[alt='metric curves']").evaluate("img => img.naturalWidth") > 0
    # segment bands under the tokens, one track per kind, a legend and the per-kind summary
    assert view.locator(".fipo-seg-legend").is_visible() and "verification" in view.locator(".fipo-seg-legend").inner_text()
    assert view.locator(".fipo-band").count() == 5
    blocks = view.locator(".fipo-band-seg")
    assert blocks.count() >= 1 and all(blocks.nth(i).bounding_box()["width"] >= 1 for i in range(blocks.count()))
    assert view.locator(".fipo-seg-table").is_visible()
    assert "segment " in view.locator(".fipo-tok").first.get_attribute("title")
    page.screenshot(path=str(artifacts / "report.png"), full_page=True)
