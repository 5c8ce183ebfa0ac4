"""`python -m jobs.board`: the live signal board in the browser (the code lives in jobs.lake.board)."""

import sys

from jobs.lake.board.app import main

if __name__ == "__main__":
    sys.exit(main())
