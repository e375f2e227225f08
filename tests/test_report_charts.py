"""The report charts: well-formed SVG whose numbers are the counts they were given."""

import xml.etree.ElementTree as ET

from report_charts import STATUS_STYLES, monthly_chart, status_bar

SVG = "{http://www.w3.org/2000/svg}"

MONTHLY = [
    ("2026-09", {"returned": 2, "rejected": 1}),
    ("2026-10", {"approved": 3, "pending": 1, "cancelled": 4}),
    ("2026-11", {"pending": 5}),
]


def segments(svg):
    root = ET.fromstring(svg)
    return root, [rect for rect in root.iter(f"{SVG}rect") if "data-count" in rect.attrib]


def test_monthly_chart_is_well_formed_svg_with_every_count():
    root, rects = segments(monthly_chart(MONTHLY))
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    drawn = {(r.get("data-month"), r.get("data-status")): int(r.get("data-count")) for r in rects}
    assert drawn == {
        (month, status): count for month, counts in MONTHLY for status, count in counts.items()
    }
    # each segment speaks its numbers to a screen reader
    titles = [rect.find(f"{SVG}title").text for rect in rects]
    assert "2026-10: 4 cancelled" in titles


def test_monthly_bars_are_as_tall_as_their_share_of_the_busiest_month():
    _, rects = segments(monthly_chart(MONTHLY))
    heights = {}
    for rect in rects:
        heights.setdefault(rect.get("data-month"), 0.0)
        heights[rect.get("data-month")] += float(rect.get("height"))
    assert heights["2026-10"] > heights["2026-11"] > heights["2026-09"]
    assert abs(heights["2026-09"] / heights["2026-10"] - 3 / 8) < 0.01


def test_status_bar_splits_the_width_by_share():
    totals = {"pending": 1, "approved": 3, "returned": 0, "rejected": 0, "cancelled": 4}
    _, rects = segments(status_bar(totals))
    drawn = {rect.get("data-status"): int(rect.get("data-count")) for rect in rects}
    assert drawn == {"pending": 1, "approved": 3, "cancelled": 4}
    widths = {rect.get("data-status"): float(rect.get("width")) for rect in rects}
    assert abs(widths["cancelled"] / widths["pending"] - 4) < 0.05


def test_every_status_reads_without_colour():
    # each status has either a pattern or a lightness far from the others' in greyscale
    def lightness(colour):
        red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
        return 0.2126 * red + 0.7152 * green + 0.0722 * blue

    plain = [colour for colour, pattern in STATUS_STYLES.values() if pattern is None]
    values = sorted(lightness(colour) for colour in plain)
    assert all(b - a > 40 for a, b in zip(values, values[1:], strict=False))


def test_empty_charts_are_still_well_formed():
    root, rects = segments(monthly_chart([]))
    assert rects == []
    assert root.find(f"{SVG}desc").text == "No requests."
    root, rects = segments(status_bar({}))
    assert rects == []
