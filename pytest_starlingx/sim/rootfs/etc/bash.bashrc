# /etc/bash.bashrc: interactive bash on the simulator.
PS1='\u@\h:\w\$ '
# The shell runs as uid 0 (named sysadmin in /etc/passwd), for which bash shows "#" for \$.
# Before each prompt, turn \$ into a plain "$" (also in prompts set later, e.g. by
# /etc/platform/openrc), so prompts look like the real sysadmin's.
PROMPT_COMMAND='PS1=${PS1//\\\$/\$}'
