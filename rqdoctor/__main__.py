"""``python -m rqdoctor``."""

from rqdoctor.cli import main

main()
