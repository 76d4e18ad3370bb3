#!/bin/sh
# The ssh that robot sync's sftp child runs (`sftp -S`, openssh-put.ts): killed as soon as that sftp dies, so a
# SIGKILLed worker (whose sftp dies by its own pdeathsig) leaves no ssh still sending writes to the part.
exec setpriv --pdeathsig SIGKILL -- ssh "$@"
