"""A hypothesis state machine driving random commands through `Ledger.execute` against the real
PostgreSQL store and a simple in-memory model, checking DESIGN §4 invariants 1, 2, 4, 6 and 7
after every step.

Each example works in a fresh pair of guild ids, so examples share one database without
interfering; the per-guild checks only look at the current example's guilds.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec
import psycopg
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ledger import commands as cmd
from ledger import events as ev
from ledger.errors import (
    CooldownActive,
    InsufficientFunds,
    InvalidAmount,
    InvalidInput,
    LedgerError,
    UnknownItem,
    UnknownMember,
)
from ledger.guild_config import DEFAULT_CONFIG, GuildConfig, evolve_config
from ledger.member import NEW_MEMBER, MemberState, decode_state, evolve, lc_delta
from ledger.service import Outcome
from tests.fix_db import LedgerEnv

T0 = datetime(2024, 1, 1, 8, 0, tzinfo=UTC)
ADMIN = cmd.Actor(999_999, is_admin=True)
COOLDOWN = timedelta(seconds=DEFAULT_CONFIG.message_cooldown_seconds)
JACKPOTS = DEFAULT_CONFIG.jackpot_amounts
FACTORS = {"x2": 200, "x3": 300}
# Settings the machine changes per guild (invariant 7 covers config too), with their defaults.
SETTINGS = ("starting_balance", "daily_amount", "game_xp_win")
ITEMS = ("jackpot", "x2", "x3")
_guild_ids = itertools.count(1_000_000, 2)
# What the machine did across examples (printed at the end, shown with `-s` or on failure).
STATS: Counter[str] = Counter()

guild_index = st.integers(0, 1)
member_ids = st.integers(1, 4)
entropies = st.integers(0, 2**48 - 1)


def model_level(xp: int) -> int:
    """MEE6 level by walking the curve (independent of `ledger.levels`)."""
    level, total = 0, 0
    while xp >= total + 5 * level * level + 50 * level + 100:
        total += 5 * level * level + 50 * level + 100
        level += 1
    return level


@dataclass
class Wallet:
    """The model of one member in one guild."""

    joined: bool = False
    balance: int = 0
    xp: int = 0
    items: Counter[str] = field(default_factory=Counter)
    multiplier: tuple[int, int] | None = None  # (factor %, games left)
    last_message: datetime | None = None
    daily_day: int = 0
    streak: int = 0
    invited: bool = False

    def copy(self) -> Wallet:
        return Wallet(**{**self.__dict__, "items": Counter(self.items)})


@dataclass
class Undo:
    """What reverting the event at `position` does, in position order: (member, lc, xp, item,
    item count) per compensating event (a transfer's two halves are two entries)."""

    position: int
    effects: list[tuple[int, int, int, str, int]]


def position_of(outcome: Outcome, event_type: str) -> int:
    (position,) = [
        p for t, p in zip(outcome.events, outcome.positions, strict=True) if t == event_type
    ]
    return position


class Economy(RuleBasedStateMachine):
    """Random economy traffic in two guilds; the model predicts every outcome."""

    def __init__(self, env: LedgerEnv, conn: psycopg.Connection) -> None:
        super().__init__()
        self.env = env
        self.conn = conn
        first = next(_guild_ids)
        self.guilds = (first, first + 1)
        self.clock = T0
        self.model: dict[int, dict[int, Wallet]] = {g: {} for g in self.guilds}
        self.config: dict[int, dict[str, int]] = {
            g: {key: getattr(DEFAULT_CONFIG, key) for key in SETTINGS} for g in self.guilds
        }
        self.undos: dict[int, list[Undo]] = {g: [] for g in self.guilds}
        self.reverted: dict[int, set[int]] = {g: set() for g in self.guilds}
        self.appended: list[tuple[cmd.AnyCommand, Outcome]] = []
        self.expected_events = 0
        self._ids = itertools.count()

    # --- helpers ---------------------------------------------------------------------------------

    def wallet(self, guild: int, member: int) -> Wallet:
        """A copy of the model's wallet (changes are adopted by `commit`)."""
        return self.model[guild].get(member, Wallet()).copy()

    def joining(self, guild: int, member: int) -> Wallet:
        """The wallet as it is after a first interaction (the starting balance minted)."""
        wallet = self.wallet(guild, member)
        if not wallet.joined:
            wallet.joined = True
            wallet.balance += self.config[guild]["starting_balance"]
        return wallet

    def command_id(self, guild: int) -> str:
        return f"{guild}-{next(self._ids)}"

    def event_count(self) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM events WHERE guild_id = ANY(%s)", (list(self.guilds),)
        ).fetchone()
        assert row is not None
        return int(row[0])

    def execute(self, command: cmd.AnyCommand, refused: type[LedgerError] | None) -> Outcome | None:
        """Run `command`; check it was refused as the model expects, and appended nothing then."""
        before = self.event_count()
        STATS[type(command).__name__] += 1
        try:
            outcome = self.env.run(self.env.ledger.execute(command))
        except LedgerError as exc:
            STATS[f"refused {type(exc).__name__}"] += 1
            assert refused is not None, f"unexpected refusal {exc!r} of {command!r}"
            assert isinstance(exc, refused), f"expected {refused.__name__}, got {exc!r}"
            assert self.event_count() == before, "a refused command appended events"
            return None
        assert refused is None, f"expected {refused.__name__}, got {outcome!r}"
        assert not outcome.replayed
        assert len(outcome.positions) == len(outcome.events)
        assert self.event_count() == before + len(outcome.events)
        STATS["appended" if outcome.appended else f"no-op {outcome.note}"] += 1
        if outcome.appended:
            self.appended.append((command, outcome))
            self.expected_events += len(outcome.events)
        return outcome

    def commit(self, guild: int, outcome: Outcome, wallets: dict[int, Wallet]) -> None:
        """Adopt the model's new wallets and check the outcome's figures against them."""
        levels = {m: model_level(self.wallet(guild, m).xp) for m in wallets}
        for member, old, new in outcome.level_changes:
            # Level changes chain from the level before the command to the level after it.
            assert old == levels[member] and new != old
            levels[member] = new
        for member, wallet in wallets.items():
            assert levels[member] == model_level(wallet.xp)
            self.model[guild][member] = wallet
        for member, summary in outcome.members.items():
            wallet = self.model[guild][member]
            assert (summary.balance, summary.xp, summary.level) == (
                wallet.balance,
                wallet.xp,
                model_level(wallet.xp),
            ), f"member {member}: outcome {summary} vs model {wallet}"
        assert set(outcome.members) <= set(wallets)

    # --- rules -----------------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([1, 30, 59, 60, 61, 3600, 86_399, 86_400, 90_000, 200_000]))
    def advance_clock(self, seconds: int) -> None:
        self.clock += timedelta(seconds=seconds)

    @rule(
        g=guild_index,
        sender=member_ids,
        recipient=member_ids,
        amount=st.one_of(st.integers(1, 80), st.sampled_from([0, -5, 10**10])),
    )
    def transfer(self, g: int, sender: int, recipient: int, amount: int) -> None:
        guild = self.guilds[g]
        command = cmd.Transfer(
            guild_id=guild,
            command_id=self.command_id(guild),
            from_id=sender,
            to_id=recipient,
            amount=amount,
            at=self.clock,
        )
        if not 0 < amount <= DEFAULT_CONFIG.max_amount:
            self.execute(command, InvalidAmount)
            return
        if sender == recipient:
            self.execute(command, InvalidInput)
            return
        source = self.joining(guild, sender)
        target = self.joining(guild, recipient)
        if source.balance < amount:
            self.execute(command, InsufficientFunds)
            return
        source.balance -= amount
        target.balance += amount
        outcome = self.execute(command, None)
        assert outcome is not None and outcome.value == amount
        self.commit(guild, outcome, {sender: source, recipient: target})
        sent = position_of(outcome, "transfer_sent")
        assert position_of(outcome, "transfer_received") == sent + 1
        self.undos[guild].append(
            Undo(sent, [(sender, amount, 0, "", 0), (recipient, -amount, 0, "", 0)])
        )

    @rule(g=guild_index, member=member_ids, entropy=entropies, burst=st.booleans())
    def message_xp(self, g: int, member: int, entropy: int, burst: bool) -> None:
        guild = self.guilds[g]
        for n in range(2 if burst else 1):  # a burst: a second message at the same moment
            command = cmd.GrantMessageXp(
                guild_id=guild,
                command_id=self.command_id(guild),
                member_id=member,
                channel_id=555,
                message_id=next(self._ids) + 1,
                entropy=entropy + n,
                at=self.clock,
            )
            wallet = self.wallet(guild, member)
            outcome = self.execute(command, None)
            assert outcome is not None
            if wallet.last_message is not None and self.clock - wallet.last_message < COOLDOWN:
                assert not outcome.appended and outcome.note == "cooldown"
                continue
            after = self.joining(guild, member)
            gained = DEFAULT_CONFIG.message_xp_min + (entropy + n) % 11
            after.xp += gained
            after.last_message = self.clock
            assert outcome.value == gained
            self.commit(guild, outcome, {member: after})

    @rule(g=guild_index, member=member_ids)
    def daily(self, g: int, member: int) -> None:
        guild = self.guilds[g]
        command = cmd.ClaimDaily(
            guild_id=guild, command_id=self.command_id(guild), member_id=member, at=self.clock
        )
        after = self.joining(guild, member)
        day = self.clock.date().toordinal()
        if after.daily_day == day:
            self.execute(command, CooldownActive)
            return
        after.streak = after.streak + 1 if after.daily_day == day - 1 else 1
        after.daily_day = day
        amount = self.config[guild]["daily_amount"] + min(after.streak - 1, 7) * 10
        after.balance += amount
        outcome = self.execute(command, None)
        assert outcome is not None and outcome.value == amount
        self.commit(guild, outcome, {member: after})
        position = position_of(outcome, "daily_claimed")
        self.undos[guild].append(Undo(position, [(member, -amount, 0, "", 0)]))

    @rule(
        g=guild_index,
        member=member_ids,
        won=st.booleans(),
        bet=st.integers(0, 60),
        payout=st.integers(0, 120),
    )
    def game(self, g: int, member: int, won: bool, bet: int, payout: int) -> None:
        guild = self.guilds[g]
        command = cmd.RecordGame(
            guild_id=guild,
            command_id=self.command_id(guild),
            member_id=member,
            game="dice",
            won=won,
            bet=bet,
            payout=payout,
            at=self.clock,
        )
        after = self.joining(guild, member)
        if bet > after.balance:
            self.execute(command, InsufficientFunds)
            return
        factor = after.multiplier[0] if after.multiplier else 100
        gained = (self.config[guild]["game_xp_win"] if won else 5) * factor // 100
        if after.multiplier:
            left = after.multiplier[1] - 1
            after.multiplier = (after.multiplier[0], left) if left > 0 else None
        after.balance += payout - bet
        after.xp += gained
        outcome = self.execute(command, None)
        assert outcome is not None and outcome.value == gained
        self.commit(guild, outcome, {member: after})
        position = position_of(outcome, "game_played")
        self.undos[guild].append(Undo(position, [(member, bet - payout, -gained, "", 0)]))

    @rule(g=guild_index, member=member_ids, lc=st.integers(0, 300), xp=st.integers(0, 400))
    def admin_grant(self, g: int, member: int, lc: int, xp: int) -> None:
        guild = self.guilds[g]
        command = cmd.AdminGrant(
            guild_id=guild,
            command_id=self.command_id(guild),
            member_id=member,
            actor=ADMIN,
            lc=lc,
            xp=xp,
            at=self.clock,
        )
        if lc == 0 and xp == 0:
            self.execute(command, InvalidAmount)
            return
        after = self.joining(guild, member)
        after.balance += lc
        after.xp += xp
        outcome = self.execute(command, None)
        assert outcome is not None
        self.commit(guild, outcome, {member: after})
        if lc:
            position = position_of(outcome, "lc_minted")
            self.undos[guild].append(Undo(position, [(member, -lc, 0, "", 0)]))
        if xp:
            position = position_of(outcome, "xp_granted")
            self.undos[guild].append(Undo(position, [(member, 0, -xp, "", 0)]))

    @rule(g=guild_index, member=member_ids, lc=st.integers(1, 100))
    def admin_take(self, g: int, member: int, lc: int) -> None:
        guild = self.guilds[g]
        command = cmd.AdminTake(
            guild_id=guild,
            command_id=self.command_id(guild),
            member_id=member,
            actor=ADMIN,
            lc=lc,
            at=self.clock,
        )
        after = self.wallet(guild, member)
        if not after.joined:
            self.execute(command, UnknownMember)
            return
        if lc > after.balance:
            self.execute(command, InsufficientFunds)
            return
        after.balance -= lc
        outcome = self.execute(command, None)
        assert outcome is not None
        self.commit(guild, outcome, {member: after})

    @rule(g=guild_index, member=member_ids, item=st.sampled_from(ITEMS), quantity=st.integers(1, 3))
    def grant_item(self, g: int, member: int, item: str, quantity: int) -> None:
        guild = self.guilds[g]
        command = cmd.GrantItem(
            guild_id=guild,
            command_id=self.command_id(guild),
            member_id=member,
            item=item,
            quantity=quantity,
            actor=ADMIN,
            at=self.clock,
        )
        after = self.joining(guild, member)
        after.items[item] += quantity
        outcome = self.execute(command, None)
        assert outcome is not None
        self.commit(guild, outcome, {member: after})
        position = position_of(outcome, "item_granted")
        self.undos[guild].append(Undo(position, [(member, 0, 0, item, -quantity)]))

    @rule(g=guild_index, member=member_ids, item=st.sampled_from(ITEMS), entropy=entropies)
    def use_item(self, g: int, member: int, item: str, entropy: int) -> None:
        guild = self.guilds[g]
        command = cmd.UseItem(
            guild_id=guild,
            command_id=self.command_id(guild),
            member_id=member,
            item=item,
            entropy=entropy,
            at=self.clock,
        )
        after = self.joining(guild, member)
        if after.items[item] <= 0:
            self.execute(command, UnknownItem)
            return
        if item != "jackpot" and after.multiplier is not None:
            self.execute(command, InvalidInput)
            return
        after.items[item] -= 1
        won = JACKPOTS[entropy % len(JACKPOTS)]
        if item == "jackpot":
            after.balance += won
        else:
            after.multiplier = (FACTORS[item], DEFAULT_CONFIG.multiplier_games)
        outcome = self.execute(command, None)
        assert outcome is not None
        self.commit(guild, outcome, {member: after})
        if item == "jackpot":
            assert outcome.value == won
            position = position_of(outcome, "jackpot_opened")
            self.undos[guild].append(Undo(position, [(member, -won, 0, "jackpot", 1)]))

    def held(self) -> list[tuple[int, int, str]]:
        return [
            (g, member, item)
            for g, guild in enumerate(self.guilds)
            for member, wallet in sorted(self.model[guild].items())
            for item in ITEMS
            if wallet.items[item] > 0
        ]

    @precondition(lambda self: bool(self.held()))
    @rule(pick=st.integers(0, 10**6), entropy=entropies)
    def use_held_item(self, pick: int, entropy: int) -> None:
        held = self.held()
        self.use_item(*held[pick % len(held)], entropy=entropy)

    @rule(g=guild_index, inviter=member_ids, invitee=member_ids)
    def invite(self, g: int, inviter: int, invitee: int) -> None:
        guild = self.guilds[g]
        command = cmd.RewardInvite(
            guild_id=guild,
            command_id=self.command_id(guild),
            inviter_id=inviter,
            invitee_id=invitee,
            at=self.clock,
        )
        if inviter == invitee:
            self.execute(command, InvalidInput)
            return
        if self.wallet(guild, invitee).invited:
            outcome = self.execute(command, None)
            assert outcome is not None and outcome.note == "already_rewarded"
            return
        host, guest = self.joining(guild, inviter), self.joining(guild, invitee)
        host.balance += DEFAULT_CONFIG.invite_reward_inviter
        guest.balance += DEFAULT_CONFIG.invite_reward_invitee
        guest.invited = True
        outcome = self.execute(command, None)
        assert outcome is not None
        self.commit(guild, outcome, {inviter: host, invitee: guest})

    @rule(
        g=guild_index,
        key=st.sampled_from(SETTINGS),
        value=st.one_of(st.integers(0, 150), st.just(-1)),
    )
    def change_config(self, g: int, key: str, value: int) -> None:
        guild = self.guilds[g]
        command = cmd.ChangeConfig(
            guild_id=guild,
            command_id=self.command_id(guild),
            actor=ADMIN,
            key=key,
            value=value,
            at=self.clock,
        )
        if value < 0:
            self.execute(command, InvalidInput)
            return
        outcome = self.execute(command, None)
        assert outcome is not None and outcome.events == ["config_changed"]
        assert outcome.members == {}
        self.config[guild][key] = value

    @precondition(lambda self: any(self.undos.values()))
    @rule(
        g=guild_index,
        picks=st.lists(st.integers(0, 10**6), min_size=1, max_size=3),
        foreign=st.booleans(),
    )
    def revert(self, g: int, picks: list[int], foreign: bool) -> None:
        """Compensate recorded events; a revert is refused when any balance or item count
        would go negative, skips positions already reverted, and sees only its own guild."""
        guild, other = self.guilds[g], self.guilds[1 - g]
        if not self.undos[guild]:
            guild, other = other, guild
        undos = {
            u.position: u for u in (self.undos[guild][p % len(self.undos[guild])] for p in picks)
        }
        positions = sorted(undos)
        if foreign and self.undos[other]:
            # Naming another guild's position: refused, nothing compensated anywhere.
            alien = self.undos[other][picks[0] % len(self.undos[other])].position
            command = cmd.Revert(
                guild_id=guild,
                command_id=self.command_id(guild),
                actor=ADMIN,
                positions=(*positions, alien),
                at=self.clock,
            )
            self.execute(command, InvalidInput)
            return
        command = cmd.Revert(
            guild_id=guild,
            command_id=self.command_id(guild),
            actor=ADMIN,
            positions=tuple(positions),
            at=self.clock,
        )
        wallets: dict[int, Wallet] = {}
        compensated = 0
        for position in positions:
            if position in self.reverted[guild]:
                continue
            for member, lc, xp, item, count in undos[position].effects:
                wallet = wallets.setdefault(member, self.wallet(guild, member))
                wallet.balance += lc
                wallet.xp += xp
                if item:
                    wallet.items[item] += count
                compensated += 1
                if wallet.balance < 0 or any(n < 0 for n in wallet.items.values()):
                    self.execute(command, InsufficientFunds)
                    return
        outcome = self.execute(command, None)
        assert outcome is not None
        if not compensated:
            assert not outcome.appended and outcome.note == "already_reverted"
            return
        assert outcome.events.count("reverted") == compensated
        self.commit(guild, outcome, wallets)
        self.reverted[guild].update(positions)

    @precondition(lambda self: bool(self.appended))
    @rule(pick=st.integers(0, 10**6), same_body=st.booleans())
    def retry(self, pick: int, same_body: bool) -> None:
        """Invariant 4: a seen command id appends nothing and returns the first outcome."""
        command, first = self.appended[pick % len(self.appended)]
        if not same_body:  # a retry decided at another moment: the id still decides
            command = msgspec.structs.replace(command, at=self.clock)
        before = self.event_count()
        again = self.env.run(self.env.ledger.execute(command))
        STATS["retried"] += 1
        assert again.replayed
        assert msgspec.structs.replace(again, replayed=False) == first
        assert self.event_count() == before

    # --- invariants ------------------------------------------------------------------------------

    @invariant()
    def invariants_hold(self) -> None:
        STATS["invariant checks"] += 1
        guilds = list(self.guilds)
        rows = self.conn.execute(
            "SELECT guild_id, stream, version, type, schema_version, data::text,"
            " meta->>'command_id', tx::text"
            " FROM events WHERE guild_id = ANY(%s) ORDER BY guild_id, stream, version",
            (guilds,),
        ).fetchall()
        state_rows: dict[tuple[int, int], tuple[int, MemberState]] = {}
        config_rows: dict[int, tuple[int, GuildConfig]] = {}
        for g, s, v, state in self.conn.execute(
            "SELECT guild_id, stream, version, state::text FROM streams WHERE guild_id = ANY(%s)",
            (guilds,),
        ).fetchall():
            if s == 0:
                config_rows[g] = (v, msgspec.json.decode(state, type=GuildConfig))
            else:
                state_rows[(g, s)] = (v, decode_state(state))
        # Invariant 4 (globally): nothing beyond what first executions appended.
        assert len(rows) == self.expected_events

        folds: dict[tuple[int, int], MemberState] = {}
        versions: dict[tuple[int, int], int] = {}
        minted_minus_burned = Counter[int]()
        transfers: dict[tuple[int, str], int] = Counter()
        message_times: dict[tuple[int, int], list[datetime]] = {}
        configs = {g: (0, DEFAULT_CONFIG) for g in guilds}
        for guild, stream, version, type_name, schema, data, command_id, _tx in rows:
            event = ev.decode(data, type_name, schema)
            key = (guild, stream)
            assert event.member_id == stream
            versions[key] = versions.get(key, 0) + 1
            assert version == versions[key], "gap or duplicate in stream versions"
            if stream == 0:
                assert isinstance(event, ev.ConfigChanged)
                configs[guild] = (version, evolve_config(configs[guild][1], event))
                continue
            state = evolve(folds.get(key, NEW_MEMBER), event)
            folds[key] = state
            # Invariant 1 in every committed state along the log.
            assert state.balance >= 0, f"negative balance in the fold of {key}"
            assert all(count >= 0 for count in state.items.values())
            if isinstance(event, ev.TransferSent | ev.TransferReceived):
                transfers[(guild, command_id)] += lc_delta(event)
            else:
                minted_minus_burned[guild] += lc_delta(event)
            if isinstance(event, ev.XpGranted) and event.source == "message":
                message_times.setdefault(key, []).append(event.at)

        # Each guild's config row is the fold of its own ConfigChanged events (7).
        for guild in guilds:
            version, config = configs[guild]
            assert config_rows.get(guild, (0, DEFAULT_CONFIG)) == (version, config)
            assert {key: getattr(config, key) for key in SETTINGS} == self.config[guild]

        # The write-side state rows are the fold of their streams, and never negative (1).
        assert set(state_rows) == set(folds)
        for key, (version, state) in state_rows.items():
            assert version == versions[key]
            assert state == folds[key], f"state row of {key} differs from the fold of its log"
            assert state.balance >= 0
            assert all(count >= 0 for count in state.items.values())

        # Invariant 2: conservation per guild; every transfer is zero-sum.
        for guild in guilds:
            total = sum(s.balance for (g, _), s in folds.items() if g == guild)
            assert total == minted_minus_burned[guild]
            assert total == sum(w.balance for w in self.model[guild].values())
        assert all(delta == 0 for delta in transfers.values())

        # Invariant 6: message-XP grants for one member at least a cooldown apart.
        for times in message_times.values():
            assert all(b - a >= COOLDOWN for a, b in itertools.pairwise(sorted(times)))

        # Invariant 7: each guild's fold equals that guild's model, nothing more, nothing less.
        for guild in guilds:
            members = {s for (g, s) in folds if g == guild}
            assert members == set(self.model[guild])
            for member, wallet in self.model[guild].items():
                state = folds[(guild, member)]
                assert state.joined == wallet.joined
                assert (state.balance, state.xp) == (wallet.balance, wallet.xp)
                assert state.level == model_level(wallet.xp)
                assert state.items == {k: v for k, v in wallet.items.items() if v}
                expected_multiplier = (
                    None
                    if state.multiplier is None
                    else (state.multiplier.factor_pct, state.multiplier.games_left)
                )
                assert expected_multiplier == wallet.multiplier
                assert state.daily_streak == wallet.streak
                assert state.invited == wallet.invited


def test_economy_state_machine(env: LedgerEnv) -> None:
    with psycopg.connect(env.url, autocommit=True) as conn:
        run_state_machine_as_test(lambda: Economy(env, conn))
    print(dict(sorted(STATS.items())))
