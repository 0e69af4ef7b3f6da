"""``python -m course.origin ...``: the same as ``tlsproxy origin ...``."""

import sys

if __name__ == "__main__":
    from course.cli import main

    sys.exit(main(["origin", *sys.argv[1:]]))
