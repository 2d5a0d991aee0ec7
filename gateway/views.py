"""Buttons: confirm or cancel a command, page through a list, use an inventory item.

Views hold no rules: a press calls the function the command gave them (which calls the ledger)
and re-renders. Only the member who ran the command may press (`OwnedView`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

import discord

from gateway.interactions import InFlight, Interaction, OwnedView
from ledger.rules.items import CATALOGUE

Cursor = TypeVar("Cursor")


class Reply:
    """What a confirmed command shows: text and/or an embed replacing the question, and an
    optional public message (`announce`) posted after it."""

    def __init__(
        self,
        content: str | None = None,
        embed: discord.Embed | None = None,
        announce: str | None = None,
    ) -> None:
        self.content = content
        self.embed = embed
        self.announce = announce


class ConfirmView(OwnedView):
    """Confirm or cancel. `on_confirm` runs the command and returns the message to show; if it
    raises, the buttons stay so the member can try again (the command id makes that safe)."""

    def __init__(
        self,
        owner_id: int,
        in_flight: InFlight,
        on_confirm: Callable[[Interaction], Awaitable[Reply]],
        timeout: float = 120.0,
    ) -> None:
        super().__init__(owner_id, in_flight, timeout)
        self.on_confirm = on_confirm
        self.confirmed = False

    @discord.ui.button(label="Confirm", style=discord.ButtonStyle.success)
    async def confirm(self, interaction: Interaction, button: discord.ui.Button[Any]) -> None:
        """Run the command, then show its result with the buttons greyed out."""
        reply = await self.on_confirm(interaction)
        self.confirmed = True
        self.disable()
        self.stop()
        await interaction.response.edit_message(content=reply.content, embed=reply.embed, view=self)
        if reply.announce:
            await interaction.followup.send(reply.announce)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: Interaction, button: discord.ui.Button[Any]) -> None:
        """Drop the command: nothing is recorded."""
        self.disable()
        self.stop()
        await interaction.response.edit_message(
            content="Cancelled; nothing was changed.", embed=None, view=self
        )


class PagedView(OwnedView, Generic[Cursor]):
    """Newer/older (or previous/next) pages through a keyset-paginated list.

    `fetch(cursor, page_number)` returns a page's embed and the cursor of the page after it (None
    at the end).
    Cursors of pages already seen are kept, so going back costs the same as going forward.
    """

    def __init__(
        self,
        owner_id: int,
        in_flight: InFlight,
        fetch: Callable[[Cursor | None, int], Awaitable[tuple[discord.Embed, Cursor | None]]],
        next_cursor: Cursor | None,
        timeout: float = 300.0,
    ) -> None:
        super().__init__(owner_id, in_flight, timeout)
        self.fetch = fetch
        self.cursors: list[Cursor | None] = [None]  # cursors[i] starts page i
        self.next_cursor = next_cursor
        self.page = 0
        self._update_buttons()

    def _update_buttons(self) -> None:
        self.previous.disabled = self.page == 0
        self.next.disabled = self.next_cursor is None

    async def _show(self, interaction: Interaction, page: int) -> None:
        if page > len(self.cursors) - 1:
            self.cursors.append(self.next_cursor)
        embed, self.next_cursor = await self.fetch(self.cursors[page], page)
        self.page = page
        self._update_buttons()
        await interaction.response.edit_message(embed=embed, view=self)

    @discord.ui.button(label="◀", style=discord.ButtonStyle.secondary)
    async def previous(self, interaction: Interaction, button: discord.ui.Button[Any]) -> None:
        """The page before this one."""
        await self._show(interaction, max(self.page - 1, 0))

    @discord.ui.button(label="▶", style=discord.ButtonStyle.secondary)
    async def next(self, interaction: Interaction, button: discord.ui.Button[Any]) -> None:
        """The page after this one."""
        await self._show(interaction, self.page + 1)


def item_label(item: str, quantity: int) -> str:
    """A button's label for using one of `quantity` items."""
    verb = "Open" if CATALOGUE[item].kind == "jackpot" else "Activate"
    return f"{verb} {item} ({quantity})"


class UseItemButton(discord.ui.Button["InventoryView"]):
    """Use one of an item the member holds."""

    def __init__(self, item: str, quantity: int) -> None:
        super().__init__(
            label=item_label(item, quantity),
            style=discord.ButtonStyle.primary,
            custom_id=f"use:{item}",
        )
        self.item = item

    def show(self, quantity: int) -> None:
        """Relabel with the count left; grey out at zero."""
        self.label = item_label(self.item, max(quantity, 0))
        self.disabled = quantity <= 0

    async def callback(self, interaction: Interaction) -> None:
        """Hand the press to the view."""
        assert self.view is not None
        await self.view.press(interaction, self.item)


class InventoryView(OwnedView):
    """One button per usable item the member holds.

    `use(interaction, item)` runs the command and returns the line to show and whether an item
    was consumed (not when the press was a replay); `render(counts)` redraws the inventory.
    """

    def __init__(
        self,
        owner_id: int,
        in_flight: InFlight,
        counts: Mapping[str, int],
        use: Callable[[Interaction, str], Awaitable[tuple[str, bool]]],
        render: Callable[[Mapping[str, int]], discord.Embed],
        timeout: float = 300.0,
    ) -> None:
        super().__init__(owner_id, in_flight, timeout)
        self.counts = {item: n for item, n in counts.items() if item in CATALOGUE and n > 0}
        self.use = use
        self.render = render
        self.buttons: dict[str, UseItemButton] = {}
        for item in sorted(self.counts):
            self.buttons[item] = UseItemButton(item, self.counts[item])
            self.add_item(self.buttons[item])

    async def press(self, interaction: Interaction, item: str) -> None:
        """Use one `item`, then show the result and the updated counts."""
        line, consumed = await self.use(interaction, item)
        if consumed:
            self.counts[item] = self.counts.get(item, 0) - 1
        self.buttons[item].show(self.counts[item])
        await interaction.response.edit_message(
            content=line, embed=self.render(self.counts), view=self
        )
