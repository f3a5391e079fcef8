"""`python -m raytune_bsm.cli`: the same as `bsm`."""

from raytune_bsm.cli import main

main()
