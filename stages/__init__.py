"""The pipeline's stages (prepare, tokenize, train, evaluate), the modules they share and the commands.

Set here, before torch loads (`python -m stages.<name>` imports this package first): libgomp, torch's
OpenMP runtime on Linux, lets an idle thread spin 300,000 times before it sleeps, so two jobs on the
same cores (`dvc queue start -j 2`, a training beside the tests) spend their turns spinning. On 2
cores each of two default trainings ran at 5 % of its solo speed; spinning 3,000 times, at 51 %,
and alone about 10 % slower (bench/cpu_sharing.py, bench/README.md). A value the user set stands.
Thread counts are left to torch, OMP_NUM_THREADS or `accelerate launch`: they change the weights.
"""

import os

os.environ.setdefault("GOMP_SPINCOUNT", "3000")
