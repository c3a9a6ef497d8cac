"""What a StarlingX serial console prints: login and password prompts, shell prompts, and the
messages that end a shell (starlingx.md 3.3)."""

from __future__ import annotations

import re

# Not anchored at the end: busybox ash writes ESC[6n after its prompt, and more output may
# follow in the same read.
LOGIN = r"(?<!Last )(?<!last )login: ?"
LOGIN_INCORRECT = r"Login incorrect"
PASSWORD = r"[Pp]assword: ?"
CURRENT_PASSWORD = r"Current password: ?|\(current\) UNIX password: ?"
NEW_PASSWORD = r"New password: ?"
RETYPE_PASSWORD = r"Retype new password: ?"
PASSWORD_REJECTED = (
    r"BAD PASSWORD:[^\r\n]*|Sorry, passwords do not match[^\r\n]*|"
    r"You must choose a longer password[^\r\n]*|Password unchanged[^\r\n]*|"
    r"passwd: (?![^\r\n]*success)[^\r\n]+|Authentication token manipulation error|"
    r"Have exhausted maximum number of retries[^\r\n]*"
)
SUDO_PASSWORD = r"\[sudo\] password for [^\r\n:]+: ?"
#: What bash prints when ``TMOUT`` ends a shell left idle. StarlingX exports TMOUT=900, readonly
#: from 11.0 (config-files ``base-files-config/source/custom.sh``), where no ``export TMOUT=0``
#: turns it off.
AUTO_LOGOUT = re.compile(re.escape("timed out waiting for input: auto-logout"))
#: A login prompt at the start of a line while a command runs: the node rebooted under it.
REBOOTED = r"(?m)^[\w.-]+ login: "
#: ``sysadmin@controller-0:~$ ``, ``[sysadmin@controller-0 ~(keystone_admin)]$ ``,
#: ``controller-0:~$ `` (CentOS era), and their root ``# `` forms.
PROMPT = r"(?:[\w.-]+@[\w.-]+:[^\r\n]*?|\[[\w.-]+@[\w.-]+ [^\r\n]*?\]|[\w.-]+:~)[$#] "
