"""`python -m dnntrick`: the command line. Signals are caught before its imports (typer's take
a few tenths of a second on a busy machine), so one that comes that early still ends in 130/143
with one line (training/signals.py)."""

import sys

from dnntrick.errors import Interrupted
from dnntrick.training.signals import process_start

if __name__ == "__main__":
    process_start()
    try:
        from dnntrick.cli import run
    except (KeyboardInterrupt, Interrupted) as err:
        print(f"error: {str(err) or 'interrupted (SIGINT)'}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 130))
    run()
