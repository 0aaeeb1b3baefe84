"""`python -m tfrexp`: the same entrypoint as the `tfrexp` console script."""

from tfrexp.cli import main

main()
