"""`python -m squeezestudy`: the command line."""

from squeezestudy.cli import main

raise SystemExit(main())
