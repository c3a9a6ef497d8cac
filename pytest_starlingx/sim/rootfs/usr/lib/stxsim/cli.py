"""`system` and `fm`: the cgtsclient and fmclient stand-ins. They need the openrc variables
(both clients check them in this order, with these words); sysinv does the rest."""

from __future__ import annotations

import os
import sys

# The order and wording of cgtsclient's shell.py credential checks.
REQUIRED = (
    ("OS_USERNAME", "You must provide a username via either --os-username or via env[OS_USERNAME]"),
    ("OS_PASSWORD", "You must provide a password via either --os-password or via env[OS_PASSWORD]"),
    (
        "OS_PROJECT_NAME",
        "You must provide a project name via either --os-project-name or via env[OS_PROJECT_NAME]",
    ),
    (
        "OS_AUTH_URL",
        "You must provide an auth url via either --os-auth-url or via env[OS_AUTH_URL]",
    ),
    (
        "OS_REGION_NAME",
        "You must provide an region name via either --os-region-name or via env[OS_REGION_NAME]",
    ),
)


def main(argv: list[str], program: str = "system") -> int:
    """Run `<program> <argv>`; the exit status is the real client's (0, 1, or 2 for usage)."""
    for var, message in REQUIRED:
        if not os.environ.get(var):
            print(message, file=sys.stderr)
            return 1
    from stxsim import client, env

    # sysinv listens on the same (mgmt floating) address as keystone in OS_AUTH_URL.
    url = env.api_url(client.split_url(os.environ["OS_AUTH_URL"])[0])
    try:
        reply = client.post(
            url,
            f"/v1/{program}",
            {
                "argv": argv,
                "username": os.environ["OS_USERNAME"],
                "password": os.environ["OS_PASSWORD"],
            },
        )
    except (OSError, client.ApiError) as exc:
        print(f"Unable to establish connection to {url}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(reply["stdout"])
    sys.stderr.write(reply["stderr"])
    return int(reply["status"])
