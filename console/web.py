"""Daphne as the console runs it: `python -m console.web` takes Daphne's own arguments
(`python -m daphne --help`), and its access log goes through logging (common.logs.AccessLog),
so an access line is one JSON object like every other line (LOG_FORMAT=text: one for a
person), on standard error with them, rather than Daphne's NCSA text on standard output.

Daphne's CLI builds its server from `server_class`, and the server writes the access log
through the `action_logger` it is given; this swaps that logger, nothing else. Where Daphne
would log no access (`-v 0`), neither does this; `--access-log FILE` logs through logging too.

Handed a socket (`--fd`, console.launcher.spawn_web: bound, not yet listening), it listens
only once the application is loaded, just before serving: a socket that shares its port
(SO_REUSEPORT) is given connections by the kernel from its listen() on, and a Daphne still
importing Django would keep them waiting for seconds while its peers are ready.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from daphne.cli import CommandLineInterface
from daphne.server import Server

from common.logs import AccessLog

BACKLOG = 1024


class LoggedServer(Server):
    def __init__(self, *args: Any, action_logger: Any = None, **kwargs: Any) -> None:
        access = AccessLog() if action_logger is not None else None
        super().__init__(*args, action_logger=access, **kwargs)

    def run(self) -> None:
        for endpoint in self.endpoints:
            if endpoint.startswith("fd:fileno="):
                fd = int(endpoint.removeprefix("fd:fileno=").split(":")[0])
                with socket.socket(fileno=os.dup(fd)) as handed:
                    handed.listen(BACKLOG)  # a no-op for a socket listening already
        super().run()


class Web(CommandLineInterface):
    server_class = LoggedServer


if __name__ == "__main__":
    Web.entrypoint()
