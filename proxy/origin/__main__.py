"""``python -m proxy.origin ...``: the same as ``tlsproxy origin ...``."""

import sys

if __name__ == "__main__":
    from proxy.cli import main

    sys.exit(main(["origin", *sys.argv[1:]]))
