"""`python -m mtp_jax.synth`: writes a synthetic corpus (see `mtp_jax.synth.corpus`)."""
import sys

from mtp_jax.synth.corpus import main

sys.exit(main())
