"""``python -m wss_monai.tracking {serve,uri,runs,sync}``: see :mod:`wss_monai.tracking.cli`."""

import sys

from wss_monai.tracking.cli import main

if __name__ == "__main__":
    sys.exit(main())
