"""The platform half of the StarlingX simulator guest (see pytest_starlingx/sim/DESIGN.md).

Plain Python 3.11, standard library only. Every guest path goes through `stxsim.env.path`
so the whole platform runs on a developer's host under a temporary `STXSIM_ROOT`.
"""
