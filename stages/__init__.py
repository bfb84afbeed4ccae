"""The pipeline's stages (prepare, tokenize, train, evaluate), the modules they share and the commands.

Set here, before torch loads (`python -m stages.<name>` imports this package first): libgomp, torch's
OpenMP runtime on Linux, lets an idle thread spin 300,000 times before it sleeps, so two jobs on the
same cores (`dvc queue start -j 2`, a training beside the tests) spend their turns spinning. On 2
cores each of two trainings ran at 15 % of its solo speed; spinning 1,000 times, at 53 %
(bench/cpu_sharing.py). A value the user set stands, and thread counts are left to torch,
OMP_NUM_THREADS or `accelerate launch`.
"""

import os

os.environ.setdefault("GOMP_SPINCOUNT", "1000")
