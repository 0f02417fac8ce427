"""`python -m jaxderiv`: the same command line as `jaxderiv`."""

from jaxderiv.cli import main

raise SystemExit(main())
