"""Ray job entrypoint of `bsm submit`: train the resolved config the job carries (bsm_job.json)."""

import sys

from raytune_bsm.ray_train import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
