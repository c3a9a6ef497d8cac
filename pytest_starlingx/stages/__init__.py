"""Install and provisioning stages: small named units, and a pipeline per deployment option.

Stages drive consoles and the ``system`` CLI; they know nothing of the hypervisor. The lab layer
gives them a :class:`~pytest_starlingx.stages.base.Bringup` with consoles and power control.
"""
