"""The `pixelgate` command line. Errors are one line on stderr; exit 1 runtime, 2 usage."""

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from datetime import date, datetime
from functools import partial
from typing import NoReturn

import msgspec
from rich.progress import Progress
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.db import make_engine, make_sessionmaker, migrate, transaction, utcnow
from app.base.keys import KeyRing
from app.base.settings import ConfigError, Settings, load_settings
from app.base.sites import CONTROLLER_FIELDS, create_site, list_sites, site_out, update_site
from app.base.tables import Site
from app.demo import DemoExists, seed_demo
from app.hits.spool import SpoolInUse, lock_directory
from app.http.auth import SCOPES, create_key, revoke_key
from consent.policy import Policy, PolicyError, jurisdictions, load_policies
from retention.schedule import JOBS, JobContext, run_job


class UsageError(Exception):
    """Bad usage: exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> Parser:
    parser = Parser(prog="pixelgate", description="consent-aware tracking pixel")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    commands.add_parser("serve", help="migrate if needed, then serve")
    commands.add_parser("migrate", help="upgrade the database schema to head")

    sites = commands.add_parser("sites", help="manage sites").add_subparsers(
        dest="action", required=True, parser_class=Parser
    )
    create = sites.add_parser("create", help="create a site; prints it as JSON")
    create.add_argument("slug")
    create.add_argument("--policy", required=True)
    create.add_argument("--origin", action="append", default=[], dest="origins")
    create.add_argument("--jurisdiction", help="default: the one the policy is written for")
    _controller_arguments(create)
    update = sites.add_parser(
        "update", help="set the site's controller (only the fields given); prints it as JSON"
    )
    update.add_argument("slug")
    _controller_arguments(update)
    sites.add_parser("list", help="all sites, as JSON lines")

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="action", required=True, parser_class=Parser
    )
    key_create = keys.add_parser("create", help="create a key; it is shown this once")
    key_create.add_argument("slug")
    key_create.add_argument("--scope", required=True, choices=SCOPES)
    key_revoke = keys.add_parser("revoke", help="revoke a key by its id")
    key_revoke.add_argument("key_id")

    commands.add_parser(
        "demo", help="create site demo with 30 days of sample data; prints a read key"
    )
    jobs = commands.add_parser("jobs", help="scheduled jobs").add_subparsers(
        dest="action", required=True, parser_class=Parser
    )
    run = jobs.add_parser("run", help="run every due job once, then exit")
    run.add_argument("--only", choices=[job.name for job in JOBS])
    run.add_argument("--dry-run", action="store_true", help="print what would change")
    run.add_argument("--as-of", type=_as_of, help="run as if on this date (today or later)")
    return parser


def _controller_arguments(parser: argparse.ArgumentParser) -> None:
    """Who is responsible for the site's processing: named by its receipts and notice."""
    parser.add_argument("--controller", help="the organisation's name")
    parser.add_argument("--contact-email")
    parser.add_argument("--address", help="postal address, one text")
    parser.add_argument("--phone")
    parser.add_argument("--homepage", help="http(s) URL")


def _controller_of(args: argparse.Namespace) -> dict[str, str]:
    given = {field: getattr(args, field) for field in CONTROLLER_FIELDS}
    return {field: value for field, value in given.items() if value is not None}


def _as_of(value: str) -> datetime:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO date (YYYY-MM-DD)") from None
    now = utcnow()
    if day < now.date():
        raise argparse.ArgumentTypeError(f"{value} is in the past: only today or later")
    return now if day == now.date() else datetime.combine(day, now.timetz())


async def _jobs_run(args: argparse.Namespace, ctx: "CliContext") -> None:
    engine = make_engine(ctx.settings.database_url)
    base = JobContext(engine, make_sessionmaker(engine), ctx.policies)
    now = args.as_of or utcnow()
    jobs = [job for job in JOBS if not args.only or job.name == args.only]
    bar = Progress(transient=True) if sys.stdout.isatty() else None
    try:
        with bar or nullcontext():
            for job in jobs:
                job_context = base
                if bar is not None:
                    task = bar.add_task(job.name, total=None)
                    job_context = replace(base, progress=partial(bar.advance, task))
                counts = await run_job(job_context, job, now, dry_run=args.dry_run)
                result = {"job": job.name, "dry_run": args.dry_run, "as_of": now, "counts": counts}
                if counts is None:
                    result["skipped"] = "running in another process"
                if bar is not None:
                    bar.update(task, total=1, completed=1)
                    line = msgspec.json.encode(result).decode()
                    bar.console.print(line, markup=False, highlight=False, soft_wrap=True)
                else:
                    _print_json(result)
    finally:
        await engine.dispose()


def _print_json(value: object) -> None:
    # One value per line: the line separators JSON allows inside strings (a site's controller
    # may hold them) are escaped, since many line readers end a line at them.
    text = msgspec.json.encode(value).decode()
    sys.stdout.write(text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n")


def _serve(settings: Settings) -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops

    # Before anything starts, held until the server exits: its workers' writers share the
    # spool directory, another server may not.
    spool_lock = lock_directory(settings.spool_dir)
    try:
        migrate(settings.database_url)
        Granian(
            "app.main:serve_app",
            factory=True,
            interface=Interfaces.RSGI,
            websockets=False,
            loop=Loops.uvloop,
            address=settings.host,
            port=settings.port,
            workers=settings.workers,
        ).serve()
    finally:
        os.close(spool_lock)


class CliContext(msgspec.Struct):
    settings: Settings
    policies: dict[str, Policy]
    keyring: KeyRing


async def _sites_create(session: AsyncSession, args: argparse.Namespace, ctx: CliContext) -> None:
    site = await create_site(
        session,
        slug=args.slug,
        policy=args.policy,
        policies=jurisdictions(ctx.policies),
        origins=args.origins,
        jurisdiction=args.jurisdiction,
        controller=_controller_of(args),
        now=utcnow(),
    )
    _print_json(site_out(site))


async def _sites_update(session: AsyncSession, args: argparse.Namespace, ctx: CliContext) -> None:
    site = await update_site(session, args.slug, _controller_of(args))
    await session.flush()
    _print_json(site_out(site))


async def _sites_list(session: AsyncSession, args: argparse.Namespace, ctx: CliContext) -> None:
    for site in await list_sites(session):
        _print_json(site_out(site))


async def _keys_create(session: AsyncSession, args: argparse.Namespace, ctx: CliContext) -> None:
    if await session.get(Site, args.slug) is None:
        raise UsageError(f"unknown site {args.slug!r}")
    _print_json(await create_key(session, ctx.keyring, args.slug, args.scope, utcnow()))


async def _keys_revoke(session: AsyncSession, args: argparse.Namespace, ctx: CliContext) -> None:
    if not await revoke_key(session, args.key_id, utcnow()):
        raise UsageError(f"no active key {args.key_id!r}")


async def _demo(session: AsyncSession, args: argparse.Namespace, ctx: CliContext) -> None:
    base = ctx.settings.base_url
    _print_json(await seed_demo(session, ctx.keyring, ctx.policies, utcnow(), base))


Command = Callable[[AsyncSession, argparse.Namespace, CliContext], Awaitable[None]]
DATABASE_COMMANDS: dict[tuple[str, str], Command] = {
    ("sites", "create"): _sites_create,
    ("sites", "update"): _sites_update,
    ("sites", "list"): _sites_list,
    ("keys", "create"): _keys_create,
    ("keys", "revoke"): _keys_revoke,
}


async def _in_transaction(command: Command, args: argparse.Namespace, ctx: CliContext) -> None:
    engine = make_engine(ctx.settings.database_url)
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            await command(session, args, ctx)
    finally:
        await engine.dispose()


def run(argv: Sequence[str]) -> None:
    args = _parser().parse_args(argv)
    settings = load_settings()
    policies = load_policies(settings.policies_dir)
    if args.command == "serve":
        _serve(settings)
    elif args.command == "migrate":
        migrate(settings.database_url)
    elif args.command == "demo":
        migrate(settings.database_url)  # as `serve` does: the demo may come first
        ctx = CliContext(settings, policies, KeyRing(settings.secret_key))
        asyncio.run(_in_transaction(_demo, args, ctx))
    elif args.command == "jobs":
        asyncio.run(_jobs_run(args, CliContext(settings, policies, KeyRing(settings.secret_key))))
    else:
        ctx = CliContext(settings, policies, KeyRing(settings.secret_key))
        command = DATABASE_COMMANDS[(args.command, args.action)]
        asyncio.run(_in_transaction(command, args, ctx))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        run(sys.argv[1:] if argv is None else argv)
    except (UsageError, ConfigError, PolicyError, ValueError) as exc:
        sys.stderr.write(f"pixelgate: {exc}\n")
        return 2
    except (SpoolInUse, DemoExists) as exc:
        sys.stderr.write(f"pixelgate: {exc}\n")
        return 1
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        sys.stderr.write(f"pixelgate: database error: {reason} (has `pixelgate migrate` run?)\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"pixelgate: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
