"""pytest-starlingx: real StarlingX labs for pytest, on libvirt/QEMU or VirtualBox."""

__version__ = "0.1.0"
