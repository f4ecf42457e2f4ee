"""``python -m pipelines.testkit.phantoms``: see :mod:`pipelines.testkit.phantoms.cli`."""
from pipelines.testkit.phantoms.cli import main

raise SystemExit(main())
