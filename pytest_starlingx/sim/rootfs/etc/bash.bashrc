# /etc/bash.bashrc: interactive bash on the simulator.
PS1='\u@\h:\w\$ '
