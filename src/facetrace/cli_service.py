"""``facetrace serve``, ``facetrace admin ...`` and ``facetrace audit verify``.

``admin`` does the first set-up from the shell (an organisation, its first users, API
tokens) and writes the same audit entries as the web service. Passwords are read from
standard input when it is not a terminal (one line), else prompted twice, never from a
flag, so they stay out of shell history.
"""

from __future__ import annotations

import json
import sys

import click

from facetrace.cli_eval import app_of
from facetrace.errors import AuditChainError
from facetrace.service.tables import ROLES


def _password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    return str(click.prompt("password", hide_input=True, confirmation_prompt=True))


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--forwarded-allow-ips",
    default="127.0.0.1",
    show_default=True,
    help="Addresses of the TLS proxy whose X-Forwarded-For/-Proto are trusted (client "
    "addresses for the login rate limit, https for Secure cookies); comma-separated.",
)
@click.pass_context
def serve_cmd(ctx: click.Context, host: str, port: int, forwarded_allow_ips: str) -> None:
    """Run the web application and REST API (OpenAPI documentation at /docs).

    One process: searches run in its thread pool. It speaks plain HTTP; put a TLS
    proxy in front of it anywhere but on loopback.
    """
    import uvicorn

    from facetrace.service.server import create_app

    settings = app_of(ctx).settings
    click.echo(f"facetrace serving {settings.data_dir} on http://{host}:{port}/", err=True)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
    )


@click.group("admin")
def admin_group() -> None:
    """Set up organisations, users and API tokens."""


@admin_group.command("create-org")
@click.argument("name")
@click.pass_context
def create_org(ctx: click.Context, name: str) -> None:
    """Create an organisation (an agency)."""
    from facetrace.service import auth, uow

    with uow.write(app_of(ctx).sessions) as s:
        org = auth.create_org(s, name)
        click.echo(json.dumps({"id": org.id, "name": org.name}))


@admin_group.command("create-user")
@click.argument("organisation")
@click.argument("username")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--name", "display_name", help="Full name shown in the application.")
@click.pass_context
def create_user(
    ctx: click.Context, organisation: str, username: str, role: str, display_name: str | None
) -> None:
    """Create a user; the password is read from stdin or prompted."""
    from facetrace.service import auth, uow

    password = _password()
    with uow.write(app_of(ctx).sessions) as s:
        org = auth.get_org(s, organisation)
        user = auth.create_user(s, org, username, password, role, display_name)
        click.echo(json.dumps({"id": user.id, "username": user.username, "role": user.role}))


@admin_group.command("create-token")
@click.argument("username")
@click.option("--name", default="cli", show_default=True, help="What the token is for.")
@click.option("--days", default=90, show_default=True, type=click.IntRange(1, 3650))
@click.pass_context
def create_token(ctx: click.Context, username: str, name: str, days: int) -> None:
    """Issue an API token for a user; it is printed once and stored only hashed."""
    from sqlalchemy import select

    from facetrace.errors import NotFoundError
    from facetrace.service import auth, uow
    from facetrace.service.tables import User

    with uow.write(app_of(ctx).sessions) as s:
        user = s.execute(select(User).where(User.username == username)).scalar()
        if user is None:
            raise NotFoundError(f"user {username!r} does not exist")
        secret, row = auth.issue_token(s, user, name, days)
        click.echo(json.dumps({"id": row.id, "token": secret, "expires_at": str(row.expires_at)}))


@click.group("audit")
def audit_group() -> None:
    """The audit trail."""


@audit_group.command("verify")
@click.pass_context
def verify_cmd(ctx: click.Context) -> None:
    """Check the hash chain of the whole audit log; exit 8 naming the first bad entry."""
    from facetrace.service import audit, uow

    with uow.read(app_of(ctx).sessions) as s:
        verdict = audit.verify(s)
    if not verdict.ok:
        raise AuditChainError(
            f"audit log broken at entry {verdict.first_bad}: {verdict.reason} "
            f"({verdict.entries} entries before it are intact)"
        )
    click.echo(f"audit log intact: {verdict.entries} entries, every link verified")
