"""Charts for `ledger stats --plot`: line panels drawn with Pillow (no plotting stack)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ledger.stats import GuildStats

WIDTH, PANEL, MARGIN = 1000, 260, 70
COLOURS = ((88, 101, 242), (237, 66, 69), (87, 242, 135), (254, 231, 92))
BACKGROUND, AXIS, TEXT = (43, 45, 49), (120, 124, 130), (235, 235, 235)

Series = tuple[str, Sequence[tuple[date, int]]]


def _panel(draw: ImageDraw.ImageDraw, top: int, title: str, series: Sequence[Series]) -> None:
    font = ImageFont.load_default(size=15)
    small = ImageFont.load_default(size=12)
    left, right, bottom = MARGIN, WIDTH - 20, top + PANEL - 40
    draw.text((left, top + 8), title, fill=TEXT, font=font)
    draw.line([(left, top + 30), (left, bottom), (right, bottom)], fill=AXIS, width=1)
    points = [p for _, values in series for p in values]
    if not points:
        draw.text((left + 10, top + 60), "no data", fill=AXIS, font=small)
        return
    first = min(d for d, _ in points).toordinal()
    last = max(d for d, _ in points).toordinal()
    peak = max(1, max(v for _, v in points))
    span = max(1, last - first)
    draw.text((8, top + 30), f"{peak:,}", fill=AXIS, font=small)
    draw.text((left, bottom + 6), min(d for d, _ in points).isoformat(), fill=AXIS, font=small)
    draw.text(
        (right - 80, bottom + 6), max(d for d, _ in points).isoformat(), fill=AXIS, font=small
    )
    for index, (label, values) in enumerate(series):
        if not values:
            continue
        colour = COLOURS[index % len(COLOURS)]
        coords = [
            (
                left + (right - left) * (d.toordinal() - first) / span,
                bottom - (bottom - top - 30) * v / peak,
            )
            for d, v in sorted(values)
        ]
        if len(coords) > 1:
            draw.line(coords, fill=colour, width=2)
        else:
            x, y = coords[0]
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        legend_y = top + 8 + 16 * index
        draw.rectangle([right - 160, legend_y + 5, right - 148, legend_y + 9], fill=colour)
        draw.text((right - 142, legend_y), label, fill=colour, font=small)


def render_stats(stats: GuildStats, path: Path) -> None:
    """Three panels: LC minted/burned per day, XP per day, warnings per week."""
    image = Image.new("RGB", (WIDTH, 3 * PANEL), BACKGROUND)
    draw = ImageDraw.Draw(image)
    _panel(
        draw,
        0,
        "LC per day",
        [("minted", list(stats.minted.items())), ("burned", list(stats.burned.items()))],
    )
    _panel(draw, PANEL, "XP per day", [("XP granted", list(stats.xp.items()))])
    weekly = [(date.fromisocalendar(y, w, 1), n) for (y, w), n in stats.warnings.items()]
    _panel(draw, 2 * PANEL, "Warnings per week", [("warnings", weekly)])
    image.save(path, format="PNG")
