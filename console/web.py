"""Daphne as the console runs it: `python -m console.web` takes Daphne's own arguments
(`python -m daphne --help`), and its access log goes through logging (common.logs.AccessLog),
so an access line is one JSON object like every other line (LOG_FORMAT=text: one for a
person), on standard error with them, rather than Daphne's NCSA text on standard output.

Daphne's CLI builds its server from `server_class`, and the server writes the access log
through the `action_logger` it is given; this swaps that logger, nothing else. Where Daphne
would log no access (`-v 0`), neither does this; `--access-log FILE` logs through logging too.
"""

from __future__ import annotations

from typing import Any

from daphne.cli import CommandLineInterface
from daphne.server import Server

from common.logs import AccessLog


class LoggedServer(Server):
    def __init__(self, *args: Any, action_logger: Any = None, **kwargs: Any) -> None:
        access = AccessLog() if action_logger is not None else None
        super().__init__(*args, action_logger=access, **kwargs)


class Web(CommandLineInterface):
    server_class = LoggedServer


if __name__ == "__main__":
    Web.entrypoint()
