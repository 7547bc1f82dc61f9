"""One-off investigations behind a finding (`findings/`): scripts that answered a question once.

Unlike `bench.benchmarks`, which measure the harness itself and are rerun by make targets,
these are kept so that a finding's numbers can be reproduced, not run on a schedule.
"""
