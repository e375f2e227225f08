"""Charts for reports, drawn on the server as inline SVG: no script, no browser, no image file.

Each status has a colour, a fill pattern and a text label, so the charts read in colour, in
greyscale and to a screen reader (every bar segment carries a `<title>` with its numbers).
A mail client that shows no SVG still has the count tiles and tables around the chart.
"""

from html import escape

# status -> (colour, fill pattern); colours differ in lightness too, patterns tell the close ones
# apart in greyscale; pending is first because it is the part a reader acts on
STATUS_STYLES = {
    "pending": ("#f0b429", None),
    "approved": ("#2f8132", None),
    "returned": ("#3e4c59", "dots"),
    "rejected": ("#c62828", "hatch"),
    "cancelled": ("#9aa5b1", "cross"),
}
PATTERNS = {
    "hatch": '<path d="M0,6 L6,0" stroke="#fff" stroke-width="1.5"/>',
    "dots": '<circle cx="3" cy="3" r="1.2" fill="#fff"/>',
    "cross": '<path d="M0,0 L6,6 M6,0 L0,6" stroke="#fff" stroke-width="1"/>',
}

MONTH_CHART_HEIGHT = 180
BAR_AREA_WIDTH = 640


def status_fill(status, prefix):
    """Return the `fill` value for a status: its pattern (which carries the colour) or colour."""
    colour, pattern = STATUS_STYLES[status]
    return f"url(#{prefix}-{status})" if pattern else colour


def pattern_defs(prefix):
    """Return `<defs>` with one pattern per patterned status; ids carry `prefix` to stay unique."""
    patterns = []
    for status, (colour, pattern) in STATUS_STYLES.items():
        if pattern:
            patterns.append(
                f'<pattern id="{prefix}-{status}" width="6" height="6" '
                f'patternUnits="userSpaceOnUse"><rect width="6" height="6" fill="{colour}"/>'
                f"{PATTERNS[pattern]}</pattern>"
            )
    return f"<defs>{''.join(patterns)}</defs>"


def legend(prefix, statuses, y, counts=None):
    """Return a legend row of swatches and labels for `statuses` at height `y`, with counts."""
    items = []
    x = 0
    for status in statuses:
        label = status.capitalize()
        if counts is not None:
            label += f" {counts.get(status, 0)}"
        items.append(
            f'<rect x="{x}" y="{y}" width="12" height="12" fill="{status_fill(status, prefix)}"/>'
            f'<text x="{x + 16}" y="{y + 10}" font-size="11">{label}</text>'
        )
        x += 28 + 7 * len(label)
    return "".join(items)


def monthly_chart(monthly, prefix="months"):
    """Return an SVG bar chart of requests per month, each bar stacked by status.

    `monthly` is a list of `(month "YYYY-MM", {status: count})`, oldest first.
    """
    statuses = list(STATUS_STYLES)
    totals = [sum(counts.values()) for _, counts in monthly]
    peak = max(totals, default=0) or 1
    slot = BAR_AREA_WIDTH / max(len(monthly), 1)
    bar_width = max(min(slot * 0.7, 48), 2)
    top, axis_y = 16, 16 + MONTH_CHART_HEIGHT
    # month labels get crowded past a year of bars: label every nth
    label_every = max(1, round(len(monthly) / 12))
    parts = []
    for index, ((month, counts), total) in enumerate(zip(monthly, totals, strict=True)):
        x = 40 + index * slot + (slot - bar_width) / 2
        y = axis_y
        for status in statuses:
            count = counts.get(status, 0)
            if not count:
                continue
            height = MONTH_CHART_HEIGHT * count / peak
            y -= height
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_width:.1f}" height="{height:.1f}" '
                f'fill="{status_fill(status, prefix)}" data-month="{month}" '
                f'data-status="{status}" data-count="{count}">'
                f"<title>{month}: {count} {status}</title></rect>"
            )
        if total:
            parts.append(
                f'<text x="{x + bar_width / 2:.1f}" y="{y - 3:.1f}" font-size="10" '
                f'text-anchor="middle">{total}</text>'
            )
        if index % label_every == 0:
            parts.append(
                f'<text x="{x + bar_width / 2:.1f}" y="{axis_y + 14}" font-size="10" '
                f'text-anchor="middle">{month}</text>'
            )
    width = 40 + BAR_AREA_WIDTH
    height = axis_y + 48
    summary = ", ".join(
        f"{month}: {total}" for (month, _), total in zip(monthly, totals, strict=True)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'aria-labelledby="{prefix}-title {prefix}-desc" font-family="sans-serif">'
        f'<title id="{prefix}-title">Requests per month, by status</title>'
        f'<desc id="{prefix}-desc">{escape(summary) or "No requests."}</desc>'
        f"{pattern_defs(prefix)}"
        f'<line x1="36" y1="{axis_y}" x2="{width}" y2="{axis_y}" stroke="#9aa5b1"/>'
        f'<text x="32" y="{top + 8}" font-size="10" text-anchor="end">{peak}</text>'
        f'<text x="32" y="{axis_y}" font-size="10" text-anchor="end">0</text>'
        f"{''.join(parts)}{legend(prefix, statuses, axis_y + 28)}</svg>"
    )


def status_bar(totals, prefix="share"):
    """Return an SVG bar split by each status's share of all requests; the legend has counts."""
    total = sum(totals.values())
    width, height = BAR_AREA_WIDTH + 40, 28
    parts = []
    x = 0.0
    for status in STATUS_STYLES:
        count = totals.get(status, 0)
        if not count:
            continue
        segment = width * count / total
        parts.append(
            f'<rect x="{x:.1f}" y="0" width="{segment:.1f}" height="{height}" '
            f'fill="{status_fill(status, prefix)}" data-status="{status}" data-count="{count}">'
            f"<title>{status.capitalize()}: {count} of {total}</title></rect>"
        )
        x += segment
    summary = ", ".join(f"{count} {status}" for status, count in totals.items() if count)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {width} {height + 30}" width="{width}" height="{height + 30}" '
        f'aria-labelledby="{prefix}-title {prefix}-desc" font-family="sans-serif">'
        f'<title id="{prefix}-title">Requests by status</title>'
        f'<desc id="{prefix}-desc">{escape(summary) or "No requests."}</desc>'
        f"{pattern_defs(prefix)}{''.join(parts)}"
        f"{legend(prefix, list(STATUS_STYLES), height + 12, totals)}</svg>"
    )
