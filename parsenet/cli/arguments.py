"""The argparse parser of the commands with plain arguments (``parsenet-data``,
``parsenet-convert``): a usage mistake is one ``error:`` line with exit status 2, as for the Hydra
commands."""

from __future__ import annotations

import argparse
from typing import NoReturn

from parsenet.cli.common import fail


class ArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` (and its subcommands' parsers) that reports a usage
    mistake as ``error: <message>`` alone, without the usage block and the ``prog:`` prefix."""

    def error(self, message: str) -> NoReturn:
        """Print ``error: message`` as one line on stderr and exit with status 2."""
        fail(" ".join(message.split()))
