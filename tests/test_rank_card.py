"""Rank cards: a PNG of the fixed size, in the guild's colours, whose bar fill matches the XP."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from gateway.rank_card import BAR_BOX, CARD_SIZE, render_rank_card, rgb

ACCENT = 0x00FF88
BACKGROUND = 0x101010


def card(into: int, needed: int, accent: int = ACCENT, background: int = BACKGROUND) -> Image.Image:
    png = render_rank_card("Ada Lovelace", 7, into, needed, 3, accent, background)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return image.convert("RGB")


def accent_run(image: Image.Image, accent: int = ACCENT) -> tuple[int, int]:
    """(accent pixels along the bar's middle row, length of the run starting at its left end)."""
    left, top, right, bottom = BAR_BOX
    row = (top + bottom) // 2
    pixels = [image.getpixel((x, row)) for x in range(left, right)]
    colour = rgb(accent)
    total = sum(1 for p in pixels if p == colour)
    run = next((i for i, p in enumerate(pixels) if p != colour), len(pixels))
    return total, run


def test_card_has_the_expected_size_and_background() -> None:
    image = card(10, 100)
    assert image.size == CARD_SIZE
    assert image.getpixel((2, 2)) == rgb(BACKGROUND)
    assert image.getpixel((CARD_SIZE[0] - 3, CARD_SIZE[1] - 3)) == rgb(BACKGROUND)


@pytest.mark.parametrize(
    ("into", "needed"), [(0, 100), (1, 3), (37, 100), (50, 100), (12_345, 20_000), (155, 155)]
)
def test_bar_fill_matches_the_xp_progress(into: int, needed: int) -> None:
    width = BAR_BOX[2] - BAR_BOX[0]
    total, run = accent_run(card(into, needed))
    expected = round(width * into / needed)
    assert total == run == expected  # one solid run from the left, as long as the progress


def test_top_level_shows_a_full_bar_and_colours_follow_the_config() -> None:
    width = BAR_BOX[2] - BAR_BOX[0]
    assert accent_run(card(0, 0)) == (width, width)
    light = card(25, 100, accent=0xAA0000, background=0xF0F0F0)
    assert accent_run(light, accent=0xAA0000) == (round(width / 4),) * 2
    assert light.getpixel((2, 2)) == rgb(0xF0F0F0)


def test_long_and_unusual_names_render() -> None:
    for name in ("x" * 200, "Zoë 🐉 名前", ""):
        png = render_rank_card(name, 1000, 0, 0, None, ACCENT, BACKGROUND)
        assert Image.open(io.BytesIO(png)).size == CARD_SIZE
