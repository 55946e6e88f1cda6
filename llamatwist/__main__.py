"""``python -m llamatwist ARGS``: run the server like llama-server ARGS."""

import sys

from llamatwist import cli

if __name__ == "__main__":
    sys.exit(cli.main())
