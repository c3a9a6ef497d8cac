"""The exception tree: every error the plugin raises says what failed and what to do."""


class StxError(Exception):
    """Base of every pytest-starlingx error."""


class LabConfigError(StxError):
    """A lab description (YAML, topology name, option) is invalid.

    ``problems`` holds one line per problem, each naming file, line and key path.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class HostError(StxError):
    """The host lacks something a lab needs (a package, a daemon, a permission)."""


class BackendError(StxError):
    """A hypervisor operation failed; the message names the object and a hint."""


class ConsoleError(StxError):
    """A serial console timed out, closed, or showed something unexpected."""


class StageError(StxError):
    """An install or provisioning stage failed on a node."""


class LeakError(StxError):
    """Teardown could not remove some lab resources; the message lists them."""
