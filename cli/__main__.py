"""`python -m cli ...` is `verity ...` (the launcher starts its children this way)."""

from cli import main

main()
