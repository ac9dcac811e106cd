"""`python -m blockradar` runs the CLI."""

from blockradar.cli import main

main()
