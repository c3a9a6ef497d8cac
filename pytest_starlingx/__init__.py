"""pytest-starlingx: real StarlingX labs for pytest, on libvirt/QEMU or VirtualBox."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``stx_stage`` without importing the stage machinery when it is not used."""
    if name == "stx_stage":
        from pytest_starlingx.stages.custom import stx_stage

        return stx_stage
    raise AttributeError(f"module 'pytest_starlingx' has no attribute {name!r}")
