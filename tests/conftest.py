"""Suite-wide settings."""

import torch

# The suite's models are tiny: several threads per process only add synchronisation, and
# on a busy machine (another process using the cores) they make a step a hundred times
# slower. One thread keeps the suite fast and its timings stable.
torch.set_num_threads(1)
