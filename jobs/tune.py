"""Ray job entrypoint of `bsm tune`: run the sweep the job carries (bsm_job.json: run config + "tune" settings)."""

import sys

from raytune_bsm.sweep_run import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
