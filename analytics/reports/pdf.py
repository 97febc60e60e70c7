"""The report as pages (matplotlib figures, no pyplot state) and as a PDF.

Page 1 is the summary a manager reads in half a minute; then the tables (output vs plan,
OEE and losses; anomalies, assets at risk, maintenance, sales) and a page of plots. Text
stays text in the PDF (matplotlib's Type 3 fonts), so it can be searched and tested.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

from matplotlib.axes import Axes
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.dates import DateFormatter, HourLocator, date2num
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.table import Cell
from matplotlib.textpath import TextToPath

from analytics.reports.figures import ReportData

__all__ = ["NONE", "SECTIONS", "pages", "write_pdf"]

A4: Final = (8.27, 11.69)
NONE: Final = "none in this {kind}"
SECTIONS: Final = (
    "Summary",
    "Output vs plan",
    "OEE and losses",
    "Anomaly episodes",
    "Assets at risk",
    "Maintenance orders",
    "Orders shipped and invoiced",
    "OEE per line and hour",
    "Production per line and hour",
    "Anomaly timeline",
)
MAX_ROWS: Final = 18
SUMMARY_LINES: Final = 5  # lines with an OEE sentence on page 1, the worst first
FONT_PT: Final = 7.5  # table text; smaller when a row would not fit
_TEXT: Final = TextToPath()
TITLE: Final = {"fontsize": 12, "fontweight": "bold", "loc": "left"}


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def qty(value: Decimal) -> str:
    return f"{value.normalize():,f}" if value == value.to_integral() else f"{value:,.2f}"


def money(value: Decimal, currency: str) -> str:
    return f"{value:,.2f} {currency}".strip()


def days(*at: datetime) -> list[float]:
    """Matplotlib's date numbers (days since its epoch) of ``at``."""
    return [float(x) for x in date2num(list(at))]  # type: ignore[no-untyped-call]


def _local(at: datetime, zone: ZoneInfo) -> str:
    return f"{at.astimezone(zone):%Y-%m-%d %H:%M}"


def _short(at: datetime, zone: ZoneInfo) -> str:
    return f"{at.astimezone(zone):%m-%d %H:%M}"


def reason(name: str) -> str:
    """A stop reason as people read it: ``no_data`` is "no data"."""
    return name.replace("_", " ")


def count(n: int, word: str) -> str:
    """``1 order``, ``2 orders``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def summary_lines(data: ReportData) -> list[tuple[str, str]]:
    """(heading, sentence) pairs for page 1."""
    none = NONE.format(kind=data.period.kind)
    out: list[tuple[str, str]] = []
    if data.output:
        planned = sum((o.planned for o in data.output), Decimal(0))
        produced = sum((o.produced for o in data.output), Decimal(0))
        good = sum((o.good_in_period for o in data.output), Decimal(0))
        scrap = sum((o.scrap_in_period for o in data.output), Decimal(0))
        share = f" ({produced / planned * 100:.0f} % of plan)" if planned else ""
        made = f"this {data.period.kind}: {qty(good)} good, {qty(scrap)} scrapped"
        orders = count(len(data.output), "production order")
        out.append(("Output", f"{orders}: {qty(produced)} of {qty(planned)} produced{share}; {made}"))
    else:
        out.append(("Output", f"production orders: {none}"))
    ranked = sorted(data.oee, key=lambda line: line.oee)  # the worst lines first; page 2 has them all
    for line in ranked[:SUMMARY_LINES]:
        worst = max((x for x in line.losses), key=lambda x: x[2], default=None)
        loss = f"; biggest loss {reason(worst[0])} {minutes(worst[2])} ({count(worst[1], 'stop')})" if worst else ""
        out.append((f"OEE {line.line}", f"{pct(line.oee)} (availability {pct(line.availability)}, performance"
                                        f" {pct(line.performance)}, quality {pct(line.quality)}){loss}"))  # fmt: skip
    if len(ranked) > SUMMARY_LINES:
        rest = ranked[SUMMARY_LINES:]
        out.append(("OEE others", f"{count(len(rest), 'more line')} at {pct(rest[0].oee)} or better (page 2)"))
    if not data.oee:
        out.append(("OEE", none))
    assets = sorted({e.asset for e in data.episodes})
    out.append(
        ("Anomalies", f"{count(len(data.episodes), 'episode')} on {', '.join(assets)}" if data.episodes else none)
    )
    risky = [a for a in data.assets if a.at_risk]
    out.append(("At risk", ", ".join(f"{a.asset} (failure probability {a.failure_prob:.2f}, RUL {a.rul:.0f})"
                                     for a in risky[:4]) or none))  # fmt: skip
    opened = sum(m.opened for m in data.maintenance)
    closed = sum(m.closed for m in data.maintenance)
    waiting = sum(1 for m in data.maintenance if m.backordered)
    out.append(("Maintenance", f"{count(opened, 'order')} opened, {closed} closed"
                               + (f", {waiting} waiting for back-ordered parts" if waiting else "")
                               if data.maintenance else none))  # fmt: skip
    s = data.sales
    out.append(("Sales", f"{count(s.shipped, 'order')} shipped ({money(s.shipped_value, s.currency)} net), {s.invoiced}"
                         f" invoiced ({money(s.invoiced_net, s.currency)} net, {money(s.invoiced_gross, s.currency)}"
                         " gross)" if s.shipped or s.invoiced else none))  # fmt: skip
    return out


def _width(text: str, *, bold: bool = False) -> float:
    """How wide ``text`` is at the table's font size, in points."""
    font = FontProperties(size=FONT_PT, weight="bold" if bold else "normal")
    width, _, _ = _TEXT.get_text_width_height_descent(text, font, ismath=False)
    return float(width)


def _table(ax: Axes, title: str, header: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> None:
    """A table as wide as ``ax``: each column as wide as its longest text, the font smaller for long rows."""
    ax.axis("off")
    ax.set_title(title, **TITLE)  # type: ignore[arg-type]
    if not rows:
        ax.text(0.0, 0.85, empty, fontsize=10, style="italic", transform=ax.transAxes, va="top")
        return
    shown = [list(r) for r in rows[:MAX_ROWS]]
    if len(rows) > MAX_ROWS:
        shown.append([f"... and {len(rows) - MAX_ROWS} more", *[""] * (len(header) - 1)])
    bold = [_width(h, bold=True) for h in header]
    needed = [max(b, *(_width(str(r[i])) for r in shown)) / (1 - 2 * Cell.PAD) + 4 for i, b in enumerate(bold)]
    available = ax.get_position().width * ax.get_figure(root=True).get_figwidth() * 72  # type: ignore[union-attr]
    table = ax.table(cellText=shown, colLabels=list(header), loc="upper left", cellLoc="left",
                     colWidths=[n / sum(needed) for n in needed])  # fmt: skip
    table.auto_set_font_size(value=False)
    table.set_fontsize(FONT_PT * min(1.0, available / sum(needed)))
    table.scale(1, 1.25)
    for (row, _), cell in table.get_celld().items():
        cell.set_linewidth(0.3)
        if row == 0:
            cell.set_text_props(fontweight="bold")
            cell.set_facecolor("#e8eef4")


def _page(title: str, data: ReportData) -> Figure:
    fig = Figure(figsize=A4)
    fig.text(0.06, 0.975, f"{data.period.site} — {data.period.label}", fontsize=9, color="#555555", va="top")
    fig.text(0.94, 0.975, title, fontsize=9, color="#555555", va="top", ha="right")
    return fig


def summary_page(data: ReportData, zone: ZoneInfo) -> Figure:
    p = data.period
    fig = Figure(figsize=A4)
    fig.text(0.06, 0.95, f"{p.kind.capitalize()} report — {p.site}", fontsize=20, fontweight="bold", va="top")
    fig.text(0.06, 0.915, p.label, fontsize=12, va="top")
    state = "in progress, figures up to " + _local(p.until, zone) if p.until < p.end else "finished"
    fig.text(0.06, 0.89, f"{state}; generated {_local(data.generated_at, zone)}", fontsize=9, color="#555555",
             va="top")  # fmt: skip
    fig.text(0.06, 0.85, "Summary", fontsize=14, fontweight="bold", va="top")
    y = 0.815
    for heading, sentence in summary_lines(data):
        fig.text(0.06, y, heading, fontsize=10, fontweight="bold", va="top")
        wrapped = textwrap.wrap(sentence, 88) or [""]
        fig.text(0.22, y, "\n".join(wrapped), fontsize=10, va="top", linespacing=1.4)
        y -= 0.012 + 0.02 * len(wrapped)
    ax = fig.add_axes((0.1, 0.08, 0.85, max(0.15, y - 0.16)))
    _oee_bars(ax, data)
    return fig


def _oee_bars(ax: Axes, data: ReportData) -> None:
    ax.set_title("OEE per line", **TITLE)  # type: ignore[arg-type]
    if not data.oee:
        ax.axis("off")
        ax.text(0.0, 0.85, NONE.format(kind=data.period.kind), style="italic", transform=ax.transAxes)
        return
    parts = ("availability", "performance", "quality", "oee")
    width = 0.8 / len(parts)
    for i, part in enumerate(parts):
        values = [(getattr(line, part) or 0.0) * 100 for line in data.oee]
        xs = [n + (i - 1.5) * width for n in range(len(data.oee))]
        bars = ax.bar(xs, values, width, label=part.upper() if part == "oee" else part)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(range(len(data.oee)), [line.line for line in data.oee])
    ax.set_ylim(0, 119)
    ax.set_ylabel("%")
    ax.legend(loc="upper right", ncols=4, fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)


def tables_page(data: ReportData) -> Figure:
    fig = _page("Output and OEE", data)
    none = NONE.format(kind=data.period.kind)
    top = fig.add_axes((0.06, 0.52, 0.88, 0.41))
    _table(top, "Output vs plan", ("order", "line", "product", "status", "planned", "produced", "scrapped",
                                   "progress", f"good this {data.period.kind}", f"scrap this {data.period.kind}"),
           [(o.number, o.line, o.product, o.status, qty(o.planned), qty(o.produced), qty(o.scrapped),
             pct(float(o.progress)), qty(o.good_in_period), qty(o.scrap_in_period))
            for o in data.output], none)  # fmt: skip
    bottom = fig.add_axes((0.06, 0.04, 0.88, 0.44))
    rows = []
    for line in data.oee:
        rows.append((line.line, pct(line.oee), pct(line.availability), pct(line.performance), pct(line.quality),
                     minutes(line.planned_s), minutes(line.run_s), f"{line.stops} / {minutes(line.stop_s)}",
                     f"{line.microstops} / {minutes(line.microstop_s)}",
                     f"{line.total:,.1f} / {line.good:,.1f}"))  # fmt: skip
        rows += [
            ("", f"  loss: {reason(r)}", "", "", "", "", "", f"{n} / {minutes(s)}", "", "") for r, n, s in line.losses
        ]
    _table(bottom, "OEE and losses", ("line", "OEE", "availability", "performance", "quality", "planned", "run",
                                      "stops / time", "microstops / time", "made / good"), rows, none)  # fmt: skip
    return fig


def events_page(data: ReportData, zone: ZoneInfo) -> Figure:
    fig = _page("Anomalies, assets, maintenance, sales", data)
    none = NONE.format(kind=data.period.kind)
    boxes = [(0.06, 0.69, 0.88, 0.24), (0.06, 0.47, 0.88, 0.19), (0.06, 0.20, 0.88, 0.23), (0.06, 0.03, 0.88, 0.13)]
    ax = fig.add_axes(boxes[0])
    _table(ax, "Anomaly episodes", ("asset", "detector", "started", "ended", "peak score", "tags that moved"),
           [(e.asset, e.detector, _short(e.started, zone), _short(e.ended, zone) if e.ended else "ongoing",
             f"{e.peak_score:.2f}", ", ".join(t if c is None else f"{t} ({c:.2f})" for t, c in e.tags[:2]) or "-")
            for e in data.episodes], none)  # fmt: skip
    ax = fig.add_axes(boxes[1])
    _table(ax, "Assets at risk", ("asset", "failure probability", "RUL", "at risk", "scored at"),
           [(a.asset, f"{a.failure_prob:.2f}", f"{a.rul:.1f}", "yes" if a.at_risk else "no", _short(a.at, zone))
            for a in data.assets], none)  # fmt: skip
    ax = fig.add_axes(boxes[2])
    _table(ax, "Maintenance orders", ("order", "asset", "priority", "status", "in this period", "reason",
                                      "back-ordered parts"),
           [(m.number, m.asset, m.priority, m.status,
             " and ".join(w for w, yes in (("opened", m.opened), ("closed", m.closed)) if yes),
             textwrap.shorten(m.reason, 60, placeholder=" ..."),
             ", ".join(f"{sku} x {qty(q)}" for sku, q in m.backordered) or "-")
            for m in data.maintenance], none)  # fmt: skip
    s = data.sales
    ax = fig.add_axes(boxes[3])
    _table(ax, "Orders shipped and invoiced", ("", "count", "net value", "gross value"),
           [("shipped", str(s.shipped), money(s.shipped_value, s.currency), "-"),
            ("invoiced", str(s.invoiced), money(s.invoiced_net, s.currency), money(s.invoiced_gross, s.currency))]
           if s.shipped or s.invoiced else [], none)  # fmt: skip
    return fig


def _empty(ax: Axes, title: str, text: str) -> None:
    ax.set_title(title, **TITLE)  # type: ignore[arg-type]
    ax.axis("off")
    ax.text(0.0, 0.85, text, style="italic", transform=ax.transAxes)


def plots_page(data: ReportData, zone: ZoneInfo) -> Figure:
    fig = _page("Plots", data)
    none = NONE.format(kind=data.period.kind)
    axes = [fig.add_axes((0.2, y, 0.75, 0.23)) for y in (0.68, 0.37, 0.06)]
    hours = HourLocator(interval=1 if data.period.kind == "shift" else 3, tz=zone)  # type: ignore[no-untyped-call]
    fmt = DateFormatter("%H:%M", tz=zone)  # type: ignore[no-untyped-call]
    lines = sorted({h.line for h in data.hours})
    if lines:
        for line in lines:
            points = [h for h in data.hours if h.line == line]
            axes[0].plot(
                [x + 1 / 48 for x in days(*(h.hour for h in points))],
                [h.oee * 100 for h in points],
                marker="o",
                label=line,
            )
        axes[0].set_title("OEE per line and hour", **TITLE)  # type: ignore[arg-type]
        axes[0].set_ylabel("OEE %")
        axes[0].set_ylim(0, 105)
        width = 1 / 24 * 0.8 / len(lines)
        for i, line in enumerate(lines):
            points = [h for h in data.hours if h.line == line]
            xs = [x + 1 / 48 + (i - (len(lines) - 1) / 2) * width for x in days(*(h.hour for h in points))]
            axes[1].bar(xs, [h.total for h in points], width, label=line)
        axes[1].xaxis_date(zone)
        axes[1].set_title("Production per line and hour", **TITLE)  # type: ignore[arg-type]
        axes[1].set_ylabel("units made")
        for ax in axes[:2]:
            ax.legend(fontsize=8, frameon=False)
            ax.xaxis.set_major_formatter(fmt)
            ax.xaxis.set_major_locator(hours)
            ax.set_xlim(*days(data.period.start, data.period.end))
            ax.spines[["top", "right"]].set_visible(False)
            ax.grid(axis="y", alpha=0.3)
    else:
        _empty(axes[0], "OEE per line and hour", none)
        _empty(axes[1], "Production per line and hour", none)
    _timeline(axes[2], data, none, fmt, hours)
    return fig


def _timeline(ax: Axes, data: ReportData, none: str, fmt: DateFormatter, hours: HourLocator) -> None:
    if not data.episodes:
        _empty(ax, "Anomaly timeline", none)
        return
    assets = sorted({e.asset for e in data.episodes})
    for e in data.episodes:
        start = max(e.started, data.period.start)
        end = min(e.ended or data.period.until, data.period.end)
        span = max((end - start).total_seconds() / 86400, 1 / 1440)  # at least a minute, to be seen
        ax.broken_barh([(days(start)[0], span)], (assets.index(e.asset) - 0.35, 0.7),
                       color="#d62728" if e.ended is None else "#ff7f0e")  # fmt: skip
    ax.set_yticks(range(len(assets)), assets)
    ax.xaxis.set_major_locator(hours)
    ax.set_ylim(-0.7, len(assets) - 0.3)
    ax.set_title("Anomaly timeline", **TITLE)  # type: ignore[arg-type]
    ax.xaxis.set_major_formatter(fmt)
    ax.set_xlim(*days(data.period.start, data.period.end))
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x", alpha=0.3)


def pages(data: ReportData, timezone: str = "UTC") -> list[Figure]:
    zone = ZoneInfo(timezone)
    return [summary_page(data, zone), tables_page(data), events_page(data, zone), plots_page(data, zone)]


def write_pdf(data: ReportData, path: Path, timezone: str = "UTC") -> Path:
    """Write the report to ``path`` (its folder is created); blocking: call it in a thread."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with PdfPages(path, metadata={"Title": f"{data.period.kind} report {data.period.site} {data.period.label}",
                                  "Creator": "factory report"}) as pdf:  # fmt: skip
        for page in pages(data, timezone):
            pdf.savefig(page)
    return path
