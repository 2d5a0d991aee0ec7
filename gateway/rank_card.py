"""Rank cards: a member's name, level, rank and XP progress drawn as a PNG with Pillow.

The layout is fixed (`CARD_SIZE`, `BAR_BOX`) so a test can measure the progress bar's fill. Colours
come from the guild's configuration (`card_accent`, `card_background`, as 0xRRGGBB). Rendering is
synchronous and CPU-bound: the bot runs it in a worker thread.
"""

from __future__ import annotations

import io
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

CARD_SIZE = (934, 282)
# The progress bar's box (left, top, right, bottom), right and bottom exclusive.
BAR_BOX = (40, 196, 894, 236)
_PADDING = 40
_NAME_TOP = 44
_FIGURES_TOP = 132
_MAX_NAME = 64

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

RGB = tuple[int, int, int]


def rgb(colour: int) -> RGB:
    """0xRRGGBB as an (r, g, b) tuple."""
    return (colour >> 16) & 0xFF, (colour >> 8) & 0xFF, colour & 0xFF


def _mix(a: RGB, b: RGB, weight: float) -> RGB:
    mixed = tuple(round(x + (y - x) * weight) for x, y in zip(a, b, strict=True))
    return mixed[0], mixed[1], mixed[2]


def _is_dark(colour: RGB) -> bool:
    r, g, b = colour
    return 0.299 * r + 0.587 * g + 0.114 * b < 140


@lru_cache(maxsize=8)
def _font(size: int) -> Font:
    # Pillow's bundled FreeType font: the same glyphs on every machine, no system fonts needed.
    return ImageFont.load_default(size=size)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Font, width: int) -> str:
    """`text` shortened with an ellipsis until it fits `width` pixels."""
    text = text[:_MAX_NAME]
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def filled_width(xp_into_level: int, xp_needed: int) -> int:
    """Pixels of the bar that are filled for this much progress (a full bar at the top level)."""
    bar_width = BAR_BOX[2] - BAR_BOX[0]
    if xp_needed <= 0:
        return bar_width
    fraction = min(max(xp_into_level, 0), xp_needed) / xp_needed
    return round(bar_width * fraction)


def _track_colour(background: RGB, accent: RGB) -> RGB:
    track = _mix(background, (255, 255, 255) if _is_dark(background) else (0, 0, 0), 0.18)
    # the unfilled track must never be mistaken for the fill
    return track if track != accent else _mix(track, (128, 128, 128), 0.5)


def render_rank_card(
    name: str,
    level: int,
    xp_into_level: int,
    xp_needed: int,
    rank: int | None,
    accent: int,
    background: int,
) -> bytes:
    """A PNG rank card of `CARD_SIZE`: name, level, rank (None: unranked) and an XP bar whose
    filled width is proportional to `xp_into_level / xp_needed`."""
    back, fill = rgb(background), rgb(accent)
    text = (240, 240, 240) if _is_dark(back) else (20, 20, 20)
    muted = _mix(text, back, 0.4)
    image = Image.new("RGB", CARD_SIZE, back)
    draw = ImageDraw.Draw(image)
    width = CARD_SIZE[0]

    rank_text = f"RANK #{rank:,}" if rank else "UNRANKED"
    level_text = f"LEVEL {level:,}"
    figure_font = _font(34)
    level_width = draw.textlength(level_text, font=figure_font)
    draw.text(
        (width - _PADDING - level_width, _NAME_TOP + 6), level_text, fill=fill, font=figure_font
    )
    name_font = _font(48)
    name_room = int(width - 3 * _PADDING - level_width)
    draw.text(
        (_PADDING, _NAME_TOP), _fit(draw, name, name_font, name_room), fill=text, font=name_font
    )

    small = _font(26)
    draw.text((_PADDING, _FIGURES_TOP), rank_text, fill=muted, font=small)
    progress_text = (
        f"{xp_into_level:,} / {xp_needed:,} XP" if xp_needed > 0 else "maximum level reached"
    )
    progress_width = draw.textlength(progress_text, font=small)
    draw.text(
        (width - _PADDING - progress_width, _FIGURES_TOP), progress_text, fill=text, font=small
    )

    left, top, right, bottom = BAR_BOX
    draw.rectangle((left, top, right - 1, bottom - 1), fill=_track_colour(back, fill))
    filled = filled_width(xp_into_level, xp_needed)
    if filled > 0:
        draw.rectangle((left, top, left + filled - 1, bottom - 1), fill=fill)

    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()
