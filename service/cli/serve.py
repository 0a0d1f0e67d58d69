"""``vmemlab serve``, ``worker`` and ``up``: the service's processes, one by one or together."""
from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import TextIO

from .common import EXIT_USAGE, UsageError
from .admin import _display_url, _settings, upgrade_database
from .submit import _submission, submit_document


def _require_api() -> None:
    from ..serving import api_available

    if not api_available():
        raise UsageError("the API is not installed: service/app.py (create_app) is missing")


def _check_port(host: str, port: int) -> None:
    """Refuse a port something else listens on, before starting anything."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                             "(is another server running? choose another --port)") from None


def command_serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ..serving import default_web_workers, gunicorn_options, load_app, prepare_metrics_dir, run_gunicorn

    _require_api()
    settings = _settings()
    prepare_metrics_dir(settings.data_dir)     # before the workers fork
    if not args.no_upgrade:           # --no-upgrade: the database is not touched before serving
        upgrade_database(out)
    _check_port(args.host, args.port)
    if not args.no_upgrade:
        _warn_without_tokens(out)
    from .. import db

    db.dispose_engines()        # no connection of this process may be inherited by the API's workers
    options = gunicorn_options(args.host, args.port, args.workers or default_web_workers(), args.threads,
                               args.access_log)
    options["loglevel"] = args.loglevel
    out.flush()
    run_gunicorn(options, load_app)
    return 0


def command_worker(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ..serving import celery_worker_argv, prepare_metrics_dir

    settings = _settings()
    if settings.embedded_broker:
        settings.ensure_dirs()
    prepare_metrics_dir(settings.data_dir)     # Celery's pool processes inherit it
    argv = celery_worker_argv(args.concurrency, args.loglevel, args.hostname, args.queues, args.quiet,
                              embedded=settings.embedded_broker)
    out.flush()
    err.flush()
    os.execv(argv[0], argv)     # Celery itself gets the signals from here on
    return 0                    # not reached (tests replace os.execv)


def _local_url(host: str, port: int) -> str:
    """The URL to reach a server listening on ``host`` from this machine."""
    if host in ("0.0.0.0", "", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def command_up(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ..client import Client
    from ..serving import Supervisor, celery_worker_argv, prepare_metrics_dir
    from ..web import docs_ui_renders

    _require_api()
    settings = _settings()
    documents = [(path, _submission(path, args.policy or [], args.param or [])) for path in args.submit or []]
    _check_port(args.host, args.port)
    upgrade_database(out, prefix="vmemlab up: ")
    settings.ensure_dirs()
    first_token = _first_admin_token(out)
    if first_token:           # now: should the start fail below, the token is not lost unseen
        out.write(f"vmemlab up: token   {first_token}\n"
                  "vmemlab up:         an admin token, made now because the database had none; it is shown only "
                  "once: keep it (vmemlab tokens create makes more)\n")
        out.flush()
    submit_token = (os.environ.get("VMEMLAB_TOKEN") or _temporary_token()) if documents else None

    prepare_metrics_dir(settings.data_dir)     # one folder for the API's and the worker's metrics
    env = dict(os.environ, VMEMLAB_DATA_DIR=str(settings.data_dir), PYTHONUNBUFFERED="1")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # said once here instead of Celery's screenful (`vmemlab worker` alone still shows it)
        out.write("vmemlab up: running as root; a worker would rather run as an unprivileged user\n")
        env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"),
                                                       "ignore:You're running the worker with superuser privileges"]))
    me = [sys.executable, "-m", "service.cli"]
    quiet = args.loglevel.lower() in ("warning", "error", "critical")
    supervisor = Supervisor(out, env=env)
    supervisor.install_signal_handlers()
    try:
        worker = supervisor.start("worker", celery_worker_argv(args.concurrency, args.loglevel, quiet=quiet,
                                                               embedded=settings.embedded_broker))
        api = supervisor.start("api", me + [
            "serve", "--host", args.host, "--port", str(args.port), "--no-upgrade", "--loglevel", args.loglevel,
            "--threads", str(args.threads)] + (["--workers", str(args.workers)] if args.workers else []))
        client = Client(_local_url(args.host, args.port), token=submit_token)
        try:
            client.wait_until_up(timeout=args.start_timeout, alive=lambda: supervisor.all_alive()
                                 and not supervisor.stopping)
        except Exception as exc:
            if not supervisor.stopping:
                supervisor.stop("the API did not start")
                for line in getattr(exc, "lines", [str(exc)]):
                    err.write(f"error: {line}\n")
            supervisor.wait()
            return 1
        broker = ("embedded (SQLite in " + str(settings.data_dir) + ")" if settings.embedded_broker
                  else _display_url(settings.broker_url))
        out.write(
            f"vmemlab up: web     {client.base_url}/  (history, create, compare, traces, plugins)\n"
            f"vmemlab up: API     {client.api_url('')}  (health {client.api_url('/health')}, pid {api.pid})\n"
            + (f"vmemlab up: docs    {client.api_url('/docs')}  (OpenAPI {client.api_url('/openapi.json')})\n"
               if docs_ui_renders(settings) else "")
            + f"vmemlab up: worker  Celery, broker {broker} (pid {worker.pid})\n"
            f"vmemlab up: submit  vmemlab submit SCENARIO.json --url {client.base_url} --token TOKEN --wait\n"
            + ("" if first_token else "vmemlab up: tokens  writes need a bearer token: vmemlab tokens list / create\n")
            + "vmemlab up: Ctrl-C stops both\n")
        out.flush()
        status = 0
        for path, document in documents:
            if supervisor.stopping:
                break
            out.write(f"\nvmemlab up: submitting {path}\n")
            out.flush()
            try:
                code = submit_document(client, document, out, err, wait=True, quiet=args.quiet,
                                       should_stop=lambda: supervisor.stopping or supervisor.check() is not None)
            except Exception as exc:
                from ..client import APIError

                if not isinstance(exc, APIError):
                    raise
                if supervisor.stopping:      # the API went away because we stop it: no news
                    break
                for line in exc.lines:
                    err.write(f"error: {line}\n")
                code = EXIT_USAGE if exc.client_error else 1
            status = status or code
        if not supervisor.stopping:
            out.write(f"\nvmemlab up: serving at {client.base_url} until stopped (Ctrl-C)\n")
            out.flush()
        code = supervisor.wait()
        return code or (status if args.exit_status else 0)
    finally:
        if submit_token and not os.environ.get("VMEMLAB_TOKEN"):
            _revoke_quietly(submit_token)
        for child in supervisor.children:      # never leave a child behind on an error here
            if child.alive():
                child.send(15)
                try:
                    child.process.wait(timeout=30)
                except Exception:
                    child.send(9)
        supervisor.restore_signal_handlers()


def _first_admin_token(out: TextIO) -> str | None:
    """Without any token the service would refuse every write: make an admin token then, to print
    (unless VMEMLAB_ADMIN_TOKEN gives one)."""
    from .. import auth, db

    if _has_usable_token(out, "vmemlab up: "):
        return None
    with db.session_scope() as session:
        return auth.create_token(session, "vmemlab up (first start)", auth.ADMIN)


def _has_usable_token(out: TextIO, prefix: str) -> bool:
    """VMEMLAB_ADMIN_TOKEN (stored now if new) or any unrevoked token in the database."""
    from .. import auth, db

    if _configured_token(out, prefix):
        return True
    with db.session_scope() as session:
        return auth.has_tokens(session)


def _configured_token(out: TextIO, prefix: str) -> bool:
    """Store VMEMLAB_ADMIN_TOKEN's hash if it is set; say so when it cannot be used. True if
    it is set and usable."""
    from sqlalchemy.exc import IntegrityError

    from .. import auth, db

    token = _settings().admin_token
    if token is None:
        return False
    try:
        with db.session_scope() as session:
            state = auth.ensure_configured_token(session, token)
    except IntegrityError:            # another process stored it at the same moment
        state = "present"
    if state == "revoked":
        out.write(f"{prefix}warning: VMEMLAB_ADMIN_TOKEN was revoked and stays revoked: set a new one\n")
    elif state == "not admin":
        out.write(f"{prefix}warning: VMEMLAB_ADMIN_TOKEN is a token of another role; set a new one\n")
    elif state == "added":
        out.write(f"{prefix}VMEMLAB_ADMIN_TOKEN stored as an admin token (earlier values revoked)\n")
    return state in ("added", "present")


def _warn_without_tokens(out: TextIO) -> None:
    if not _has_usable_token(out, ""):
        out.write("warning: no API tokens: every write will be refused (401). Create one with "
                  "`vmemlab tokens create --name NAME --role admin`, or set VMEMLAB_ADMIN_TOKEN\n")


def _temporary_token() -> str:
    """A write token for ``up --submit``'s own submissions, revoked when ``up`` ends."""
    from .. import auth, db

    with db.session_scope() as session:
        return auth.create_token(session, "vmemlab up --submit (temporary)", auth.WRITE)


def _revoke_quietly(token: str) -> None:
    from .. import auth, db

    try:
        with db.session_scope() as session:
            auth.revoke_token(session, token)
    except Exception:           # the database went away with the service: the token dies with it
        pass
